"""A parcel's life on the locker, sans-I/O: inputs are events with a time, outputs are effects.

    announced -> loading -> deposited -> collecting -> picked_up
       (opt.)       |            |  ^          (code opened the cell, door closed)
                    |            |  +-- the door never opened: still deposited
                    |            +-> expired -> taking_back -> returned_to_sender
                    +-> cancelled (door never opened, or closed empty by the item sensor)

`TRANSITIONS` is the whole table; anything else raises `ParcelError` (nothing changed).
Parcels for one recipient share a cell (a *load*) while none is picked up: a courier may add
one, which restarts the pickup window; one code opens the cell for all of them. The book keeps
each cell's load, its pending open and its fault intervals (for daemon/parcels/expiry.py), one
per cause: a cell may be blocked by a lock fault and have its board offline at once, and its
window runs again only when no cause is left.

What comes back, in order: `daemon.fsm.actions.Event` to record (data never holds a code, PIN,
phone or e-mail), then `OpenCell`, `IssueCode`, `RevokeCode`, `Notify` for the app to carry out
after the events are stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from contract.parcels import ParcelsSection
from daemon.fsm.actions import Event
from daemon.fsm.spec import SIZES
from daemon.parcels import expiry
from daemon.parcels.effects import IssueCode, Notify, OpenCell, OpenPurpose, RevokeCode

ANNOUNCED, LOADING, DEPOSITED, COLLECTING = "announced", "loading", "deposited", "collecting"
PICKED_UP, EXPIRED, TAKING_BACK = "picked_up", "expired", "taking_back"
RETURNED_TO_SENDER, CANCELLED = "returned_to_sender", "cancelled"
#: A parcel in one of these is still at the locker (its barcode cannot be deposited again).
AT_LOCKER = frozenset({LOADING, DEPOSITED, COLLECTING, EXPIRED, TAKING_BACK})
FINAL = frozenset({PICKED_UP, RETURNED_TO_SENDER, CANCELLED})

#: Causes of a fault that stops the pickup window: the cell machine blocked the cell (lock fault,
#: forced open; it ends when the cell is unblocked), and the cell's board is offline. `FAULT` is
#: a fault of no named cause (and every interval stored before causes were kept): the end of a
#: fault of any cause ends it, as before.
CELL_BLOCKED, BOARD_OFFLINE, FAULT = "cell_blocked", "board_offline", "fault"

#: A fault interval of a cell: [start, end) in epoch ms (end None while it lasts) and its cause.
FaultSpan = tuple[int, int | None, str]

#: (state, trigger) -> next state; None: the parcel does not exist yet.
TRANSITIONS: dict[tuple[str | None, str], str] = {
    (None, "announce"): ANNOUNCED,
    (None, "load"): LOADING,
    (ANNOUNCED, "load"): LOADING,
    (LOADING, "closed"): DEPOSITED,
    (LOADING, "closed_empty"): CANCELLED,
    (LOADING, "never_opened"): CANCELLED,
    (DEPOSITED, "open_pickup"): COLLECTING,
    (COLLECTING, "closed"): PICKED_UP,
    (COLLECTING, "closed_empty"): PICKED_UP,
    (COLLECTING, "never_opened"): DEPOSITED,
    (DEPOSITED, "expire"): EXPIRED,
    (EXPIRED, "take_back"): TAKING_BACK,
    (TAKING_BACK, "closed"): RETURNED_TO_SENDER,
    (TAKING_BACK, "closed_empty"): RETURNED_TO_SENDER,
    (TAKING_BACK, "never_opened"): EXPIRED,
}


class ParcelError(Exception):
    """A step the parcel's state does not allow; `reason` is a stable code for the kiosk."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Parcel:
    id: str
    recipient_id: str
    barcode: str | None = None
    size: str | None = None
    cell: int | None = None
    courier_id: str | None = None
    state: str | None = None
    announced_at: int | None = None
    deposited_at: int | None = None
    closed_at: int | None = None


@dataclass
class Load:
    """The parcels in one cell for one recipient, sharing a code and a pickup window."""

    cell: int
    recipient_id: str
    parcels: list[str] = field(default_factory=list)
    #: The window (re)starts at the latest deposit.
    window_start: int | None = None
    #: Reminders already queued for this window (ms before the end).
    reminded: list[int] = field(default_factory=list)
    #: The open under way: (purpose, who asked, the parcel it is for when loading).
    pending: tuple[OpenPurpose, str | None, str | None] | None = None


