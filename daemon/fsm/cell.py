"""One cell's state: the lifecycle model plus the door, pending open and timers kept beside it.

`Cell` is the model object the shared lifecycle Machine drives; it holds no behaviour beyond the
guards the Machine asks for and its own (de)serialisation. Every timer is an absolute epoch-ms
deadline so a snapshot taken before a restart still fires at the right moment after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from daemon.fsm.lifecycle import STATES
from daemon.fsm.purposes import PURPOSES
from daemon.fsm.spec import CellSpec
from daemon.fsm.tenancy import Tenancy

DOOR_STATES = ("closed", "open", "unknown")


@dataclass(slots=True)
class PendingOpen:
    """An accepted unlock: waits for the sensor to see the door open, then for it to close."""

    purpose: str
    ref: str | None
    attempt: int
    #: The sensor has reported the door open since the unlock.
    opened: bool
    #: No open seen by then -> retry (attempt 1) or lock_fault (attempt 2).
    confirm_at: int | None
    #: No open seen by then -> the request is cancelled (open timeout).
    cancel_at: int | None
    #: Deposit only: the tenancy that starts when the door closes.
    tenancy: Tenancy | None = None

    def postpone(self, delta_ms: int) -> None:
        """Move the confirm and cancel deadlines (a pause of the door sensor, a clock jump)."""
        if self.confirm_at is not None:
            self.confirm_at += delta_ms
        if self.cancel_at is not None:
            self.cancel_at += delta_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "ref": self.ref,
            "attempt": self.attempt,
            "opened": self.opened,
            "confirm_at": self.confirm_at,
            "cancel_at": self.cancel_at,
            "tenancy": self.tenancy.to_dict() if self.tenancy else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, legacy: bool = False) -> PendingOpen:
        if data["purpose"] not in PURPOSES:
            raise ValueError(f"pending open with unknown purpose {data['purpose']!r}")
        return cls(
            purpose=data["purpose"],
            ref=data.get("ref"),
            attempt=int(data["attempt"]),
            opened=bool(data["opened"]),
            confirm_at=data.get("confirm_at"),
            cancel_at=data.get("cancel_at"),
            tenancy=Tenancy.load(data["tenancy"], legacy=legacy) if data.get("tenancy") else None,
        )


def public_tenancy(tenancy: Tenancy | None) -> dict[str, Any] | None:
    """The tenancy for events and logs: without its secret part (PIN, phone)."""
    return None if tenancy is None else tenancy.public()


class Cell:
    """A cell as the lifecycle Machine's model (identity equality: the Machine keeps a list)."""

    # Set by the lifecycle Machine when the cell is added as a model.
    state: str
    trigger: Callable[..., bool]

    def __init__(self, spec: CellSpec, since: int | None = None) -> None:
        self.spec = spec
        #: Time of the last top-level state change.
        self.since = since
        self.door = "unknown"
        #: Last door state actually read; a reading is compared with it, even across unknown.
        self.last_door: str | None = None
        self.item_present: bool | None = None
        self.door_open_since: int | None = None
        #: door_left_open alarm deadline; cleared once it fired (once per opening).
        self.left_open_at: int | None = None
        #: When the door became unknown: the door timers are shifted by the pause on recovery.
        self.paused_at: int | None = None
        self.pending: PendingOpen | None = None
        self.tenancy: Tenancy | None = None
        #: The `overdue` event of this tenancy was emitted (exactly once, even while blocked).
        self.overdue_announced = False
        self.block_reason: str | None = None

    # Guards and callbacks named in daemon.fsm.lifecycle.TRANSITIONS.
    def has_tenancy(self, now_ms: int) -> bool:
        return self.tenancy is not None

    def is_due(self, now_ms: int) -> bool:
        due = self.tenancy.due_at if self.tenancy is not None else None
        return due is not None and now_ms >= due

    def stamp_since(self, now_ms: int) -> None:
        self.since = now_ms

    def where(self) -> dict[str, Any]:
        """Board and lock, the start of every event's data."""
        return {"board": self.spec.board, "lock": self.spec.lock}

    def view_key(self) -> tuple[str, str, int | None]:
        """What the public view depends on (size never changes): cheap change detection."""
        return (self.state, self.door, self.since)

    def view(self) -> dict[str, Any]:
        """The retained MQTT snapshot of the cell; never a PIN, code or tenancy detail."""
        return {
            "cell": self.spec.id,
            "state": self.state,
            "door": self.door,
            "size": self.spec.size,
            "since": self.since,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.spec.board,
            "lock": self.spec.lock,
            "state": self.state,
            "since": self.since,
            "door": self.door,
            "last_door": self.last_door,
            "item_present": self.item_present,
            "door_open_since": self.door_open_since,
            "left_open_at": self.left_open_at,
            "paused_at": self.paused_at,
            "pending": self.pending.to_dict() if self.pending else None,
            "tenancy": self.tenancy.to_dict() if self.tenancy else None,
            "overdue_announced": self.overdue_announced,
            "block_reason": self.block_reason,
        }

    def load(self, data: Mapping[str, Any], *, legacy: bool = False) -> str:
        """Take the stored fields back; returns the lifecycle state for the Machine to set.

        A cell rewired to another board or lock keeps its business state but forgets the door: the
        stored reading was of a different sensor.
        """
        state = data["state"]
        if state not in STATES:
            raise ValueError(f"cell {self.spec.id}: unknown stored state {state!r}")
        door = data["door"]
        if door not in DOOR_STATES:
            raise ValueError(f"cell {self.spec.id}: unknown stored door state {door!r}")
        self.since = data.get("since")
        pending = data.get("pending")
        self.pending = PendingOpen.from_dict(pending, legacy=legacy) if pending else None
        tenancy = data.get("tenancy")
        self.tenancy = Tenancy.load(tenancy, legacy=legacy) if tenancy else None
        self.overdue_announced = bool(data.get("overdue_announced", False))
        self.block_reason = data.get("block_reason")
        if state in ("occupied", "overdue") and self.tenancy is None:
            raise ValueError(f"cell {self.spec.id}: stored as {state} without a tenancy")
        if state == "free" and self.tenancy is not None:
            raise ValueError(f"cell {self.spec.id}: stored as free with a tenancy")
        if (data.get("board"), data.get("lock")) == (self.spec.board, self.spec.lock):
            self.door = door
            self.last_door = data.get("last_door")
            self.item_present = data.get("item_present")
            self.door_open_since = data.get("door_open_since")
            self.left_open_at = data.get("left_open_at")
            self.paused_at = data.get("paused_at")
        return state
