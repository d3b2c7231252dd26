"""One lockerd per locker: an exclusive lock on `data_dir/lockerd.lock`, held for its whole life.

A second daemon started with the same configuration would take the first one's MQTT client id,
rewrite its store and delete its control socket. It is refused here, before it touches the broker,
the store, a socket, the kiosk port or a board. The lock is `flock(2)`: the kernel releases it
when the holder dies, so a daemon killed with `kill -9` leaves no stale lock behind; the pid
written in the file only names the holder in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "lockerd.lock"


class AlreadyRunning(Exception):
    """Another process holds the locker's lock (a running lockerd, or a store repair)."""

    def __init__(self, locker_id: str, data_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"lockerd for {locker_id} is already running, {who}, data_dir {data_dir}")
        self.pid = pid


def _holder(fd: int) -> int | None:
    """The pid the holder wrote, if it did (it writes it right after taking the lock)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None


@contextlib.contextmanager
def instance_lock(data_dir: Path, locker_id: str) -> Iterator[Path]:
    """Hold the locker's lock while the block runs; raises AlreadyRunning at once if taken."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(locker_id, data_dir, _holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)
