"""What `locker-console status` shows, and whether it is whole.

Two sources: the database the ingest fills (the natural one: every locker and cell it stored, read
in one query each, whatever the fleet's size), and the broker's retained messages (`--live`, or
without a database), which a client can only collect for a bounded time. Either way a locker's
online status declares its cell ids, so the expected cells are known: a listing that lacks some
says so, with the ids, instead of being silently incomplete. Pure: rows and payloads in, a
`FleetStatus` out.
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
        return {"source": self.source, "complete": self.complete, "problems": self.problems,
                "lockers": [e.to_dict() for e in sorted(self.lockers, key=lambda e: e.id)]}


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

