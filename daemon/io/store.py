"""The locker's durable store: cell machine state, event sequence, event outbox, replay cache,
payment records, notifications relayed through the console until it confirms them.

tinydb keeps the documents (one per cell, per event, per remote command) in memory and in a JSON
image on disk. A commit does not rewrite that image: it appends the documents it changed to a
journal beside it, as one line, and fsyncs it, so its cost follows the size of the change, not
of the store. State, the events announcing it and the replay-cache entries of one commit are one
line: they land together or not at all. Each line carries its checksum (daemon/io/store_lines.py):
a torn last line is cut at start (a commit that never finished), a damaged line anywhere else
stops the start (`StoreCorrupt`, naming the file and line) for an operator to decide with
`lockerd store check` / `lockerd store repair`. When the journal grows past a limit (256 KB, or
the image's own size if larger, so rewriting the image costs at most as much again as the
journal lines did) the image is rewritten atomically (temp file, fsync, rename, fsync dir) and
the journal emptied; replaying a journal over a newer image is harmless, since every line sets
whole documents.

Used one-time codes (their keyed hashes, daemon/parcels/codes.py) are documents of their own in
`used_codes`, one per code, added in the commit of the step that used the code and dropped when
the code book forgets it: a step writes the codes it used, never the whole list.

The event outbox is bounded (`outbox_max`): a commit that would leave more events than that
drops the oldest in the same journal line, down to nine tenths of the bound (so an outbox at its
bound drops a tenth at a time, not one event per commit); `take_dropped` tells the daemon which
seqs went, for its journal line (the fleet link says `events/gone` for them when the console
asks). Nothing else ever drops an event the console has not acknowledged.

The disk comes first: a commit reaches the journal before the documents in memory change, so a
write that fails (a full disk: ENOSPC, EDQUOT, EIO) raises `StoreWriteFailed` and leaves the
store exactly as it was, with no half line left in the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage
from tinydb.table import Table

from daemon.io.atomic_file import write_atomically
from daemon.io.store_lines import Change, encode_line, scan_journal

STORE_FILE = "lockerd.json"
JOURNAL_FILE = "lockerd.journal"
#: Journal size after which the image is rewritten and the journal emptied (or the image's
#: size, when larger: a big image is not rewritten for a few small lines).
COMPACT_AFTER_BYTES = 256 * 1024



class StoreCorrupt(Exception):
    """The store image or journal is damaged; the daemon must not start from a guess."""


class StoreWriteFailed(OSError):
    """A commit could not be made durable (disk full, quota, I/O error); nothing changed."""


class JournaledJSONStorage(Storage):
    """tinydb storage: a JSON image replaced atomically, plus an append-only journal of changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal_path = self.path.with_name(JOURNAL_FILE)
        self.journal_bytes = 0
        #: The image's size when last read or written.
        self.image_bytes = 0
        #: What reading found and put right (a torn last line cut), for the daemon's log.
        self.warnings: list[str] = []
        #: A failed append may have left part of its line: cut it before the next one.
        self._tail_dirty = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        self.image_bytes = len(raw)
        data: dict[str, dict[str, Any]] = json.loads(raw) if raw.strip() else {}
        replayed = self._replay(data)
        return data if (data or replayed) else None

    def _replay(self, data: dict[str, dict[str, Any]]) -> int:
        """Apply the journal's whole lines; cut off a torn last line so later appends stay
        readable; refuse (StoreCorrupt) a damaged line that whole lines follow."""
        try:
            journal = self.journal_path.read_bytes()
        except FileNotFoundError:
            return 0
        scan = scan_journal(journal)
        if scan.damaged:
            number, why = scan.damaged[0]
            more = f" (and {len(scan.damaged) - 1} more)" if len(scan.damaged) > 1 else ""
            raise StoreCorrupt(
                f"{self.journal_path}: line {number} is damaged ({why}){more}; "
                "`lockerd store check` reports, `lockerd store repair` keeps a copy and drops it"
            )
        for _, changes in scan.commits:
            apply_changes(data, changes)
        if scan.torn is not None:
            number, why = scan.torn
            self.warnings.append(
                f"{self.journal_path}: torn last line {number} cut ({why}): "
                "a commit a crash or power loss interrupted"
            )
            with open(self.journal_path, "r+b") as f:
                f.truncate(scan.good_bytes)
                os.fsync(f.fileno())
        self.journal_bytes = scan.good_bytes
        return len(scan.commits)

    def append(self, changes: list[Change]) -> None:
        """One durable journal line: the commit point of a transition.

        On failure the journal is cut back to its last whole line (a full disk frees the space
        of the part written) and StoreWriteFailed is raised: the commit did not happen.
        """
        line = encode_line(changes)
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise StoreWriteFailed(exc.errno, f"{self.journal_path}: {exc.strerror}") from exc
        try:
            if self._tail_dirty:
                os.ftruncate(fd, self.journal_bytes)
                self._tail_dirty = False
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if self.journal_bytes == 0:
                _fsync_dir(self.journal_path.parent)  # the journal file itself must survive
        except OSError as exc:
            self._tail_dirty = True
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.journal_bytes)
                os.fsync(fd)
                self._tail_dirty = False
            raise StoreWriteFailed(exc.errno, f"{self.journal_path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        self.journal_bytes += len(line)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Compaction: the whole image, atomically, then an empty journal."""
        image = json.dumps(data, separators=(",", ":")).encode()
        write_atomically(self.path, image)
        self.image_bytes = len(image)
        if self.journal_bytes or self.journal_path.exists():
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.journal_bytes = 0

    def close(self) -> None:
        pass


def apply_changes(data: dict[str, dict[str, Any]], changes: list[Change]) -> None:
    """Set (or remove) whole documents of a tinydb image: what a journal line means."""
    for table, doc_id, doc in changes:
        docs = data.setdefault(table, {})
        if doc is None:
            docs.pop(str(doc_id), None)
        else:
            docs[str(doc_id)] = doc


def _shifted(doc: Mapping[str, Any], jump_ms: int, keys: tuple[str, ...]) -> dict:
    out = dict(doc)
    for key in keys:
        if isinstance(out.get(key), int):
            out[key] += jump_ms
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _MemoryMiddleware(CachingMiddleware):
    """Keeps tinydb's documents in memory; the store decides when and how they reach the disk."""

    WRITE_CACHE_SIZE = 1 << 62

    def write_image(self) -> None:
        if self.cache is not None:
            self.storage.write(self.cache)
        self._cache_modified_count = 0


#: Meta keys kept in a document of their own: the fleet's configuration body (a parcel
#: locker's, with 10,000 recipients, is megabytes) and the parcel business's state. A commit
#: then writes only what changed, not them with every event's `last_seq`.
OWN_META_DOCS: dict[str, int] = {"fleet_config": 2, "parcels": 3}
_OWN_META_KEYS = {doc_id: key for key, doc_id in OWN_META_DOCS.items()}


def seq_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending seqs as runs of consecutive ones, `(from_seq, to_seq)` each."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and runs[-1][1] + 1 == seq:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class LockerStore:
    """State, numbered events and the remote-command replay cache, committed together."""

    def __init__(self, data_dir: str | Path, outbox_max: int | None = None) -> None:
        """`outbox_max`: events kept in the outbox at most (None: no bound)."""
        self.outbox_max = outbox_max
        #: Seqs the bound dropped, not yet taken by `take_dropped`.
        self._dropped: list[int] = []
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / STORE_FILE
        self._clean_temp_files()
        try:
            # Kept typed: tinydb's own `TinyDB.storage` is the base `Storage`.
            self._memory = _MemoryMiddleware(JournaledJSONStorage)
            self._db = TinyDB(self.path, storage=self._memory)
            self._state = self._db.table("state")
            self._cells = self._db.table("cells")
            self._meta = self._db.table("meta")
            self._outbox = self._db.table("outbox")
            self._commands = self._db.table("commands")
            self._payments = self._db.table("payments")
            self._relayed = self._db.table("relayed")
            self._used = self._db.table("used_codes")
            #: Used code hashes -> their document ids (oldest first, as ids grow), and back.
            self._used_ids: dict[str, int] = {
                doc["key"]: doc.doc_id for doc in sorted(self._used.all(), key=lambda d: d.doc_id)}
            self._used_keys = {i: k for k, i in self._used_ids.items()}
            self._used_next = max(self._used_ids.values(), default=0)
            self._meta_doc = dict(self._meta.get(doc_id=1) or {})
            for key, doc_id in OWN_META_DOCS.items():
                own = self._meta.get(doc_id=doc_id)
                if own is not None and "value" in own:
                    self._meta_doc[key] = own["value"]
            self._cell_docs = {doc.doc_id: dict(doc) for doc in self._cells.all()}
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise StoreCorrupt(f"{self.path}: store file is damaged: {exc}") from None
        journaled = self._memory.storage
        assert isinstance(journaled, JournaledJSONStorage)  # the middleware built it above
        self._storage = journaled

    @property
    def warnings(self) -> list[str]:
        """What opening the store put right (a torn last journal line cut), to be logged."""
        return list(self._storage.warnings)

    def _clean_temp_files(self) -> None:
        """A crash between writing a temp file and renaming it leaves it behind; it is garbage."""
        for leftover in self.data_dir.glob(f".{STORE_FILE}.*.tmp"):
            leftover.unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------
    def machine_state(self) -> dict | None:
        doc = self._state.get(doc_id=1)
        if not doc:
            return None
        state = dict(doc["machine"])
        if self._cell_docs:
            state["cells"] = {str(cid): dict(cell) for cid, cell in self._cell_docs.items()}
        return state

    @property
    def last_seq(self) -> int:
        return int(self._meta_doc.get("last_seq", 0))

    def outbox(self, after_seq: int = 0, limit: int | None = None) -> list[dict]:
        rows = sorted(
            (dict(r) for r in self._outbox.search(Query().seq > after_seq)), key=lambda r: r["seq"]
        )
        return rows[:limit] if limit is not None else rows

    def outbox_summary(self) -> dict:
        """How many events wait for the console's ack, and the `at` of the oldest (the status
        reports it, so the console sees a backlog)."""
        rows = self._outbox.all()
        oldest = min(rows, key=lambda r: r["seq"]) if rows else None
        return {"depth": len(rows), "oldest_at": oldest["at"] if oldest else None}

    def meta(self, key: str, default: Any = None) -> Any:
        return self._meta_doc.get(key, default)

    def command_record(self, cmd_id: str) -> dict | None:
        """What the locker did with a remote command: its replay-cache entry."""
        found = self._commands.get(Query().cmd_id == cmd_id)
        return dict(found) if found else None

    def payments(self) -> list[dict]:
        """Every payment record (the money side of rentals), oldest first."""
        return [dict(r) for r in self._payments.all()]

    def payment(self, op_id: str) -> dict | None:
        found = self._payments.get(Query().op_id == op_id)
        return dict(found) if found else None

    def prune_payments(self, before_ms: int) -> int:
        """Forget settled payment records older than `before_ms` (their events went out)."""
        return self._remove(
            self._payments,
            (Query().settled == True) & (Query().updated_at < before_ms),  # noqa: E712
        )

    def undelivered_results(self) -> list[dict]:
        """Command results the console has not confirmed (`delivered`), oldest command first."""
        out: list[dict] = []
        records = sorted(self._commands.all(), key=lambda r: r.get("received_at", 0))
        for record in records:
            confirmed = set(record.get("delivered", ()))
            out += [dict(r) for r in record.get("results", ()) if r["status"] not in confirmed]
        return out

    def relayed(self) -> list[dict]:
        """Notifications handed to the console and not yet confirmed, oldest first: documents
        {id, message, at, keep_until}. `message` holds the text (codes, PINs): never logged."""
        return sorted((dict(r) for r in self._relayed.all()), key=lambda r: r.get("at", 0))

    def used_codes(self) -> list[str]:
        """Keyed hashes of used one-time codes, oldest first (never a code itself)."""
        return list(self._used_ids)

    def commands_in_flight(self) -> list[dict]:
        """Remote commands accepted but not yet settled (done/failed), e.g. across a restart."""
        return [
            dict(r)
            for r in self._commands.all()
            if r.get("results") and r["results"][-1]["status"] == "accepted"
        ]

    # --- writing -------------------------------------------------------------------------
    def commit(
        self,
        machine_state: Mapping | None = None,
        events: Iterable[tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], int]] = (),
        now_ms: int = 0,
        meta: Mapping[str, Any] | None = None,
        commands: Iterable[Mapping[str, Any]] = (),
        payments: Iterable[Mapping[str, Any]] = (),
        relayed: Iterable[Mapping[str, Any]] = (),
        used_codes: Iterable[str] = (),
        forgotten_codes: Iterable[str] = (),
    ) -> list[dict]:
        """Persist the new machine state, events, replay-cache entries, payment records,
        relayed notifications and used codes (added; `forgotten_codes` dropped) as one journal
        line; returns the numbered events (seq grows by one per event, across restarts). An
        event may carry its own time as a third item (one that waited for the disk); the
        others are stamped `now_ms`. Raises StoreWriteFailed with nothing changed."""
        changes: list[Change] = []
        numbered: list[dict] = []
        seq = self.last_seq
        for type_, data, *at in events:
            seq += 1
            event = {
                "seq": seq,
                "id": str(uuid.uuid4()),
                "at": at[0] if at else now_ms,
                "type": type_,
                "data": dict(data),
            }
            numbered.append(event)
            changes.append((self._outbox.name, seq, event))
        dropped = self._over_bound([e["seq"] for e in numbered])
        if dropped:
            gone = set(dropped)
            changes = [c for c in changes if c[1] not in gone]  # only events so far
            changes.extend((self._outbox.name, s, None) for s in dropped if s <= self.last_seq)
        if machine_state is not None:
            changes.extend(self._machine_changes(machine_state))
        new_ids: dict[str, int] = {}
        changes.extend(self._upsert(self._commands, "cmd_id", r, new_ids) for r in commands)
        changes.extend(self._upsert(self._payments, "op_id", r, new_ids) for r in payments)
        changes.extend(self._upsert(self._relayed, "id", r, new_ids) for r in relayed)
        changes.extend(self._used_changes(used_codes, forgotten_codes, now_ms))
        changes.extend(self._meta_changes(seq, meta or {}))
        self._write(changes)
        self._dropped.extend(dropped)
        return numbered

    def _over_bound(self, new: list[int]) -> list[int]:
        """The oldest seqs to drop so that the outbox, with `new` added, keeps to
        `outbox_max` (down to nine tenths of it, when over), ascending."""
        bound = self.outbox_max
        if bound is None or not new or len(self._outbox) + len(new) <= bound:
            return []
        held = sorted(int(k) for k in (self._memory.read() or {}).get(self._outbox.name, {}))
        every = [*held, *new]
        return every[: len(every) - (bound - bound // 10)]

    def take_dropped(self) -> list[tuple[int, int]]:
        """The runs of seqs the outbox bound dropped since the last call, `(from, to)` each."""
        dropped, self._dropped = self._dropped, []
        return seq_runs(dropped)

    def _used_changes(self, used: Iterable[str], forgotten: Iterable[str],
                      now_ms: int) -> list[Change]:
        changes: list[Change] = []
        next_id = self._used_next
        for key in used:
            if key not in self._used_ids:
                next_id += 1
                changes.append((self._used.name, next_id, {"key": key, "at": now_ms}))
        changes.extend((self._used.name, self._used_ids[key], None) for key in forgotten
                       if key in self._used_ids)
        return changes

    def _meta_changes(self, seq: int, meta: Mapping[str, Any]) -> list[Change]:
        """The meta documents that change: the small keys (last_seq moves with every event) in
        document 1, each big key of OWN_META_DOCS in its own, written only when given anew.
        A store from before (big keys in document 1) moves them out at its first commit."""
        changes: list[Change] = []
        legacy = any(k in (self._meta.get(doc_id=1) or {}) for k in OWN_META_DOCS)
        small_old = {k: v for k, v in self._meta_doc.items() if k not in OWN_META_DOCS}
        small_new = {**small_old, "last_seq": seq,
                     **{k: v for k, v in meta.items() if k not in OWN_META_DOCS}}
        if small_new != small_old or legacy:
            changes.append((self._meta.name, 1, small_new))
        for key, doc_id in OWN_META_DOCS.items():
            if key in meta and meta[key] != self._meta_doc.get(key):
                changes.append((self._meta.name, doc_id, {"value": meta[key]}))
            elif legacy and key in self._meta_doc:
                changes.append((self._meta.name, doc_id, {"value": self._meta_doc[key]}))
        return changes

    def _machine_changes(self, machine_state: Mapping) -> list[Change]:
        """Only the cells whose stored form changed are written (a few of hundreds, usually)."""
        changes: list[Change] = []
        stored_cells = machine_state.get("cells")
        per_cell = isinstance(stored_cells, Mapping)
        cells: Mapping = stored_cells if isinstance(stored_cells, Mapping) else {}
        rest = {k: v for k, v in machine_state.items() if not (per_cell and k == "cells")}
        current = self._state.get(doc_id=1)
        if current is None or current.get("machine") != rest:
            changes.append((self._state.name, 1, {"machine": rest}))
        for key, cell in cells.items():
            cid = int(key)
            if self._cell_docs.get(cid) != cell:
                changes.append((self._cells.name, cid, cell))
        return changes

    @staticmethod
    def _upsert(
        table: Table, key: str, record: Mapping[str, Any], new_ids: dict[str, int]
    ) -> Change:
        """Replace the document whose `key` field matches, or add it under a fresh id."""
        found = table.get(Query()[key] == record[key])
        if found is not None:
            return (table.name, found.doc_id, dict(record))
        if table.name not in new_ids:
            new_ids[table.name] = max((doc.doc_id for doc in table.all()), default=0)
        new_ids[table.name] += 1
        return (table.name, new_ids[table.name], dict(record))

    def _remove(self, table: Table, cond: Any) -> int:
        doomed = [doc.doc_id for doc in table.search(cond)]
        self._write([(table.name, doc_id, None) for doc_id in doomed])
        return len(doomed)

    def _write(self, changes: list[Change]) -> None:
        """The journal first; only a durable line changes the documents in memory."""
        if not changes:
            return
        self._storage.append(changes)
        self._remember(changes)
        if self._storage.journal_bytes > max(COMPACT_AFTER_BYTES, self._storage.image_bytes):
            with contextlib.suppress(OSError):  # the journal holds it all; compact next time
                self.compact()

    def _remember(self, changes: list[Change]) -> None:
        """Set the committed documents in memory (tinydb's tables and the store's caches).

        Straight into tinydb's in-memory image, as the journal's replay does: a table's own
        insert or remove copies the whole table, and one commit may add thousands of documents
        (an older store's used codes moving out)."""
        data = self._memory.read()
        if data is None:
            data = self._memory.cache = {}
        apply_changes(data, changes)
        for name in {name for name, _, _ in changes}:
            self._db.table(name).clear_cache()
        for name, doc_id, doc in changes:
            if name == self._cells.name:
                if doc is None:
                    self._cell_docs.pop(doc_id, None)
                else:
                    self._cell_docs[doc_id] = doc
            elif name == self._used.name:
                if doc is None:
                    self._used_ids.pop(self._used_keys.pop(doc_id, ""), None)
                else:
                    self._used_ids[doc["key"]] = doc_id
                    self._used_keys[doc_id] = doc["key"]
                    self._used_next = max(self._used_next, doc_id)
            elif name == self._meta.name and doc_id == 1:
                own = {k: self._meta_doc[k] for k in OWN_META_DOCS if k in self._meta_doc}
                self._meta_doc = {**(doc or {}), **own}
            elif name == self._meta.name and doc_id in _OWN_META_KEYS:
                if doc is None:
                    self._meta_doc.pop(_OWN_META_KEYS[doc_id], None)
                else:
                    self._meta_doc[_OWN_META_KEYS[doc_id]] = doc["value"]

    def compact(self) -> None:
        """Rewrite the image with everything and empty the journal."""
        self._memory.write_image()

    def commands_shifted(self, jump_ms: int) -> list[dict]:
        """Every replay-cache entry with its times moved by a wall-clock step, to be committed
        (not yet written): an entry must live as long in real time whatever the clock did."""
        return [_shifted(r, jump_ms, ("keep_until", "received_at")) for r in self._commands.all()]

    def relayed_shifted(self, jump_ms: int) -> list[dict]:
        """Relayed notifications with their times moved by a wall-clock step, to be committed."""
        return [_shifted(r, jump_ms, ("keep_until", "at")) for r in self._relayed.all()]

    def prune_commands(self, now_ms: int, deliver_for_ms: int = 24 * 3600 * 1000) -> int:
        """Forget replay-cache entries past their keep_until (after the command expired) whose
        results the console confirmed, or that it left unconfirmed for `deliver_for_ms`; and
        relayed notifications unconfirmed past their keep_until."""

        def done(record: Mapping[str, Any]) -> bool:
            if record.get("keep_until", 0) >= now_ms:
                return False
            confirmed = set(record.get("delivered", ()))
            if all(r["status"] in confirmed for r in record.get("results", ())):
                return True
            return record.get("received_at", 0) + deliver_for_ms < now_ms

        gone = [doc.doc_id for doc in self._commands.all() if done(doc)]
        expired = [doc.doc_id for doc in self._relayed.all() if doc.get("keep_until", 0) < now_ms]
        self._write([*((self._commands.name, i, None) for i in gone),
                     *((self._relayed.name, i, None) for i in expired)])
        return len(gone)

    def relayed_delivered(self, ids: Iterable[str]) -> int:
        """Drop notifications the console confirmed; returns how many were dropped."""
        wanted = set(ids)
        return self._remove(self._relayed, Query().id.one_of(list(wanted)))

    def acknowledge(self, up_to_seq: int) -> int:
        """Drop events the console has stored; returns how many were dropped."""
        return self._remove(self._outbox, Query().seq <= up_to_seq)

    def close(self) -> None:
        """Compact on the way out; on a full disk the journal already holds everything."""
        with contextlib.suppress(OSError):
            self.compact()
        self._db.close()
