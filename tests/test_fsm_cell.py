"""One cell's life under the rules of docs/architecture.md "Cell state machine", with explicit
times."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from daemon.fsm import Action, CellChanged, CellSpec, Event, LockerMachine, Refused, Timing, Unlock
from tests.fixtures.fsm_actions import event, types

HOUR = 3_600_000
T = Timing()  # 60 s open timeout, 3 s unlock confirm, 120 s left open, 72 h storage, 3 polls
CELLS = (CellSpec(1, "A", 1, "M"), CellSpec(2, "A", 2, "S"), CellSpec(3, "B", 1, "L"))


class Rig:
    """A LockerMachine plus the physical doors it reads, polled through their boards."""

    def __init__(
        self,
        timing: Timing = T,
        state: dict[str, Any] | None = None,
        cells: Sequence[CellSpec] = CELLS,
        poll_at: int | None = 0,
    ) -> None:
        self.m = LockerMachine(cells, timing, state, now_ms=0)
        self.specs = {c.id: c for c in cells}
        #: cell id -> (door_closed, item_present) as the sensors would report it.
        self.phys: dict[int, tuple[bool | None, bool | None]] = {c.id: (True, False) for c in cells}
        if poll_at is not None:
            for board in sorted({c.board for c in cells}):
                self.poll(board, poll_at)

    def poll(self, board: str, now: int) -> list[Action]:
        readings = {s.lock: self.phys[s.id] for s in self.specs.values() if s.board == board}
        return self.m.board_polled(board, readings, now)

    def door(
        self, cell_id: int, now: int, *, closed: bool | None, item: bool = False
    ) -> list[Action]:
        self.phys[cell_id] = (closed, item)
        return self.poll(self.specs[cell_id].board, now)

    def fail(self, board: str, now: int) -> list[Action]:
        return self.m.board_polled(board, None, now)

    def state(self, cell_id: int) -> str:
        return self.m.cell_view(cell_id)["state"]

    def cell(self, cell_id: int) -> dict[str, Any]:
        return self.m.snapshot()["cells"][str(cell_id)]

    def occupy(self, cell_id: int, now: int, **tenancy: Any) -> dict[str, Any]:
        """Run a whole deposit ending at now + 2000; returns the stored tenancy."""
        self.m.command(cell_id, "deposit", now, tenancy=tenancy or None)
        self.door(cell_id, now + 1000, closed=False)
        self.door(cell_id, now + 2000, closed=True, item=True)
        assert self.state(cell_id) == "occupied"
        return self.m.tenancy(cell_id)


def unlocks(actions: Sequence[Action]) -> list[Unlock]:
    return [a for a in actions if isinstance(a, Unlock)]


def changed(actions: Sequence[Action]) -> set[int]:
    return {a.cell_id for a in actions if isinstance(a, CellChanged)}


# ---------------------------------------------------------------- rule 1: deposit


def test_deposit_open_then_close_makes_the_cell_occupied() -> None:
    rig = Rig()
    acts = rig.m.command(1, "deposit", 10_000, ref="cmd-1")
    assert acts == [
        Event("deposit_started", 1, {"board": "A", "lock": 1, "tenancy": {"id": "1-10000"},
                                     "ref": "cmd-1"}),
        Unlock(1, "A", 1, 1),
    ]
    acts = rig.door(1, 11_000, closed=False)
    opened = event(acts, "door_opened")
    assert opened.data["ref"] == "cmd-1" and opened.data["purpose"] == "deposit"
    assert rig.m.cell_view(1) == {"cell": 1, "state": "free", "door": "open", "size": "M",
                                  "since": 0}
    assert changed(acts) == {1}

    acts = rig.door(1, 15_000, closed=True, item=True)
    assert types(acts) == ["door_closed", "deposit_completed"]
    done = event(acts, "deposit_completed")
    assert done.data["ref"] == "cmd-1" and done.data["item_present"] is True
    assert done.data["tenancy"] == {"id": "1-10000", "started_at": 15_000,
                                    "due_at": 15_000 + T.storage_limit_ms}
    assert event(acts, "door_closed").data["open_ms"] == 4_000
    assert rig.m.cell_view(1) == {"cell": 1, "state": "occupied", "door": "closed", "size": "M",
                                  "since": 15_000}
    assert rig.m.tenancy(1) == done.data["tenancy"]
    assert rig.cell(1)["pending"] is None
    assert changed(acts) == {1}


def test_deposit_keeps_the_tenancy_fields_it_was_given() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, tenancy={"id": "t-9", "due_at": 5 * HOUR, "debt": 0,
                                            "tariff": [[3600, 100]]})
    rig.door(1, 1_000, closed=False)
    acts = rig.door(1, 2_000, closed=True)
    assert event(acts, "deposit_completed").data["tenancy"] == {
        "id": "t-9", "due_at": 5 * HOUR, "debt": 0, "tariff": [[3600, 100]], "started_at": 2_000}


def test_deposit_not_opened_in_time_is_cancelled_and_payment_voided() -> None:
    rig = Rig(Timing(open_timeout_ms=2_000, unlock_confirm_ms=5_000))
    rig.m.command(1, "deposit", 1_000, ref="r")
    assert rig.m.tick(2_999) == []
    acts = rig.m.tick(3_000)
    assert acts == [Event("deposit_cancelled", 1, {
        "board": "A", "lock": 1, "reason": "not_opened", "purpose": "deposit",
        "void_payment": True, "tenancy_id": "1-1000", "ref": "r"})]
    assert rig.state(1) == "free" and rig.cell(1)["pending"] is None
    assert rig.m.tick(100_000) == []
    # The cell takes a new deposit at once.
    assert unlocks(rig.m.command(1, "deposit", 100_001)) == [Unlock(1, "A", 1, 1)]


# ---------------------------------------------------------------- rule 2: pickup


def test_pickup_opens_then_frees_the_cell_with_the_tenancy_for_the_receipt() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0)
    acts = rig.m.command(1, "pickup", 50_000, ref="p")
    assert types(acts) == ["pickup_started"] and unlocks(acts) == [Unlock(1, "A", 1, 1)]
    assert acts.index(unlocks(acts)[0]) > 0  # Unlock after the event announcing it
    assert event(acts, "pickup_started").data["tenancy_id"] == tenancy["id"]
    rig.door(1, 51_000, closed=False)
    assert rig.state(1) == "occupied"
    acts = rig.door(1, 52_000, closed=True, item=False)
    done = event(acts, "pickup_completed")
    assert done.data["tenancy"] == tenancy and done.data["ref"] == "p"
    assert done.data["overdue"] is False and done.data["item_present"] is False
    assert rig.m.cell_view(1)["state"] == "free" and rig.m.cell_view(1)["since"] == 52_000
    assert rig.m.tenancy(1) is None


# ---------------------------------------------------------------- rule 3: overdue


def test_occupied_becomes_overdue_when_the_tenancy_runs_out() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0, due_at=2 * HOUR)
    assert rig.m.tick(2 * HOUR - 1) == []
    acts = rig.m.tick(2 * HOUR)
    assert acts == [
        Event("overdue", 1, {"board": "A", "lock": 1, "tenancy_id": tenancy["id"],
                             "due_at": 2 * HOUR, "state": "overdue"}),
        CellChanged(1),
    ]
    assert rig.m.cell_view(1)["since"] == 2 * HOUR
    assert rig.m.tick(3 * HOUR) == []  # once
    # Pickup from overdue frees the cell and says it was overdue.
    rig.m.command(1, "pickup", 3 * HOUR)
    rig.door(1, 3 * HOUR + 1, closed=False)
    done = event(rig.door(1, 3 * HOUR + 2, closed=True), "pickup_completed")
    assert done.data["overdue"] is True and rig.state(1) == "free"


def test_default_due_at_is_the_storage_limit() -> None:
    rig = Rig(Timing(storage_limit_ms=HOUR))
    rig.occupy(1, 0)  # closes at 2000
    assert rig.m.tick(HOUR + 1_999) == []
    assert types(rig.m.tick(HOUR + 2_000)) == ["overdue"]


def test_overdue_deadline_passed_during_downtime_fires_at_first_tick_after_restore() -> None:
    rig = Rig()
    rig.occupy(1, 0, due_at=2 * HOUR)
    saved = rig.m.snapshot()
    # The daemon was down from 1 h to 5 h.
    again = Rig(state=saved, poll_at=None)
    acts = again.m.tick(5 * HOUR)
    assert types(acts) == ["overdue"] and again.state(1) == "overdue"
    assert again.m.cell_view(1)["since"] == 5 * HOUR


# ---------------------------------------------------------------- rule 4: temporary and open


def test_temporary_access_keeps_the_cell_occupied_and_the_billing() -> None:
    rig = Rig()
    rig.occupy(1, 0, debt=0, due_at=10 * HOUR)
    before = rig.cell(1)
    acts = rig.m.command(1, "temporary", HOUR, ref="t")
    assert types(acts) == ["temporary_access_started"] and len(unlocks(acts)) == 1
    rig.door(1, HOUR + 1_000, closed=False)
    acts = rig.door(1, HOUR + 9_000, closed=True, item=True)
    assert types(acts) == ["door_closed", "temporary_access_completed"]
    assert event(acts, "temporary_access_completed").data["ref"] == "t"
    after = rig.cell(1)
    assert after["state"] == "occupied" and after["tenancy"] == before["tenancy"]
    assert after["since"] == before["since"]


@pytest.mark.parametrize("how", ["due", "overdue"])
def test_temporary_access_is_refused_with_unpaid_debt(how: str) -> None:
    """Unpaid time is the tenancy's due time passed: refused before the tick made it overdue."""
    rig = Rig()
    if how == "due":
        rig.occupy(1, 0, due_at=HOUR)
        now = HOUR + 1  # no tick yet: the cell still reads occupied
        assert rig.state(1) == "occupied"
        with pytest.raises(Refused) as checked:
            rig.m.check_command(1, "temporary", now)
        assert checked.value.reason == "debt"
    else:
        rig.occupy(1, 0, due_at=HOUR)
        rig.m.tick(HOUR)
        now = 2 * HOUR
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.command(1, "temporary", now)
    assert exc.value.reason == "debt"
    assert rig.m.snapshot() == before


