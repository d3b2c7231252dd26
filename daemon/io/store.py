"""The locker's durable store: cell machine state, event sequence and the event outbox.

tinydb keeps the documents; a storage that replaces the file atomically makes every commit
all-or-nothing, and a write-back cache turns the several table updates of one transition into
exactly one durable write, so state and the events announcing it land together or not at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage
from tinydb.table import Document

from daemon.io.atomic_file import write_atomically

STORE_FILE = "lockerd.json"


class AtomicJSONStorage(Storage):
    """tinydb storage whose every write is an atomic replace of the whole file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        return json.loads(raw)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        write_atomically(self.path, json.dumps(data, separators=(",", ":")).encode())

    def close(self) -> None:
        pass


class _CommitMiddleware(CachingMiddleware):
    """Write-back cache that writes only when told to (one durable write per commit)."""

    WRITE_CACHE_SIZE = 1 << 62


class StoreCorrupt(Exception):
    """The store file exists but cannot be read; the daemon must not start from a guess."""


class LockerStore:
    """State snapshot, numbered events and the remote-command replay cache, committed together."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / STORE_FILE
        self._clean_temp_files()
        try:
            self._db = TinyDB(self.path, storage=_CommitMiddleware(AtomicJSONStorage))
            self._state = self._db.table("state")
            self._meta = self._db.table("meta")
            self._outbox = self._db.table("outbox")
            self._commands = self._db.table("commands")
            self._meta_doc = dict(self._meta.get(doc_id=1) or {})
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise StoreCorrupt(f"{self.path}: store file is damaged: {exc}") from None

    def _clean_temp_files(self) -> None:
        """A crash between writing a temp file and renaming it leaves it behind; it is garbage."""
        for leftover in self.data_dir.glob(f".{STORE_FILE}.*.tmp"):
            leftover.unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------
    def machine_state(self) -> dict | None:
        doc = self._state.get(doc_id=1)
        return dict(doc["machine"]) if doc else None

    @property
    def last_seq(self) -> int:
        return int(self._meta_doc.get("last_seq", 0))

    def outbox(self, after_seq: int = 0, limit: int | None = None) -> list[dict]:
        rows = sorted(
            (dict(r) for r in self._outbox.search(Query().seq > after_seq)), key=lambda r: r["seq"]
        )
        return rows[:limit] if limit is not None else rows

    def meta(self, key: str, default: Any = None) -> Any:
        return self._meta_doc.get(key, default)

    def command_record(self, cmd_id: str) -> dict | None:
        """What the locker did with a remote command: its replay-cache entry."""
        found = self._commands.get(Query().cmd_id == cmd_id)
        return dict(found) if found else None

    # --- writing -------------------------------------------------------------------------
    def commit(
        self,
        machine_state: Mapping | None = None,
        events: Iterable[tuple[str, Mapping[str, Any]]] = (),
        now_ms: int = 0,
        meta: Mapping[str, Any] | None = None,
        commands: Iterable[Mapping[str, Any]] = (),
    ) -> list[dict]:
        """Persist the new machine state and append events, atomically; returns the numbered
        events (seq grows by one per event, across restarts)."""
        numbered: list[dict] = []
        seq = self.last_seq
        for type_, data in events:
            seq += 1
            numbered.append(
                {
                    "seq": seq,
                    "id": str(uuid.uuid4()),
                    "at": now_ms,
                    "type": type_,
                    "data": dict(data),
                }
            )
        if machine_state is not None:
            self._state.upsert(Document({"machine": machine_state}, doc_id=1))
        if numbered:
            self._outbox.insert_multiple(numbered)
        for record in commands:
            self._commands.upsert(dict(record), Query().cmd_id == record["cmd_id"])
        new_meta = {**self._meta_doc, "last_seq": seq, **(meta or {})}
        if new_meta != self._meta_doc:
            self._meta.upsert(Document(new_meta, doc_id=1))
            self._meta_doc = new_meta
        self._db.storage.flush()
        return numbered

    def commands_in_flight(self) -> list[dict]:
        """Remote commands accepted but not yet settled (done/failed), e.g. across a restart."""
        return [
            dict(r)
            for r in self._commands.all()
            if r.get("results") and r["results"][-1]["status"] == "accepted"
        ]

    def prune_commands(self, now_ms: int) -> int:
        """Forget replay-cache entries past their keep_until (long after the command expired)."""
        removed = self._commands.remove(Query().keep_until < now_ms)
        if removed:
            self._db.storage.flush()
        return len(removed)

    def acknowledge(self, up_to_seq: int) -> int:
        """Drop events the console has stored; returns how many were dropped."""
        removed = self._outbox.remove(Query().seq <= up_to_seq)
        if removed:
            self._db.storage.flush()
        return len(removed)

    def close(self) -> None:
        self._db.storage.flush()
        self._db.close()
