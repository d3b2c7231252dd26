"""The top-level cell lifecycle (free / occupied / overdue / blocked) as one transitions Machine.

One Machine definition drives every cell of a locker (the cells are its models): a Machine per
cell would repeat the states, events and transitions 480 times and blow the daemon's memory budget.
Door, pending open and timers live beside the lifecycle, in `daemon.fsm.cell.Cell`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transitions import Machine

FREE, OCCUPIED, OVERDUE, BLOCKED = "free", "occupied", "overdue", "blocked"
STATES = (FREE, OCCUPIED, OVERDUE, BLOCKED)

#: Triggers take `now_ms` as their only argument; conditions and `stamp_since` receive it too.
TRANSITIONS: tuple[dict[str, Any], ...] = (
    # Rule 1: the door closed after a deposit opened it.
    {"trigger": "occupy", "source": FREE, "dest": OCCUPIED},
    # Rule 2: the door closed after a pickup opened it.
    {"trigger": "vacate", "source": [OCCUPIED, OVERDUE], "dest": FREE},
    # Rule 3: paid time or storage limit ran out.
    {"trigger": "expire", "source": OCCUPIED, "dest": OVERDUE},
    # An extension (or a waiver) paid the time that ran out: back to a running tenancy.
    {"trigger": "extend", "source": OVERDUE, "dest": OCCUPIED},
    # Rule 5: operator, collector or fault; the tenancy is kept.
    {"trigger": "block", "source": [FREE, OCCUPIED, OVERDUE], "dest": BLOCKED},
    # Rule 5: unblocking returns to what the tenancy implies (first matching transition wins).
    {
        "trigger": "unblock",
        "source": BLOCKED,
        "dest": OVERDUE,
        "conditions": ["has_tenancy", "is_due"],
    },
    {"trigger": "unblock", "source": BLOCKED, "dest": OCCUPIED, "conditions": "has_tenancy"},
    {"trigger": "unblock", "source": BLOCKED, "dest": FREE, "unless": "has_tenancy"},
    # An eviction closed the tenancy of a blocked cell: it is free again.
    {"trigger": "release", "source": [OCCUPIED, OVERDUE, BLOCKED], "dest": FREE},
)


def new_machine(models: Sequence[object]) -> Machine:
    """A lifecycle Machine driving all `models`; they start `free` (restore sets them after)."""
    return Machine(
        model=list(models),
        states=list(STATES),
        transitions=[dict(t) for t in TRANSITIONS],
        initial=FREE,
        auto_transitions=False,
        after_state_change="stamp_since",
    )