def test_operator_opens_a_blocked_cell_and_it_stays_blocked() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0)
    rig.m.command(1, "block", 10_000, reason="collector")
    acts = rig.m.command(1, "open", 20_000, ref="cmd-7")
    assert types(acts) == ["open_started"] and unlocks(acts) == [Unlock(1, "A", 1, 1)]
    opened = event(rig.door(1, 21_000, closed=False), "door_opened")
    assert opened.data["ref"] == "cmd-7"
    acts = rig.door(1, 30_000, closed=True)
    assert types(acts) == ["door_closed", "open_completed"]
    assert event(acts, "open_completed").data == {
        "board": "A", "lock": 1, "item_present": False, "state": "blocked",
        "tenancy_id": tenancy["id"], "ref": "cmd-7"}
    cell = rig.cell(1)
    assert cell["state"] == "blocked" and cell["block_reason"] == "collector"
    assert rig.m.tenancy(1) == tenancy


@pytest.mark.parametrize("occupied", [False, True])
def test_operator_open_leaves_free_and_occupied_cells_as_they_were(occupied: bool) -> None:
    rig = Rig()
    if occupied:
        rig.occupy(1, 0)
    state = rig.state(1)
    rig.m.command(1, "open", 10_000)
    rig.door(1, 11_000, closed=False)
    assert types(rig.door(1, 12_000, closed=True)) == ["door_closed", "open_completed"]
    assert rig.state(1) == state


