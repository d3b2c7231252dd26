"""The locker aggregate: every cell's machine, the boards' health, and the rules that tie them.

`LockerMachine` is a sans-I/O protocol object: the app feeds it board readings, commands and clock
ticks (time always passed in as epoch ms) and carries out the actions it returns. A refused command
raises `Refused` and changes nothing. `snapshot()` is the whole state, restart-safe: passing it back
to the constructor resumes exactly where it stopped, and the first reading of each board after that
is reconciled with the stored door states before `ready()` lets the app take commands.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.fsm.actions import Action, CellChanged, Event, Refused, Unlock
from daemon.fsm.cell import Cell, PendingOpen, public_tenancy
from daemon.fsm.lifecycle import BLOCKED, FREE, OCCUPIED, OVERDUE, new_machine
from daemon.fsm.purposes import CELL_COMMANDS, PURPOSES, Completion, Purpose, TenancyUse
from daemon.fsm.spec import CellSpec, Timing
from daemon.fsm.tenancy import Tenancy

#: 2: tenancies stored as a typed core plus the business's payload; 1 (the flat form before) is
#: read and migrated.
SNAPSHOT_VERSION = 2
_LEGACY_VERSION = 1

#: One reading per lock: (door_closed, item_present), None where the sensor gave nothing usable.
Reading = tuple[bool | None, bool | None]


@dataclass(slots=True)
class BoardHealth:
    """Poll bookkeeping of one board."""

    failures: int = 0
    offline: bool = False
    #: A poll succeeded since construction (its doors have been reconciled with the store).
    reported: bool = False
    #: Declared offline since construction (counts as settled for `ready()`).
    declared_offline: bool = False
    #: The last successful readings: an identical poll changes nothing and is skipped cheaply
    #: (a locker polls ten boards ten times a second; almost every poll repeats the last one).
    last_readings: Mapping[int, Reading] | None = None


class _Batch:
    """The actions of one call, with a CellChanged appended for every cell whose view changed."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self._before: dict[int, tuple[Cell, tuple[str, str, int | None]]] = {}

    def touch(self, cell: Cell) -> None:
        """Call before changing a cell, so its view can be compared afterwards."""
        if cell.spec.id not in self._before:
            self._before[cell.spec.id] = (cell, cell.view_key())

    def event(
        self, type_: str, cell: Cell | None, data: dict[str, Any], *, alarm: bool = False
    ) -> None:
        if cell is None:
            self.actions.append(Event(type_, None, data, alarm))
        else:
            self.actions.append(Event(type_, cell.spec.id, {**cell.where(), **data}, alarm))

    def unlock(self, cell: Cell, attempt: int) -> None:
        self.actions.append(Unlock(cell.spec.id, cell.spec.board, cell.spec.lock, attempt))

    def finish(self) -> list[Action]:
        for cell_id, (cell, key) in sorted(self._before.items()):
            if cell.view_key() != key:
                self.actions.append(CellChanged(cell_id))
        return self.actions


