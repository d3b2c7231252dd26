"""What `locker-console status` shows, and whether it is whole.

Two sources: the database the ingest fills (the natural one: every locker and cell it stored, read
in one query each, whatever the fleet's size), and the broker's retained messages (`--live`, or
without a database), which a client can only collect for a bounded time. Either way a locker's
online status declares its cell ids, so the expected cells are known: a listing that lacks some
says so, with the ids, instead of being silently incomplete. Pure: rows and payloads in, a
`FleetStatus` out.

At fleet scale (`from_page`) the database answers the counting (totals for the whole fleet, each
locker's cells stored and declared, its open alarms) and hands over one page of lockers; the
listing then says how fresh each locker's data is (`ago`), what its outbox holds, and how the
ingest replicas keep up (heartbeat age, inbox depth, lag).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from contract.messages import CellSnapshot, MalformedPayload, Status

Source = Literal["database", "broker"]
TopicKindLike = Literal["status", "cell"]


@dataclass
class LockerEntry:
    """One locker as listed: its last status, its cells, and the declared cells not there."""

    id: str
    online: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    declared_cells: list[int] | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing_cells(self) -> list[int]:
        """Declared cell ids with no snapshot (none known when the locker declares none)."""
        have = {c["cell"] for c in self.cells}
        return [c for c in self.declared_cells or () if c not in have]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "online": self.online, **self.details}
        if self.declared_cells is not None:
            out["declared_cells"] = self.declared_cells
        out["cells"] = sorted(self.cells, key=lambda c: c["cell"])
        out["missing_cells"] = self.missing_cells
        return out


@dataclass
class FleetStatus:
    """The listing; `complete` is False when it may lack something, `problems` says what."""

    source: Source
    lockers: list[LockerEntry]
    #: Why the listing may be incomplete, beyond missing declared cells (e.g. collection cut).
    cut_short: str | None = None
    skipped: list[str] = field(default_factory=list)
    #: From the database at fleet scale (`from_page`): the whole fleet's counts, the ingest
    #: replicas, the console's open alarms, and which page this is.
    totals: dict[str, int] | None = None
    ingest: list[dict[str, Any]] | None = None
    console_alarms: list[dict[str, Any]] | None = None
    page: dict[str, Any] | None = None

    @property
    def problems(self) -> list[str]:
        """One line per reason the listing may lack something."""
        verb = "stored" if self.source == "database" else "received"
        out = []
        for entry in self.lockers:
            missing = entry.missing_cells
            if missing:
                declared = len(entry.declared_cells or ())
                out.append(f"{entry.id}: {declared - len(missing)} of {declared} declared cells "
                           f"{verb} (missing {', '.join(map(str, missing))})")
        if self.cut_short:
            out.append(self.cut_short)
        return out

    @property
    def complete(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "complete": self.complete, "problems": self.problems,
               "lockers": [e.to_dict() for e in sorted(self.lockers, key=lambda e: e.id)]}
        for name in ("totals", "ingest", "console_alarms", "page"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @property
    def stale_replicas(self) -> list[str]:
        """Client ids of ingest replicas whose heartbeat is older than three intervals."""
        return [r["client_id"] for r in self.ingest or () if r["stale"]]


def ago(then: int | None, now: int) -> str:
    """How long ago `then` was, for a person: "12 s ago", "5 min ago", "3 h ago", "2 d ago"."""
    if then is None:
        return "never"
    s = (now - then) / 1000
    if s < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size * (2 if unit != "min" else 1):
            return f"{int(s // size)} {unit} ago"
    return f"{int(s)} s ago"


def stale_after_ms(beat_interval_ms: int) -> int:
    """A replica whose last heartbeat is older than this is stale (stopped, hung, cut off)."""
    return 3 * beat_interval_ms


def from_page(
    rows: Iterable[Any], cells: Iterable[Any], *, now: int, totals: dict[str, int],
    replicas: Iterable[Any] = (), console_alarms: Iterable[Any] = (),
    page: dict[str, Any] | None = None,
) -> FleetStatus:
    """From `queries.fleet_page` rows (with counts), the cells of those lockers, the fleet's
    totals, the `ingest_replicas` rows and the open `ingest_lag` alarms; `now` in epoch ms."""
    entries: dict[str, LockerEntry] = {}
    for r in rows:
        entries[r.id] = LockerEntry(
            id=r.id, online=r.online,
            details={
                "version": r.version, "boot_id": r.boot_id, "started_at": r.started_at,
                "boards": r.boards, "last_status_at": r.last_status_at,
                "config_version": r.config_version,
                "last_heard_at": r.last_heard_at, "last_event_at": r.last_event_at,
                "status_age_s": _age_s(r.last_status_at, now),
                "heard_age_s": _age_s(r.last_heard_at, now),
                "cells_known": r.cells_known, "cells_declared": r.cells_declared,
                "stored_seq": r.stored_seq, "acked_seq": r.acked_seq,
                "gap_since": r.gap_since, "alarms_open": r.alarms_open,
                "outbox": None if r.outbox_depth is None else {
                    "depth": r.outbox_depth, "oldest_at": r.outbox_oldest_at,
                    "oldest_age_s": _age_s(r.outbox_oldest_at, now)},
            },
            declared_cells=list(r.declared_cells) if isinstance(r.declared_cells, list) else None,
        )
    for cell in cells:
        entry = entries.get(cell.locker)
        if entry is not None:
            entry.cells.append({"cell": cell.cell, "state": cell.state, "door": cell.door,
                                "size": cell.size, "since": cell.since})
    ingest = []
    for rep in replicas:
        age = now - rep.last_beat_at
        ingest.append({
            "client_id": rep.client_id, "host": rep.host, "pid": rep.pid,
            "started_at": rep.started_at, "last_beat_at": rep.last_beat_at,
            "beat_age_s": round(age / 1000, 1),
            "stopped_at": rep.stopped_at,
            "stale": rep.stopped_at is None and age > stale_after_ms(rep.beat_interval_ms),
            "inbox_depth": rep.inbox_depth, "lag_p50_ms": rep.lag_p50_ms,
            "lag_max_ms": rep.lag_max_ms, "events_per_s": rep.events_per_s,
            "batches_per_s": rep.batches_per_s, "lagging_since": rep.lagging_since,
        })
    alarms = [{"kind": a.kind, "at": a.at, "data": a.data} for a in console_alarms]
    return FleetStatus("database", list(entries.values()), totals=totals, ingest=ingest,
                       console_alarms=alarms, page=page)


def _age_s(then: int | None, now: int) -> float | None:
    return None if then is None else round((now - then) / 1000, 1)


def from_rows(lockers: Iterable[Any], cells: Iterable[Any]) -> FleetStatus:
    """From the ingest's `lockers` and `cells` rows (fleet_console.db.models Locker and Cell)."""
    entries: dict[str, LockerEntry] = {}
    for row in lockers:
        entries[row.id] = LockerEntry(
            id=row.id, online=row.online,
            details={"version": row.version, "boot_id": row.boot_id,
                     "started_at": row.started_at, "boards": row.boards,
                     "last_status_at": row.last_status_at,
                     "config_version": row.config_version},
            declared_cells=list(row.declared_cells) if row.declared_cells is not None else None,
        )
    for cell in cells:
        entry = entries.setdefault(cell.locker, LockerEntry(id=cell.locker))
        entry.cells.append({"cell": cell.cell, "state": cell.state, "door": cell.door,
                            "size": cell.size, "since": cell.since})
    return FleetStatus("database", list(entries.values()))


def from_retained(
    messages: Sequence[tuple[str, TopicKindLike, bytes]], *, cut_short: str | None = None
) -> FleetStatus:
    """From retained (locker id, kind "status" or "cell", payload) triples."""
    entries: dict[str, LockerEntry] = {}
    skipped = []
    for locker, kind, payload in messages:
        entry = entries.setdefault(locker, LockerEntry(id=locker))
        try:
            if kind == "status":
                status = Status.from_payload(payload).to_dict()
                entry.online = status.pop("online")
                entry.declared_cells = status.pop("cells", None)
                entry.details.update(status)
            else:
                entry.cells.append(CellSnapshot.from_payload(payload).to_dict())
        except MalformedPayload as exc:
            skipped.append(f"skipped a malformed {kind} of {locker}: {exc}")
    return FleetStatus("broker", list(entries.values()), cut_short=cut_short, skipped=skipped)

