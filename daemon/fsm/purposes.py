"""Why a door may be opened: one row per purpose, in the manner of h11's `_state.py`.

The machine has no branch per purpose: it reads the row. A purpose says the lifecycle states it
may start from, what it does with a tenancy (starts one, needs one, or neither), whether unpaid
time refuses it, what the door closing after it does to the cell (`Completion`), and the names of
its started / completed / cancelled events. A new business adds rows (a courier's deposit is
another OCCUPY row, a collection of expired parcels another RELEASE row), not branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from daemon.fsm.lifecycle import FREE, OCCUPIED, OVERDUE, STATES


class Completion(Enum):
    """What the door closing after an authorised open does to the cell."""

    #: A tenancy starts: free -> occupied (the pending open carries it).
    OCCUPY = "occupy"
    #: The tenancy ends, the client took the things: occupied/overdue -> free.
    VACATE = "vacate"
    #: The tenancy ends without the client (seized); a blocked cell is freed too.
    RELEASE = "release"
    #: The cell stays what it was (a temporary access, an operator's look inside).
    NOTHING = "nothing"


class TenancyUse(Enum):
    """What an open does with the cell's tenancy."""

    #: The open carries a new tenancy, which starts when the door closes.
    STARTS = "starts"
    #: Refused (`not_occupied`) when the cell holds none.
    NEEDS = "needs"
    #: Works with or without one.
    ANY = "any"


@dataclass(frozen=True)
class Purpose:
    """One row of the table: see the module docstring."""

    name: str
    starts_from: frozenset[str]
    tenancy: TenancyUse
    completion: Completion
    started: str
    completed: str
    cancelled: str
    #: Refused (`debt`) while the tenancy's paid time has run out (overdue, or due now).
    refused_when_due: bool = False
    #: Kept when the cell is blocked meanwhile (an operator's open); others are cancelled.
    survives_block: bool = False
    #: The command's `reason` is announced as the started event's `note`.
    noted: bool = False

    @property
    def wrong_state(self) -> str:
        """The refusal when the cell is in a state the purpose cannot start from."""
        return "not_free" if self.tenancy is TenancyUse.STARTS else "not_occupied"


_ANY_STATE = frozenset(STATES)

#: Today's purposes, in the order error messages list them.
PURPOSES: dict[str, Purpose] = {
    p.name: p
    for p in (
        Purpose("deposit", frozenset({FREE}), TenancyUse.STARTS, Completion.OCCUPY,
                "deposit_started", "deposit_completed", "deposit_cancelled"),
        Purpose("pickup", frozenset({OCCUPIED, OVERDUE}), TenancyUse.NEEDS, Completion.VACATE,
                "pickup_started", "pickup_completed", "pickup_cancelled"),
        Purpose("temporary", frozenset({OCCUPIED, OVERDUE}), TenancyUse.NEEDS,
                Completion.NOTHING, "temporary_access_started", "temporary_access_completed",
                "temporary_access_cancelled", refused_when_due=True),
        Purpose("open", _ANY_STATE, TenancyUse.ANY, Completion.NOTHING,
                "open_started", "open_completed", "open_cancelled", survives_block=True),
        Purpose("evict", _ANY_STATE, TenancyUse.NEEDS, Completion.RELEASE,
                "eviction_started", "eviction_completed", "eviction_cancelled", noted=True),
    )
}

#: Commands that are not opens.
CELL_COMMANDS = ("block", "unblock")