@pytest.mark.parametrize("kind", ["deposit", "pickup", "temporary"])
def test_customer_opens_are_refused_on_a_blocked_cell(kind: str) -> None:
    rig = Rig()
    if kind != "deposit":
        rig.occupy(1, 0)
    rig.m.command(1, "block", 5_000)
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.command(1, kind, 6_000)
    assert exc.value.reason == "blocked"
    assert rig.m.snapshot() == before


def test_a_second_open_while_one_is_pending_is_busy() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0)
    for kind in ("open", "deposit"):
        with pytest.raises(Refused) as exc:
            rig.m.command(1, kind, 100)
        assert exc.value.reason == "busy"
    rig.door(1, 500, closed=False)
    with pytest.raises(Refused) as exc:
        rig.m.command(1, "open", 600)
    assert exc.value.reason == "busy"


def test_open_is_refused_while_the_door_is_open() -> None:
    rig = Rig(poll_at=None)
    rig.phys[1] = (False, False)  # found open at the very first reading: adopted, no alarm
    assert types(rig.poll("A", 0)) == []
    for kind in ("deposit", "open"):
        with pytest.raises(Refused) as exc:
            rig.m.command(1, kind, 100)
        assert exc.value.reason == "door_open"


# ---------------------------------------------------------------- rule 5: block / unblock