def _with_ref(data: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is not None:
        data["ref"] = ref
    return data


class LockerMachine:
    """All cells of one locker; see the module docstring and docs/architecture.md "Cell state
    machine"."""

    def __init__(
        self,
        cells: Sequence[CellSpec],
        timing: Timing,
        state: Mapping[str, Any] | None = None,
        *,
        now_ms: int | None = None,
    ) -> None:
        """`state` is a previous `snapshot()`; `now_ms` only stamps `since` of fresh cells."""
        self.timing = timing
        self._cells: dict[int, Cell] = {}
        self._by_board: dict[str, list[Cell]] = {}
        for spec in cells:
            if spec.id in self._cells:
                raise ValueError(f"duplicate cell id {spec.id}")
            cell = Cell(spec, since=now_ms)
            self._cells[spec.id] = cell
            self._by_board.setdefault(spec.board, []).append(cell)
        for board, members in self._by_board.items():
            locks = [c.spec.lock for c in members]
            if len(set(locks)) != len(locks):
                raise ValueError(f"board {board!r}: two cells share a lock")
        self._boards = {name: BoardHealth() for name in self._by_board}
        self._machine = new_machine(list(self._cells.values()))
        if state is not None:
            self._restore(state)

    # ----------------------------------------------------------------- restore / snapshot

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") not in (SNAPSHOT_VERSION, _LEGACY_VERSION):
            raise ValueError(f"unsupported snapshot version {state.get('version')!r}")
        legacy = state.get("version") == _LEGACY_VERSION
        stored_cells = state.get("cells", {})
        for cell in self._cells.values():
            data = stored_cells.get(str(cell.spec.id))
            if data is not None:
                self._machine.set_state(cell.load(data, legacy=legacy), model=cell)
        for name, data in state.get("boards", {}).items():
            health = self._boards.get(name)
            if health is not None:
                health.failures = int(data.get("failures", 0))
                health.offline = bool(data.get("offline", False))

    def restore(self, state: Mapping[str, Any]) -> None:
        """Go back to an earlier `snapshot()` (a step whose commit failed is undone).

        The boards' last readings are forgotten so the next poll is compared afresh with the
        restored doors: a door that moved meanwhile is seen, never skipped as a repeat.
        """
        self._restore(state)
        for health in self._boards.values():
            health.last_readings = None

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON data; timers are absolute epoch-ms deadlines."""
        return {
            "version": SNAPSHOT_VERSION,
            "cells": {str(cid): cell.to_dict() for cid, cell in self._cells.items()},
            "boards": {
                name: {"failures": h.failures, "offline": h.offline}
                for name, h in self._boards.items()
            },
        }

    def cell_view(self, cell_id: int) -> dict[str, Any]:
        cell = self._cells.get(cell_id)
        if cell is None:
            raise KeyError(f"unknown cell {cell_id}")
        return cell.view()

    def cells(self) -> list[dict[str, Any]]:
        return [cell.view() for cell in self._cells.values()]

    def ready(self) -> bool:
        """Every board reported (or was declared offline) since construction: boot reconciled."""
        return all(h.reported or h.declared_offline for h in self._boards.values())

    def boards(self) -> dict[str, dict[str, Any]]:
        """Health of every board, for the app's status message."""
        return {
            name: {"online": h.reported and not h.offline, "offline": h.offline,
                   "failures": h.failures}
            for name, h in self._boards.items()
        }

    # ----------------------------------------------------------------- commands

    def command(
        self,
        cell_id: int,
        kind: str,
        now_ms: int,
        *,
        ref: str | None = None,
        tenancy: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> list[Action]:
        """Carry out a kiosk, service or remote command; or raise Refused and change nothing."""
        if kind not in PURPOSES and kind not in CELL_COMMANDS:
            kinds = ", ".join((*PURPOSES, *CELL_COMMANDS))
            raise Refused("unknown_command", f"{kind!r} is not one of {kinds}")
        cell = self._cells.get(cell_id)
        if cell is None:
            raise Refused("unknown_cell", f"no cell {cell_id}")
        batch = _Batch()
        if kind == "block":
            self._block(batch, cell, reason or "operator", now_ms, ref=ref)
        elif kind == "unblock":
            if cell.state != BLOCKED:
                raise Refused("not_blocked", f"cell {cell_id} is {cell.state}")
            self._unblock(batch, cell, now_ms, ref)
        else:
            purpose = PURPOSES[kind]
            self._check_open(cell, purpose, now_ms)
            self._start_open(batch, cell, purpose, now_ms, ref, tenancy, reason)
        return batch.finish()

    def check_command(self, cell_id: int, kind: str, now_ms: int | None = None) -> None:
        """Raise Refused if an open of `kind` could not be taken now; changes nothing.

        Without `now_ms` a due time that passed since the last tick is not seen (the tick
        makes the cell overdue).
        """
        purpose = PURPOSES.get(kind)
        if purpose is None:
            raise Refused("unknown_command", f"{kind!r} is not one of {', '.join(PURPOSES)}")
        cell = self._cells.get(cell_id)
        if cell is None:
            raise Refused("unknown_cell", f"no cell {cell_id}")
        self._check_open(cell, purpose, now_ms)

    def _check_open(self, cell: Cell, purpose: Purpose, now_ms: int | None) -> None:
        """Raise the first reason this open request cannot be taken now (its row decides)."""
        cid, state = cell.spec.id, cell.state
        if state == BLOCKED and BLOCKED not in purpose.starts_from:
            raise Refused("blocked", f"cell {cid} is blocked ({cell.block_reason})")
        if state not in purpose.starts_from:
            raise Refused(purpose.wrong_state, f"cell {cid} is {state}")
        if purpose.tenancy is TenancyUse.NEEDS and cell.tenancy is None:
            raise Refused("not_occupied", f"cell {cid} has no tenancy")
        if purpose.refused_when_due and (
            state == OVERDUE or (now_ms is not None and cell.is_due(now_ms))
        ):
            raise Refused("debt", f"cell {cid} has unpaid time")
        if cell.pending is not None:
            raise Refused("busy", f"cell {cid} has a pending {cell.pending.purpose}")
        health = self._boards[cell.spec.board]
        if not (health.reported or health.declared_offline):
            raise Refused("not_ready", f"board {cell.spec.board!r} has not reported since start")
        if cell.door == "open":
            raise Refused("door_open", f"cell {cid}: the door is open")
        if cell.door == "unknown":
            raise Refused("door_unknown", f"cell {cid}: the door state is unknown")

    def _start_open(
        self,
        batch: _Batch,
        cell: Cell,
        purpose: Purpose,
        now_ms: int,
        ref: str | None,
        tenancy: Mapping[str, Any] | None,
        reason: str = "",
    ) -> None:
        data: dict[str, Any] = {}
        new_tenancy = None
        if purpose.tenancy is TenancyUse.STARTS:
            given = dict(tenancy or {})
            if not given.get("id"):
                given["id"] = f"{cell.spec.id}-{now_ms}"
            new_tenancy = Tenancy.from_flat(given)
            data["tenancy"] = public_tenancy(new_tenancy)
        elif cell.tenancy is not None:
            data["tenancy_id"] = cell.tenancy.id
        if purpose.noted:
            data["note"] = reason
        batch.touch(cell)
        cell.pending = PendingOpen(
            purpose=purpose.name,
            ref=ref,
            attempt=1,
            opened=False,
            confirm_at=now_ms + self.timing.unlock_confirm_ms,
            cancel_at=now_ms + self.timing.open_timeout_ms,
            tenancy=new_tenancy,
        )
        batch.event(purpose.started, cell, _with_ref(data, ref))
        batch.unlock(cell, 1)

    def _block(
        self, batch: _Batch, cell: Cell, reason: str, now_ms: int, ref: str | None = None
    ) -> None:
        """Block the cell (or re-block with a new reason); cancels a pending customer open."""
        batch.touch(cell)
        if cell.pending is not None and not PURPOSES[cell.pending.purpose].survives_block:
            self._cancel(batch, cell, "blocked")
        cell.block_reason = reason
        if cell.state != BLOCKED:
            cell.trigger("block", now_ms)
        batch.event("blocked", cell, _with_ref({"reason": reason}, ref))

    def _unblock(self, batch: _Batch, cell: Cell, now_ms: int, ref: str | None) -> None:
        batch.touch(cell)
        cell.block_reason = None
        cell.trigger("unblock", now_ms)
        batch.event("unblocked", cell, _with_ref({"state": cell.state}, ref))
        if cell.state == OVERDUE and not cell.overdue_announced:
            self._announce_overdue(batch, cell, now_ms)

    def _cancel(self, batch: _Batch, cell: Cell, reason: str) -> None:
        pending = cell.pending
        assert pending is not None
        batch.touch(cell)
        cell.pending = None
        purpose = PURPOSES[pending.purpose]
        data: dict[str, Any] = {"reason": reason, "purpose": purpose.name}
        if purpose.tenancy is TenancyUse.STARTS:  # what was paid for it is given back
            data["void_payment"] = True
            data["tenancy_id"] = pending.tenancy.id if pending.tenancy else None
        batch.event(purpose.cancelled, cell, _with_ref(data, pending.ref))

    def update_tenancy(
        self,
        cell_id: int,
        changes: Mapping[str, Any],
        now_ms: int,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> list[Action]:
        """Change a running tenancy (payment, extension, waiver) and say so in one event.

        A due time moved past `now_ms` takes an overdue cell back to occupied and re-arms the
        overdue timer; Refused (nothing changed) if the cell has no tenancy.
        """
        cell = self._cells.get(cell_id)
        if cell is None:
            raise Refused("unknown_cell", f"no cell {cell_id}")
        if cell.tenancy is None:
            raise Refused("not_occupied", f"cell {cell_id} has no tenancy")
        batch = _Batch()
        batch.touch(cell)
        cell.tenancy.update(changes)
        due = cell.tenancy.due_at
        if due is None or due > now_ms:
            cell.overdue_announced = False
            if cell.state == OVERDUE:
                cell.trigger("extend", now_ms)
        if event is not None:
            type_, data = event
            batch.event(type_, cell, {"tenancy_id": cell.tenancy.id, **data})
        return batch.finish()

    def tenancy(self, cell_id: int) -> dict[str, Any] | None:
        """A copy of the cell's tenancy, secrets included: for the locker's own services."""
        cell = self._cells.get(cell_id)
        if cell is None:
            raise KeyError(f"unknown cell {cell_id}")
        return cell.tenancy.flat() if cell.tenancy is not None else None

    def note_secret(self, cell_id: int, tenancy_id: str, key: str, value: Any) -> bool:
        """Keep `value` under the tenancy's secret part (never in an event), whether its deposit
        is still pending or it runs; committed with the caller's next `apply`. False if the
        cell holds no such tenancy."""
        cell = self._cells.get(cell_id)
        if cell is None:
            return False
        for tenancy in (cell.tenancy, cell.pending.tenancy if cell.pending else None):
            if tenancy is not None and tenancy.id == tenancy_id:
                tenancy.note_secret(key, value)
                return True
        return False

    def pending_tenancy(self, cell_id: int) -> dict[str, Any] | None:
        """The tenancy a pending deposit will start, if one is pending on the cell."""
        cell = self._cells[cell_id]
        if cell.pending is None or cell.pending.purpose != "deposit":
            return None
        return cell.pending.tenancy.flat() if cell.pending.tenancy is not None else None

    def pending_purpose(self, cell_id: int) -> str | None:
        pending = self._cells[cell_id].pending
        return pending.purpose if pending else None

    def block(self, cell_id: int) -> tuple[str, int | None] | None:
        """Why the cell is blocked and since when (None: it is not): a business compares its
        own record of a fault with the cell's at start."""
        cell = self._cells[cell_id]
        if cell.state != "blocked":
            return None
        return cell.block_reason or "", cell.since

    def clock_jumped(self, delta_ms: int) -> None:
        """The wall clock stepped by `delta_ms`: move every stored time with it.

        Durations (what a stay costs, how long a door has been open, when a timer fires) stay
        what they were; only their wall-clock labels move. Persisted by the app's next commit.
        """
        for cell in self._cells.values():
            for name in ("since", "door_open_since", "left_open_at", "paused_at"):
                value = getattr(cell, name)
                if value is not None:
                    setattr(cell, name, value + delta_ms)
            if cell.tenancy is not None:
                cell.tenancy.shifted(delta_ms)
            pending = cell.pending
            if pending is not None:
                pending.postpone(delta_ms)
                if pending.tenancy is not None:
                    pending.tenancy.shifted(delta_ms)

    # ----------------------------------------------------------------- board readings

    def board_polled(
        self, board: str, readings: Mapping[int, Reading] | None, now_ms: int
    ) -> list[Action]:
        """One poll result: readings by 1-based lock number, or None when the poll failed.

        A board no cell uses is ignored. A lock missing from `readings` reads as unknown.
        """
        health = self._boards.get(board)
        if health is None:
            return []
        if readings is not None and readings == health.last_readings and not health.failures:
            return []
        health.last_readings = readings
        batch = _Batch()
        members = self._by_board[board]
        if readings is None:
            health.failures += 1
            if health.failures >= self.timing.offline_after_polls:
                health.declared_offline = True
                if not health.offline:
                    health.offline = True
                    for cell in members:
                        self._door_unknown(batch, cell, now_ms)
                    batch.event(
                        "board_offline", None,
                        {"board": board, "failures": health.failures}, alarm=True,
                    )
            return batch.finish()
        at_boot = not health.reported
        health.failures = 0
        health.reported = True
        if health.offline:
            health.offline = False
            batch.event("board_online", None, {"board": board})
        for cell in members:
            door_closed, item = readings.get(cell.spec.lock, (None, None))
            self._reading(batch, cell, door_closed, item, now_ms, at_boot)
        return batch.finish()

    def _door_unknown(self, batch: _Batch, cell: Cell, now_ms: int) -> None:
        """The door can no longer be read: pause its timers, take no transition on it."""
        if cell.door == "unknown":
            return
        batch.touch(cell)
        cell.door = "unknown"
        cell.paused_at = now_ms

    def _resume(self, cell: Cell, now_ms: int) -> None:
        """The door is readable again: push its paused deadlines back by the pause."""
        if cell.paused_at is None:
            return
        shift = max(0, now_ms - cell.paused_at)
        cell.paused_at = None
        if cell.left_open_at is not None:
            cell.left_open_at += shift
        if cell.pending is not None:
            cell.pending.postpone(shift)

    def _reading(
        self,
        batch: _Batch,
        cell: Cell,
        door_closed: bool | None,
        item: bool | None,
        now_ms: int,
        at_boot: bool,
    ) -> None:
        cell.item_present = item
        if door_closed is None:
            self._door_unknown(batch, cell, now_ms)
            return
        new = "closed" if door_closed else "open"
        before = cell.last_door  # what the door was when last read, across any unknown spell
        if cell.door == new and before == new:
            return
        batch.touch(cell)
        self._resume(cell, now_ms)
        cell.door = new
        cell.last_door = new
        if before is None:
            # First reading ever of this sensor: nothing to compare with, no alarm.
            if new == "open":
                cell.door_open_since = now_ms
                cell.left_open_at = now_ms + self.timing.door_left_open_ms
        elif before != new:
            if new == "open":
                self._door_opened(batch, cell, now_ms, at_boot)
            else:
                self._door_closed(batch, cell, now_ms)

    def _door_opened(self, batch: _Batch, cell: Cell, now_ms: int, at_boot: bool) -> None:
        cell.door_open_since = now_ms
        cell.left_open_at = now_ms + self.timing.door_left_open_ms
        pending = cell.pending
        if pending is not None and not pending.opened:
            pending.opened = True
            pending.confirm_at = None
            pending.cancel_at = None
            batch.event(
                "door_opened", cell,
                _with_ref({"purpose": pending.purpose, "attempt": pending.attempt}, pending.ref),
            )
            return
        batch.event("forced_open", cell, {"at_boot": at_boot, "state": cell.state}, alarm=True)
        self._block(batch, cell, "forced_open", now_ms)

    def _door_closed(self, batch: _Batch, cell: Cell, now_ms: int) -> None:
        opened_at = cell.door_open_since
        cell.door_open_since = None
        cell.left_open_at = None
        pending = cell.pending
        data: dict[str, Any] = {"open_ms": now_ms - opened_at if opened_at is not None else None}
        if pending is not None:
            data["purpose"] = pending.purpose
            _with_ref(data, pending.ref)
        batch.event("door_closed", cell, data)
        if pending is None or not pending.opened:
            return
        cell.pending = None
        self._complete(batch, cell, pending, now_ms)

    def _complete(self, batch: _Batch, cell: Cell, pending: PendingOpen, now_ms: int) -> None:
        """The door closed after the authorised open: finish what the open was for."""
        purpose = PURPOSES[pending.purpose]
        data: dict[str, Any] = {"item_present": cell.item_present}
        finish = _COMPLETIONS[purpose.completion]
        if not finish(self, cell, pending, data, now_ms):
            # The cell changed under the request (cannot happen through this API).
            batch.event(
                purpose.cancelled, cell,
                _with_ref({"reason": "state_changed", "purpose": purpose.name}, pending.ref),
            )
            return
        batch.event(purpose.completed, cell, _with_ref(data, pending.ref))

    def _occupy(self, cell: Cell, pending: PendingOpen, data: dict[str, Any], now_ms: int) -> bool:
        if cell.state != FREE:
            return False
        tenancy = copy.deepcopy(pending.tenancy) or Tenancy(f"{cell.spec.id}-{now_ms}")
        if tenancy.started_at is None:
            tenancy.started_at = now_ms
            tenancy.named -= {"started_at"}
        if tenancy.due_at is None:
            # A rental says how long it may run once started (its paid time or limit).
            after = tenancy.due_after_ms
            tenancy.due_after_ms = None
            tenancy.named -= {"due_after_ms"}
            after = self.timing.storage_limit_ms if after is None else int(after)
            tenancy.due_at = tenancy.started_at + after
            tenancy.named -= {"due_at"}
        cell.tenancy = tenancy
        cell.overdue_announced = False
        cell.trigger("occupy", now_ms)
        data["tenancy"] = public_tenancy(tenancy)
        return True

    def _vacate(self, cell: Cell, pending: PendingOpen, data: dict[str, Any], now_ms: int) -> bool:
        if cell.state not in (OCCUPIED, OVERDUE):
            return False
        data["tenancy"] = public_tenancy(cell.tenancy)
        data["overdue"] = cell.state == OVERDUE
        cell.tenancy = None
        cell.overdue_announced = False
        cell.trigger("vacate", now_ms)
        return True

    def _release(self, cell: Cell, pending: PendingOpen, data: dict[str, Any],
                 now_ms: int) -> bool:
        if cell.tenancy is None:
            return False
        # The operator took the things out: the tenancy ends as seized, the cell is free.
        data["tenancy"] = {**(public_tenancy(cell.tenancy) or {}), "outcome": "seized"}
        data["was"] = cell.state
        cell.tenancy = None
        cell.overdue_announced = False
        cell.block_reason = None
        cell.trigger("release", now_ms)
        return True

    def _nothing(self, cell: Cell, pending: PendingOpen, data: dict[str, Any],
                 now_ms: int) -> bool:
        data["state"] = cell.state
        if cell.tenancy is not None:
            data["tenancy_id"] = cell.tenancy.id
        return True

    # ----------------------------------------------------------------- timers

    def tick(self, now_ms: int) -> list[Action]:
        """Fire every timer whose deadline is at or before now_ms."""
        batch = _Batch()
        for cell in self._cells.values():
            tenancy = cell.tenancy
            if (
                tenancy is not None
                and not cell.overdue_announced
                and tenancy.due_at is not None
                and now_ms >= tenancy.due_at
            ):
                self._announce_overdue(batch, cell, now_ms)
            if cell.door == "unknown" or not self._boards[cell.spec.board].reported:
                continue  # door timers wait for a trustworthy reading
            pending = cell.pending
            if pending is not None and not pending.opened:
                if pending.cancel_at is not None and now_ms >= pending.cancel_at:
                    self._cancel(batch, cell, "not_opened")
                elif pending.confirm_at is not None and now_ms >= pending.confirm_at:
                    self._unconfirmed(batch, cell, pending, now_ms)
            if (
                cell.door == "open"
                and cell.left_open_at is not None
                and now_ms >= cell.left_open_at
            ):
                cell.left_open_at = None
                data: dict[str, Any] = {"open_since": cell.door_open_since}
                if cell.pending is not None:
                    _with_ref(data, cell.pending.ref)
                batch.event("door_left_open", cell, data, alarm=True)
        return batch.finish()

    def _unconfirmed(
        self, batch: _Batch, cell: Cell, pending: PendingOpen, now_ms: int
    ) -> None:
        """The sensor never saw the door open: one retry, then lock_fault and block (rule 8)."""
        batch.touch(cell)
        if pending.attempt < 2:
            pending.attempt = 2
            pending.confirm_at = now_ms + self.timing.unlock_confirm_ms
            data = _with_ref({"purpose": pending.purpose, "attempt": 2}, pending.ref)
            batch.event("unlock_retry", cell, data)
            batch.unlock(cell, 2)
            return
        batch.event(
            "lock_fault", cell,
            _with_ref({"purpose": pending.purpose, "attempts": pending.attempt}, pending.ref),
            alarm=True,
        )
        self._cancel(batch, cell, "lock_fault")
        self._block(batch, cell, "lock_fault", now_ms)

    def _announce_overdue(self, batch: _Batch, cell: Cell, now_ms: int) -> None:
        """The tenancy's time ran out: occupied -> overdue; a blocked cell only gets the event."""
        tenancy = cell.tenancy
        assert tenancy is not None
        batch.touch(cell)
        cell.overdue_announced = True
        if cell.state == OCCUPIED:
            cell.trigger("expire", now_ms)
        batch.event(
            "overdue", cell,
            {"tenancy_id": tenancy.id, "due_at": tenancy.due_at, "state": cell.state},
        )


#: What each kind of completion does to the cell; False: the cell no longer fits it.
_COMPLETIONS: dict[
    Completion, Callable[[LockerMachine, Cell, PendingOpen, dict[str, Any], int], bool]
] = {
    Completion.OCCUPY: LockerMachine._occupy,
    Completion.VACATE: LockerMachine._vacate,
    Completion.RELEASE: LockerMachine._release,
    Completion.NOTHING: LockerMachine._nothing,
}
