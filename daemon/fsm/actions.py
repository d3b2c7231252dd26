"""What the cell machines hand back to the app: actions to carry out, and refusals.

The machines do no I/O (sans-I/O, like h11): the app performs these actions in the order given —
send the unlock frame, record and publish the event, re-publish the cell's snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unlock:
    """Send one unlock frame; attempt 2 is the single automatic retry (rule 8)."""

    cell_id: int
    board: str
    lock: int
    attempt: int


@dataclass(frozen=True)
class Event:
    """Something to record durably and publish; cell_id is None for board-level events."""

    type: str
    cell_id: int | None
    data: dict[str, Any] = field(default_factory=dict)
    alarm: bool = False


@dataclass(frozen=True)
class CellChanged:
    """The public view of this cell changed: re-publish its retained snapshot."""

    cell_id: int


Action = Unlock | Event | CellChanged

#: Every reason the machines refuse a command with; the app passes them on as result codes.
REFUSAL_REASONS = frozenset(
    {
        "unknown_command",
        "unknown_cell",
        "not_ready",
        "blocked",
        "not_blocked",
        "not_free",
        "not_occupied",
        "debt",
        "busy",
        "door_open",
        "door_unknown",
    }
)


class Refused(Exception):
    """A command that is not allowed now; raising it guarantees nothing was changed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