def test_block_keeps_the_tenancy_and_unblock_returns_to_occupied() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0, due_at=10 * HOUR)
    acts = rig.m.command(1, "block", HOUR, reason="inspection", ref="b1")
    assert acts == [Event("blocked", 1, {"board": "A", "lock": 1, "reason": "inspection",
                                         "ref": "b1"}), CellChanged(1)]
    assert rig.m.tenancy(1) == tenancy and rig.cell(1)["block_reason"] == "inspection"
    acts = rig.m.command(1, "unblock", 2 * HOUR, ref="u1")
    assert acts == [Event("unblocked", 1, {"board": "A", "lock": 1, "state": "occupied",
                                           "ref": "u1"}), CellChanged(1)]
    assert rig.m.tenancy(1) == tenancy and rig.cell(1)["block_reason"] is None


def test_unblock_after_the_due_time_returns_to_overdue() -> None:
    rig = Rig()
    rig.occupy(1, 0, due_at=HOUR)
    rig.m.command(1, "block", 1_000_000)
    acts = rig.m.command(1, "unblock", 2 * HOUR)
    assert types(acts) == ["unblocked", "overdue"] and rig.state(1) == "overdue"


def test_overdue_while_blocked_is_announced_once_and_unblock_lands_in_overdue() -> None:
    rig = Rig()
    rig.occupy(1, 0, due_at=HOUR)
    rig.m.command(1, "block", 10_000)
    acts = rig.m.tick(HOUR)
    assert types(acts) == ["overdue"] and event(acts, "overdue").data["state"] == "blocked"
    assert rig.state(1) == "blocked"
    assert types(rig.m.command(1, "unblock", 2 * HOUR)) == ["unblocked"]
    assert rig.state(1) == "overdue"


def test_unblock_without_tenancy_returns_to_free() -> None:
    rig = Rig()
    rig.m.command(1, "block", 1_000)
    assert rig.m.cell_view(1) == {"cell": 1, "state": "blocked", "door": "closed", "size": "M",
                                  "since": 1_000}
    rig.m.command(1, "unblock", 2_000)
    assert rig.m.cell_view(1)["state"] == "free" and rig.m.cell_view(1)["since"] == 2_000


def test_unblock_of_a_cell_that_is_not_blocked_is_refused() -> None:
    rig = Rig()
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.command(1, "unblock", 1)
    assert exc.value.reason == "not_blocked" and rig.m.snapshot() == before


def test_block_cancels_a_pending_deposit() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    acts = rig.m.command(1, "block", 1_000, reason="operator", ref="b")
    assert types(acts) == ["deposit_cancelled", "blocked"]
    cancelled = event(acts, "deposit_cancelled")
    assert cancelled.data["ref"] == "d" and cancelled.data["reason"] == "blocked"
    assert cancelled.data["void_payment"] is True
    assert rig.cell(1)["pending"] is None
    assert rig.m.tick(100_000) == []  # no retry, no lock fault for the dropped request


# ---------------------------------------------------------------- rule 6: forced open