@dataclass(frozen=True)
class ParcelRules:
    """The section's timing (ms), as the book uses it."""

    window_ms: int = 48 * 3600_000
    reminders_ms: tuple[int, ...] = (24 * 3600_000, 2 * 3600_000)
    #: Queue an e-mail to the administrator on every pickup.
    pickup_report: bool = False
    added_notice: bool = True
    #: A deposit needs the parcel's barcode.
    barcode_required: bool = False

    @classmethod
    def from_section(cls, section: ParcelsSection) -> ParcelRules:
        return cls(
            window_ms=section.pickup_window_s * 1000,
            reminders_ms=tuple(s * 1000 for s in section.reminders_s),
            pickup_report=bool(section.notify.pickup_emails),
            added_notice=section.notify.added_parcel_notice,
            barcode_required=section.barcode_required,
        )


@dataclass
class ParcelBook:
    """Every parcel of the locker and the loads of its parcel cells."""

    rules: ParcelRules = field(default_factory=ParcelRules)
    parcels: dict[str, Parcel] = field(default_factory=dict)
    loads: dict[int, Load] = field(default_factory=dict)
    #: Fault intervals per cell, [start, end|None) epoch ms with their cause (kept while the
    #: cell has a load); they may overlap: the window counts their union.
    faults: dict[int, list[FaultSpan]] = field(default_factory=dict)

    # -- transitions ----------------------------------------------------------------------
    def _step(self, parcel: Parcel, trigger: str) -> str:
        nxt = TRANSITIONS.get((parcel.state, trigger))
        if nxt is None:
            raise ParcelError(
                "illegal_transition",
                f"parcel {parcel.id} is {parcel.state or 'unknown'}; cannot {trigger}",
            )
        return nxt

    def announce(self, parcel_id: str, barcode: str, recipient_id: str, now_ms: int) -> list:
        """The console said a parcel with this barcode is coming for this recipient."""
        if parcel_id in self.parcels:
            raise ParcelError("duplicate_parcel", f"parcel {parcel_id} already exists")
        barcode = clean_barcode(barcode) or ""
        if not barcode:
            raise ParcelError("bad_barcode", "an announced parcel needs its barcode")
        self._refuse_live_barcode(barcode, announced_too=True)
        parcel = Parcel(parcel_id, recipient_id, barcode=barcode, announced_at=now_ms)
        parcel.state = self._step(parcel, "announce")
        self.parcels[parcel_id] = parcel
        return [Event("parcel_announced", None, _data(parcel))]

    def announced(self, barcode: str) -> Parcel | None:
        """The announced parcel with this barcode: the courier's scan fills the recipient in."""
        return next((p for p in self.parcels.values()
                     if p.state == ANNOUNCED and p.barcode == barcode), None)

    def begin_deposit(
        self,
        parcel_id: str,
        *,
        cell: int,
        size: str,
        recipient_id: str | None,
        courier_id: str,
        barcode: str | None,
        now_ms: int,
    ) -> list:
        """A courier loads a parcel into `cell` (a free one, or the recipient's own load).

        A barcode that was announced makes the announced parcel the one deposited (its id and
        recipient; `parcel_id` is then unused)."""
        if size not in SIZES:
            raise ParcelError("bad_size", f"size must be one of {', '.join(SIZES)}")
        barcode = clean_barcode(barcode)
        if barcode is None and self.rules.barcode_required:
            raise ParcelError("barcode_required", "scan the parcel's barcode")
        parcel = self.announced(barcode) if barcode else None
        if parcel is None:
            if parcel_id in self.parcels:
                raise ParcelError("duplicate_parcel", f"parcel {parcel_id} already exists")
            if barcode:
                self._refuse_live_barcode(barcode, announced_too=False)
            if recipient_id is None:
                raise ParcelError("no_recipient", "choose a recipient for the parcel")
            parcel = Parcel(parcel_id, recipient_id, barcode=barcode)
        elif recipient_id is not None and recipient_id != parcel.recipient_id:
            raise ParcelError("wrong_recipient",
                              f"barcode {barcode} was announced for another recipient")
        load = self.loads.get(cell)
        if load is not None:
            if load.pending is not None:
                raise ParcelError("busy", f"cell {cell} is being opened")
            if load.recipient_id != parcel.recipient_id:
                raise ParcelError("cell_taken", f"cell {cell} holds another recipient's parcels")
            if any(self.parcels[p].state != DEPOSITED for p in load.parcels):
                raise ParcelError("cell_taken", f"cell {cell}'s parcels are no longer waiting")
        nxt = self._step(parcel, "load")
        parcel.state, parcel.cell, parcel.size, parcel.courier_id = nxt, cell, size, courier_id
        self.parcels[parcel.id] = parcel
        if load is None:
            load = self.loads[cell] = Load(cell, parcel.recipient_id)
        load.pending = ("parcel_deposit", courier_id, parcel.id)
        return [OpenCell(cell, "parcel_deposit")]

    def begin_pickup(self, cell: int, now_ms: int) -> list:
        """The recipient's code (checked by daemon/parcels/codes.py) named this cell."""
        load = self._load(cell)
        for pid in load.parcels:
            self._step(self.parcels[pid], "open_pickup")
        self._set_all(load, "open_pickup")
        load.pending = ("parcel_pickup", None, None)
        return [OpenCell(cell, "parcel_pickup")]

    def begin_take_back(self, cell: int, courier_id: str, now_ms: int) -> list:
        """A courier takes the expired parcels of `cell` back to the sender."""
        load = self._load(cell)
        for pid in load.parcels:
            self._step(self.parcels[pid], "take_back")
        self._set_all(load, "take_back")
        load.pending = ("parcel_take_back", courier_id, None)
        return [OpenCell(cell, "parcel_take_back")]

    def door_closed(self, cell: int, item_present: bool | None, now_ms: int) -> list:
        """The door of a cell opened for a parcel was seen closed again."""
        load = self._load(cell, pending=True)
        assert load.pending is not None
        purpose, who, pid = load.pending
        load.pending = None
        trigger = "closed_empty" if item_present is False else "closed"
        if purpose == "parcel_deposit":
            assert pid is not None
            return self._deposit_closed(load, self.parcels[pid], trigger, now_ms)
        if purpose == "parcel_pickup":
            return self._finish(load, trigger, "parcel_picked_up", now_ms, pickup=True)
        return self._finish(load, trigger, "parcel_returned_to_sender", now_ms, courier=who)

    def open_failed(self, cell: int, now_ms: int) -> list:
        """The door of a cell opened for a parcel was never seen open (lock fault, timeout)."""
        load = self._load(cell, pending=True)
        assert load.pending is not None
        purpose, _, pid = load.pending
        load.pending = None
        if purpose == "parcel_deposit":
            assert pid is not None
            parcel = self.parcels[pid]
            parcel.state = self._step(parcel, "never_opened")
            parcel.closed_at = now_ms
            self._drop_if_empty(load)
            return [Event("parcel_cancelled", cell, {**_data(parcel), "reason": "never_opened"})]
        self._set_all(load, "never_opened")
        return []

    def tick(self, now_ms: int) -> list:
        """Reminders whose time came and windows that ran out (faults pause both)."""
        events: list = []
        out: list = []
        for cell, load in list(self.loads.items()):
            if load.pending is not None or load.window_start is None:
                continue
            states = {self.parcels[p].state for p in load.parcels}
            if states != {DEPOSITED}:
                continue
            faults = self._intervals(cell)
            start, window = load.window_start, self.rules.window_ms
            if expiry.expired(start, window, faults, now_ms):
                self._set_all(load, "expire")
                out.append(RevokeCode(cell))
                events.extend(Event("parcel_expired", cell, _data(self.parcels[pid]))
                              for pid in load.parcels)
                out.append(Notify("parcel_expired", cell, load.recipient_id, tuple(load.parcels),
                                  f"expired:{cell}:{start}"))
                continue
            for before in expiry.reminders_due(start, window, faults, now_ms,
                                               self.rules.reminders_ms):
                if before not in load.reminded:
                    load.reminded.append(before)
                    out.append(Notify("parcel_reminder", cell, load.recipient_id,
                                      tuple(load.parcels), f"reminder:{cell}:{start}:{before}"))
        return events + out

    def due_at(self, cell: int) -> int | None:
        """When the cell's pickup window ends as known now (None: a fault stops it)."""
        load = self._load(cell)
        if load.window_start is None:
            return None
        return expiry.due_at(load.window_start, self.rules.window_ms, self._intervals(cell))

    # -- faults ---------------------------------------------------------------------------
    def fault_started(self, cell: int, now_ms: int, cause: str = FAULT) -> bool:
        """A fault of `cause` began on the cell: its parcels' window stops. True when the
        window stops now (no other fault had stopped it already)."""
        was_stopped = self.stopped(cell)
        spans = self.faults.setdefault(cell, [])
        if not any(e is None and c == cause for _, e, c in spans):
            spans.append((now_ms, None, cause))
        return not was_stopped

    def fault_ended(self, cell: int, now_ms: int, cause: str = FAULT) -> bool:
        """The fault of `cause` cleared. True when the window runs again now: no fault of
        another cause is left (a board back online does not end a lock fault's pause)."""
        was_stopped = self.stopped(cell)
        spans = self.faults.get(cell, [])
        for i, (s, e, c) in enumerate(spans):
            if e is None and c in (cause, FAULT):
                spans[i] = (s, max(now_ms, s), c)
        if cell not in self.loads:
            self.faults.pop(cell, None)  # nothing waits in the cell: nothing to pause
        return was_stopped and not self.stopped(cell)

    def faults_gone(self, now_ms: int, holds: Callable[[int, str], bool]) -> list[int]:
        """End every fault going on that `holds(cell, cause)` says is over: the cell machine
        recorded its end, and a crash came before the book's own write. The cells whose window
        runs again now (no fault of another cause is left), in cell order."""
        resumed = []
        for cell in sorted(self.faults):
            was_stopped = self.stopped(cell)
            self.faults[cell] = [(s, max(now_ms, s), c) if e is None and not holds(cell, c)
                                 else (s, e, c) for s, e, c in self.faults[cell]]
            if cell not in self.loads:
                self.faults.pop(cell)
            if was_stopped and not self.stopped(cell):
                resumed.append(cell)
        return resumed

    def stopped(self, cell: int) -> bool:
        """A fault goes on in the cell (its window is stopped)."""
        return any(e is None for _, e, _ in self.faults.get(cell, []))

    def _intervals(self, cell: int) -> list[expiry.Fault]:
        return [(s, e) for s, e, _ in self.faults.get(cell, [])]

    # -- views ----------------------------------------------------------------------------
    def expired_loads(self) -> list[Load]:
        """What a courier may take back, for the kiosk's list."""
        return [ld for ld in self.loads.values() if ld.pending is None
                and ld.parcels and all(self.parcels[p].state == EXPIRED for p in ld.parcels)]

    def load_of(self, cell: int) -> Load | None:
        return self.loads.get(cell)

    def parcels_in(self, cell: int) -> list[str]:
        """The parcels in a cell, for what an operator's open records (`holds`)."""
        load = self.loads.get(cell)
        return list(load.parcels) if load else []

    # -- persistence and clock -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (ids, states and times: nothing secret)."""
        return {
            "v": 1,
            "parcels": [asdict(p) for p in self.parcels.values()],
            "loads": [asdict(ld) for ld in self.loads.values()],
            "faults": {str(c): [list(f) for f in spans] for c, spans in self.faults.items()},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Take a snapshot back; a malformed one raises ValueError and changes nothing."""
        try:
            if snap.get("v") != 1:
                raise ValueError(f"unknown version {snap.get('v')!r}")
            parcels = {p["id"]: Parcel(**p) for p in snap["parcels"]}
            loads = {}
            for raw in snap["loads"]:
                pending = raw.get("pending")
                load = Load(**{**raw, "pending": None if pending is None else tuple(pending)})
                if any(pid not in parcels for pid in load.parcels):
                    raise ValueError(f"cell {load.cell} holds an unknown parcel")
                loads[load.cell] = load
            faults = {int(c): [_span(f) for f in spans] for c, spans in snap["faults"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"parcel book snapshot is malformed: {exc}") from exc
        self.parcels, self.loads, self.faults = parcels, loads, faults

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped: windows and faults keep the length they were meant to have."""
        def moved(t: int | None) -> int | None:
            return None if t is None else t + delta_ms
        for p in self.parcels.values():
            p.announced_at, p.deposited_at = moved(p.announced_at), moved(p.deposited_at)
            p.closed_at = moved(p.closed_at)
        for load in self.loads.values():
            load.window_start = moved(load.window_start)
        self.faults = {c: [(s + delta_ms, moved(e), cause) for s, e, cause in spans]
                       for c, spans in self.faults.items()}

    def forget_finished(self, before_ms: int) -> None:
        """Drop parcels that ended before `before_ms` (their events are stored): bounded memory."""
        for pid in [pid for pid, p in self.parcels.items() if p.state in FINAL
                    and p.closed_at is not None and p.closed_at < before_ms]:
            del self.parcels[pid]

    # -- internals ------------------------------------------------------------------------
    def _load(self, cell: int, *, pending: bool = False) -> Load:
        load = self.loads.get(cell)
        if load is None or (pending and load.pending is None):
            raise ParcelError("no_parcel", f"cell {cell} has no parcel {'open' if pending else ''}"
                              .rstrip())
        if not pending and load.pending is not None:
            raise ParcelError("busy", f"cell {cell} is being opened")
        return load

    def _set_all(self, load: Load, trigger: str) -> None:
        for pid in load.parcels:
            parcel = self.parcels[pid]
            parcel.state = self._step(parcel, trigger)

    def _refuse_live_barcode(self, barcode: str, *, announced_too: bool) -> None:
        for p in self.parcels.values():
            if p.barcode == barcode and (p.state in AT_LOCKER
                                         or (announced_too and p.state == ANNOUNCED)):
                raise ParcelError("duplicate_barcode",
                                  f"barcode {barcode} is already at this locker")

    def _deposit_closed(self, load: Load, parcel: Parcel, trigger: str, now_ms: int) -> list:
        parcel.state = self._step(parcel, trigger)
        parcel.closed_at = now_ms
        if parcel.state == CANCELLED:
            self._drop_if_empty(load)
            return [Event("parcel_cancelled", load.cell, {**_data(parcel),
                                                         "reason": "closed_empty"})]
        added = bool(load.parcels)
        parcel.deposited_at = now_ms
        load.parcels.append(parcel.id)
        # A new parcel restarts the window for all (Luxer One): faults before it no longer count.
        load.window_start, load.reminded = now_ms, []
        due = self.due_at(load.cell)
        data = {**_data(parcel), "parcels": list(load.parcels), "added": added, "due_at": due}
        out: list = [Event("parcel_deposited", load.cell, data)]
        if not added:
            out.append(IssueCode(load.cell, load.recipient_id, parcel.id))
            out.append(Notify("parcel_arrived", load.cell, load.recipient_id,
                              tuple(load.parcels), f"arrived:{parcel.id}"))
        elif self.rules.added_notice:
            out.append(Notify("parcel_added", load.cell, load.recipient_id,
                              tuple(load.parcels), f"added:{parcel.id}"))
        return out

    def _finish(self, load: Load, trigger: str, event: str, now_ms: int, *,
                pickup: bool = False, courier: str | None = None) -> list:
        self._set_all(load, trigger)
        out: list = []
        for pid in load.parcels:
            parcel = self.parcels[pid]
            parcel.closed_at = now_ms
            data = _data(parcel)
            if courier is not None:
                data["staff_id"] = courier
            out.append(Event(event, load.cell, data))
        if pickup:
            out.append(RevokeCode(load.cell))
            if self.rules.pickup_report:
                out.append(Notify("pickup_report", load.cell, None, tuple(load.parcels),
                                  f"pickup:{load.cell}:{load.window_start}"))
        del self.loads[load.cell]
        self.faults.pop(load.cell, None)
        return out

    def _drop_if_empty(self, load: Load) -> None:
        if not load.parcels:
            del self.loads[load.cell]


#: What a scanner may type: printable ASCII without spaces, as barcodes (Code 128, EAN) hold.
_BARCODE_RE = re.compile(r"^[!-~]{1,64}$")


def clean_barcode(raw: str | None) -> str | None:
    """A scanned or typed barcode without the scanner's trailing Enter or spaces; None if
    empty; ParcelError("bad_barcode") for anything a barcode cannot be."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    if not _BARCODE_RE.match(text):
        raise ParcelError("bad_barcode", "a barcode is 1-64 printable characters")
    return text


def _span(raw: list[Any]) -> FaultSpan:
    """A stored fault interval: [start, end, cause], or [start, end] from before causes."""
    start, end, *cause = raw
    return int(start), None if end is None else int(end), str(cause[0]) if cause else FAULT


def _data(parcel: Parcel) -> dict[str, Any]:
    """A parcel's event data: ids, size, cell and times; never a code, phone or e-mail."""
    raw = {
        "parcel_id": parcel.id,
        "barcode": parcel.barcode,
        "size": parcel.size,
        "recipient_id": parcel.recipient_id,
        "courier_id": parcel.courier_id,
        "announced_at": parcel.announced_at,
        "deposited_at": parcel.deposited_at,
    }
    return {k: v for k, v in raw.items() if v is not None}
