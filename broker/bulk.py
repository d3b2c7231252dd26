"""Locker accounts in bulk: thousands checked, hashed and stored as one batch, all or nothing.

One `add-locker` per account costs a process start and a registry rewrite each (about 6 a
second). Here every id is checked against the registry and the rest of the batch before any
password is made; the `$7$` hashes (the same PBKDF2-SHA512 parameters as one by one) are computed
over the CPU cores in chunks; the caller stores the registry once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from broker.passwords import hash_password, new_password
from broker.registry import Registry, RegistryError

#: Passwords hashed per task; also how often progress is reported.
CHUNK = 1000
#: Largest batch one run makes (the registry is one JSON file rewritten whole).
MAX_BATCH = 1_000_000


class BatchError(RegistryError):
    """One id of the batch is refused; str() names its line, and nothing was written."""


@dataclass(frozen=True)
class LockerId:
    """An id of the batch and where it came from (the line of the file, or its position)."""

    line: int
    locker_id: str


def ids_from_count(prefix: str, count: int, start: int = 1, digits: int = 0) -> list[LockerId]:
    """`prefix` followed by start .. start+count-1, zero-padded to `digits` when given."""
    if not 1 <= count <= MAX_BATCH:
        raise BatchError(f"--count must be between 1 and {MAX_BATCH}")
    if start < 0 or digits < 0:
        raise BatchError("--start and --digits must not be negative")
    return [LockerId(i + 1, f"{prefix}{start + i:0{digits}d}") for i in range(count)]


def ids_from_lines(lines: Iterable[str]) -> list[LockerId]:
    """One id per line; surrounding spaces, blank lines and `#` comments are skipped."""
    ids = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if text and not text.startswith("#"):
            ids.append(LockerId(number, text))
        if len(ids) > MAX_BATCH:
            raise BatchError(f"line {number}: more than {MAX_BATCH} ids in one batch")
    if not ids:
        raise BatchError("no locker ids given (one per line)")
    return ids


def check_batch(registry: Registry, ids: Sequence[LockerId], *, rotate: bool = False,
                source: str = "") -> None:
    """Raise BatchError naming the first refused line: a bad name, an id the batch repeats, or an
    account that exists (without `rotate`)."""
    where = f"{source} " if source else ""
    seen: dict[str, int] = {}
    for item in ids:
        first = seen.setdefault(item.locker_id, item.line)
        if first != item.line:
            raise BatchError(f"{where}line {item.line}: {item.locker_id!r} repeats line {first}; "
                             "nothing was written")
        try:
            registry.check_new(item.locker_id, "locker", rotate=rotate)
        except RegistryError as exc:
            raise BatchError(f"{where}line {item.line}: {exc}; nothing was written") from exc


def _hash_chunk(passwords: list[str]) -> list[str]:
    """Worker: the `$7$` hashes of one chunk (module level so a process pool can pickle it)."""
    return [hash_password(p) for p in passwords]


def usable_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def hash_all(passwords: Sequence[str], *, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The hashes of `passwords`, in order, over `workers` processes (default: every core);
    `progress(done, total)` after each chunk. A batch of one chunk stays in this process."""
    chunks = [list(passwords[i:i + CHUNK]) for i in range(0, len(passwords), CHUNK)]
    workers = min(workers or usable_cores(), len(chunks))
    results: list[list[str]] = [[] for _ in chunks]
    done = 0
    if workers <= 1:
        for i, chunk in enumerate(chunks):
            results[i] = _hash_chunk(chunk)
            done += len(chunk)
            if progress:
                progress(done, len(passwords))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_hash_chunk, chunk): i for i, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                done += len(results[futures[future]])
                if progress:
                    progress(done, len(passwords))
    return [h for chunk in results for h in chunk]


def add_lockers(registry: Registry, ids: Sequence[LockerId], *, rotate: bool = False,
                source: str = "", workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[tuple[str, str]]:
    """Check the whole batch, then add every locker to `registry` (in memory: the caller saves
    it once); the new `(locker_id, password)` pairs, in the batch's order."""
    check_batch(registry, ids, rotate=rotate, source=source)
    passwords = [new_password() for _ in ids]
    hashes = hash_all(passwords, workers=workers, progress=progress)
    for item, pw_hash in zip(ids, hashes, strict=True):
        registry.put(item.locker_id, "locker", pw_hash, registry.accounts.get(item.locker_id))
    return [(item.locker_id, pw) for item, pw in zip(ids, passwords, strict=True)]
