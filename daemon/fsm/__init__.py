"""Per-cell state machines and the locker aggregate: pure, no I/O, time passed in."""

from daemon.fsm.actions import Action, CellChanged, Event, Refused, Unlock
from daemon.fsm.locker import LockerMachine
from daemon.fsm.spec import CellSpec, Timing

__all__ = [
    "Action",
    "CellChanged",
    "CellSpec",
    "Event",
    "LockerMachine",
    "Refused",
    "Timing",
    "Unlock",
]