def test_door_opened_without_an_authorised_open_is_forced_open_and_blocks() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0)
    acts = rig.door(1, 50_000, closed=False, item=True)
    assert types(acts) == ["forced_open", "blocked"]
    alarm = event(acts, "forced_open")
    assert alarm.alarm is True and alarm.data == {"board": "A", "lock": 1, "at_boot": False,
                                                  "state": "occupied"}
    assert event(acts, "blocked").data["reason"] == "forced_open"
    assert rig.m.cell_view(1) == {"cell": 1, "state": "blocked", "door": "open", "size": "M",
                                  "since": 50_000}
    assert rig.m.tenancy(1) == tenancy
    assert types(rig.door(1, 60_000, closed=True)) == ["door_closed"]


def test_reopening_after_a_completed_pickup_is_forced_open() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    rig.m.command(1, "pickup", 10_000)
    rig.door(1, 11_000, closed=False)
    rig.door(1, 12_000, closed=True)
    assert types(rig.door(1, 13_000, closed=False)) == ["forced_open", "blocked"]


# ---------------------------------------------------------------- rule 7: door left open


def test_door_left_open_alarms_once_per_opening() -> None:
    rig = Rig()
    rig.m.command(1, "open", 0, ref="o")
    rig.door(1, 1_000, closed=False)
    assert rig.m.tick(1_000 + T.door_left_open_ms - 1) == []
    acts = rig.m.tick(1_000 + T.door_left_open_ms)
    assert acts == [Event("door_left_open", 1, {"board": "A", "lock": 1, "open_since": 1_000,
                                                "ref": "o"}, alarm=True)]
    assert rig.m.tick(10 * T.door_left_open_ms) == []
    acts = rig.door(1, 10 * T.door_left_open_ms, closed=True)
    assert types(acts) == ["door_closed", "open_completed"]
    # A new opening gets its own alarm.
    rig.m.command(1, "open", 2_000_000)
    rig.door(1, 2_000_100, closed=False)
    assert types(rig.m.tick(2_000_100 + T.door_left_open_ms)) == ["door_left_open"]


# ---------------------------------------------------------------- rule 8: stuck lock


def test_stuck_lock_retries_once_then_lock_fault_blocks_the_cell() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    assert rig.m.tick(2_999) == []
    acts = rig.m.tick(3_000)
    assert acts == [
        Event("unlock_retry", 1, {"board": "A", "lock": 1, "purpose": "deposit", "attempt": 2,
                                  "ref": "d"}),
        Unlock(1, "A", 1, 2),
    ]
    assert rig.m.tick(5_999) == []
    acts = rig.m.tick(6_000)
    assert types(acts) == ["lock_fault", "deposit_cancelled", "blocked"]
    fault = event(acts, "lock_fault")
    assert fault.alarm is True and fault.data["ref"] == "d" and fault.data["attempts"] == 2
    assert event(acts, "deposit_cancelled").data["reason"] == "lock_fault"
    assert event(acts, "deposit_cancelled").data["void_payment"] is True
    assert event(acts, "blocked").data["reason"] == "lock_fault"
    assert unlocks(acts) == [] and rig.state(1) == "blocked"
    assert rig.m.tick(1_000_000) == []


def test_the_retry_can_still_succeed() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0)
    rig.m.tick(3_000)
    opened = event(rig.door(1, 4_000, closed=False), "door_opened")
    assert opened.data["attempt"] == 2
    assert types(rig.door(1, 8_000, closed=True)) == ["door_closed", "deposit_completed"]
    assert rig.m.tick(100_000) == []


def test_stuck_lock_on_pickup_keeps_the_tenancy() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, 0)
    rig.m.command(1, "pickup", 10_000, ref="p")
    rig.m.tick(13_000)
    acts = rig.m.tick(16_000)
    assert types(acts) == ["lock_fault", "pickup_cancelled", "blocked"]
    assert rig.state(1) == "blocked" and rig.m.tenancy(1) == tenancy
    rig.m.command(1, "unblock", 20_000)
    assert rig.state(1) == "occupied"
