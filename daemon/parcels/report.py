"""The administrator's cell report: free and occupied parcel cells by size, parcels waiting and
expired, returns waiting; and when the daily one is due. Pure: the cells, the books and the time
are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from daemon.fsm.allocation import Candidate
from daemon.fsm.lifecycle import BLOCKED, FREE
from daemon.fsm.spec import SIZES
from daemon.parcels.lifecycle import DEPOSITED, EXPIRED, ParcelBook
from daemon.parcels.returns import ReturnBook


@dataclass(frozen=True)
class CellReport:
    free: dict[str, int] = field(default_factory=dict)
    occupied: dict[str, int] = field(default_factory=dict)
    blocked: int = 0
    waiting: int = 0
    expired: int = 0
    returns: int = 0

    def params(self) -> dict[str, str | int]:
        """Placeholders of the `cell_report` text (daemon/parcels/texts.py)."""
        def by_size(counts: dict[str, int]) -> str:
            return " ".join(f"{s}:{counts.get(s, 0)}" for s in SIZES)
        return {"free": by_size(self.free), "occupied": by_size(self.occupied),
                "waiting": self.waiting, "expired": self.expired}


def cell_report(cells: Iterable[Candidate], parcels: ParcelBook,
                returns: ReturnBook | None = None) -> CellReport:
    """Counts over the parcel business's cells (other businesses' cells are not its to report)."""
    free: dict[str, int] = {}
    occupied: dict[str, int] = {}
    blocked = 0
    for cell in cells:
        if cell.business != "parcels":
            continue
        if cell.state == BLOCKED:
            blocked += 1
        elif cell.state == FREE:
            free[cell.size] = free.get(cell.size, 0) + 1
        else:
            occupied[cell.size] = occupied.get(cell.size, 0) + 1
    states = [p.state for p in parcels.parcels.values()]
    return CellReport(free, occupied, blocked, states.count(DEPOSITED), states.count(EXPIRED),
                      len(returns.waiting()) if returns else 0)


def next_daily(at: str, now_ms: int, tz: tzinfo) -> int:
    """The first `at` ("HH:MM", the locker's local time in `tz`) strictly after `now_ms`."""
    hour, minute = (int(x) for x in at.split(":"))
    now = datetime.fromtimestamp(now_ms / 1000, tz)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due <= now:
        due = (now + timedelta(days=1)).replace(hour=hour, minute=minute, second=0,
                                                microsecond=0)
    return int(due.timestamp() * 1000)
