"""The cell machines' storage additions: tenancy updates, eviction, due_after_ms, secrets, clock
jumps and check_command, driven with explicit times and fake board readings."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.fsm import Action, CellChanged, CellSpec, Event, LockerMachine, Refused, Timing, Unlock
from daemon.fsm.cell import public_tenancy
from daemon.fsm.tenancy import SECRET_KEY, Tenancy, shift_times
from tests.fixtures.fsm_actions import event, types

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_767_225_600_000  # a real epoch: clock jumps move it by hours
T = Timing()  # 60 s open timeout, 3 s unlock confirm, 120 s left open, 72 h storage, 3 polls
CELLS = (CellSpec(1, "A", 1, "M"), CellSpec(2, "A", 2, "S"), CellSpec(3, "B", 1, "L"))
PIN = "493817"
PHONE = "+79990001122"


class Rig:
    """A LockerMachine plus the physical doors it reads, polled through their boards."""

    def __init__(self, timing: Timing = T, poll_at: int | None = T0) -> None:
        self.m = LockerMachine(CELLS, timing, now_ms=T0)
        self.specs = {c.id: c for c in CELLS}
        self.phys: dict[int, tuple[bool | None, bool | None]] = {c.id: (True, False) for c in CELLS}
        #: Every action the rig saw, in order.
        self.log: list[Action] = []
        if poll_at is not None:
            for board in sorted({c.board for c in CELLS}):
                self.poll(board, poll_at)

    def run(self, actions: list[Action]) -> list[Action]:
        self.log.extend(actions)
        return actions

    def poll(self, board: str, now: int) -> list[Action]:
        readings = {s.lock: self.phys[s.id] for s in self.specs.values() if s.board == board}
        return self.run(self.m.board_polled(board, readings, now))

    def door(self, cell_id: int, now: int, *, closed: bool | None, item: bool = False
             ) -> list[Action]:
        self.phys[cell_id] = (closed, item)
        return self.poll(self.specs[cell_id].board, now)

    def cmd(self, cell_id: int, kind: str, now: int, **kwargs: Any) -> list[Action]:
        return self.run(self.m.command(cell_id, kind, now, **kwargs))

    def tick(self, now: int) -> list[Action]:
        return self.run(self.m.tick(now))

    def update(self, cell_id: int, changes: dict[str, Any], now: int,
               event: tuple[str, dict[str, Any]] | None = None) -> list[Action]:
        return self.run(self.m.update_tenancy(cell_id, changes, now, event))

    def state(self, cell_id: int) -> str:
        return self.m.cell_view(cell_id)["state"]

    def cell(self, cell_id: int) -> dict[str, Any]:
        return self.m.snapshot()["cells"][str(cell_id)]

    def occupy(self, cell_id: int, now: int, **tenancy: Any) -> dict[str, Any]:
        """Run a whole deposit ending at now + 2000; returns the stored tenancy."""
        self.cmd(cell_id, "deposit", now, tenancy=tenancy or None)
        self.door(cell_id, now + 1000, closed=False)
        self.door(cell_id, now + 2000, closed=True, item=True)
        assert self.state(cell_id) == "occupied"
        return self.m.tenancy(cell_id)

    def open_and_close(self, cell_id: int, now: int) -> list[Action]:
        """The door of an accepted open: opened at now + 1000, closed at now + 2000."""
        self.door(cell_id, now + 1000, closed=False)
        return self.door(cell_id, now + 2000, closed=True)


def refused(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except Refused as exc:
        return exc.reason
    return None


# ---------------------------------------------------------------- update_tenancy


def test_update_tenancy_merges_the_changes_and_emits_the_event() -> None:
    rig = Rig()
    before = rig.occupy(1, T0, id="t-1", paid=10000, mode="partial", due_at=T0 + HOUR)
    acts = rig.update(1, {"paid": 19000, "payments": [{"amount": 9000}]}, T0 + 10 * MIN,
                      event=("rental_extended", {"amount": 9000, "paid_total": 19000}))
    assert acts == [Event("rental_extended", 1, {"board": "A", "lock": 1, "tenancy_id": "t-1",
                                                 "amount": 9000, "paid_total": 19000})]
    assert rig.m.tenancy(1) == {**before, "paid": 19000, "payments": [{"amount": 9000}]}
    assert rig.state(1) == "occupied"


def test_update_tenancy_without_event_returns_no_event() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    assert rig.update(1, {"note": "x"}, T0 + MIN) == []
    assert rig.m.tenancy(1)["note"] == "x"


def test_update_tenancy_keeps_its_own_copy_of_the_changes() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    payments = [{"amount": 1}]
    rig.update(1, {"payments": payments}, T0 + MIN)
    payments.append({"amount": 2})
    assert rig.m.tenancy(1)["payments"] == [{"amount": 1}]


def test_moving_due_at_past_now_takes_an_overdue_cell_back_and_rearms_the_timer() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    assert types(rig.tick(T0 + HOUR)) == ["overdue"] and rig.state(1) == "overdue"
    assert rig.tick(T0 + 90 * MIN) == []  # announced once

    acts = rig.update(1, {"due_at": T0 + 3 * HOUR}, T0 + 2 * HOUR,
                      event=("rental_extended", {"due_at": T0 + 3 * HOUR}))
    assert types(acts) == ["rental_extended"] and CellChanged(1) in acts
    assert rig.state(1) == "occupied"
    assert rig.m.cell_view(1)["since"] == T0 + 2 * HOUR
    assert rig.cell(1)["overdue_announced"] is False

    assert rig.tick(T0 + 3 * HOUR - 1) == []
    acts = rig.tick(T0 + 3 * HOUR)
    assert types(acts) == ["overdue"] and rig.state(1) == "overdue"
    assert event(acts, "overdue").data["due_at"] == T0 + 3 * HOUR


def test_extending_an_occupied_cell_moves_its_overdue_time() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    acts = rig.update(1, {"due_at": T0 + 2 * HOUR}, T0 + 30 * MIN)
    assert acts == [] and rig.state(1) == "occupied"
    assert rig.tick(T0 + HOUR) == []
    assert types(rig.tick(T0 + 2 * HOUR)) == ["overdue"]


def test_a_due_at_still_in_the_past_leaves_the_cell_overdue() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    rig.tick(T0 + HOUR)
    rig.update(1, {"due_at": T0 + 90 * MIN}, T0 + 2 * HOUR)
    assert rig.state(1) == "overdue"
    assert rig.tick(T0 + 3 * HOUR) == []  # nothing re-armed: no second overdue event


def test_changes_without_due_at_leave_an_overdue_cell_overdue() -> None:
    """A debt paid at pickup: the rental still ended overdue."""
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    rig.tick(T0 + HOUR)
    rig.update(1, {"paid": 50000}, T0 + 2 * HOUR, event=("debt_paid", {}))
    assert rig.state(1) == "overdue"


def test_a_waiver_clearing_due_at_ends_overdue_for_good() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    rig.tick(T0 + HOUR)
    acts = rig.update(1, {"due_at": None, "billing_stopped_at": T0 + 2 * HOUR}, T0 + 2 * HOUR,
                      event=("debt_waived", {"amount": 9000}))
    assert event(acts, "debt_waived").data["tenancy_id"] == "t-1"
    assert rig.state(1) == "occupied"
    assert rig.tick(T0 + 1000 * HOUR) == []


def test_extending_a_blocked_overdue_cell_keeps_it_blocked_then_unblock_is_occupied() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR)
    rig.cmd(1, "block", T0 + 10 * MIN, reason="inspection")
    rig.tick(T0 + HOUR)  # announced while blocked
    rig.update(1, {"due_at": T0 + 5 * HOUR}, T0 + 2 * HOUR)
    assert rig.state(1) == "blocked"
    rig.cmd(1, "unblock", T0 + 3 * HOUR)
    assert rig.state(1) == "occupied"
    assert types(rig.tick(T0 + 5 * HOUR)) == ["overdue"]


def _without_tenancy(setup: str) -> Rig:
    """Cell 1 with no tenancy to act on: never rented, blocked, deposit pending, or picked up."""
    rig = Rig()
    if setup == "blocked":
        rig.cmd(1, "block", T0 + 1)
    elif setup == "pending_deposit":
        rig.cmd(1, "deposit", T0 + 1, tenancy={"id": "t-1"})
    elif setup == "after_pickup":
        rig.occupy(1, T0, id="t-1")
        rig.cmd(1, "pickup", T0 + MIN)
        rig.open_and_close(1, T0 + MIN)
        assert rig.state(1) == "free"
    return rig


@pytest.mark.parametrize("setup", ["free", "blocked", "pending_deposit", "after_pickup"])
def test_update_tenancy_without_a_tenancy_is_refused_and_changes_nothing(setup: str) -> None:
    rig = _without_tenancy(setup)
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.update_tenancy(1, {"due_at": T0 + HOUR, "paid": 1}, T0 + 2 * MIN,
                             event=("rental_extended", {}))
    assert exc.value.reason == "not_occupied"
    assert rig.m.snapshot() == before


def test_update_tenancy_of_an_unknown_cell_is_refused() -> None:
    rig = Rig()
    with pytest.raises(Refused) as exc:
        rig.m.update_tenancy(99, {}, T0)
    assert exc.value.reason == "unknown_cell"


# ---------------------------------------------------------------- evict


def _evict_cycle(rig: Rig, now: int, was: str) -> None:
    tenancy = rig.m.tenancy(1)
    acts = rig.cmd(1, "evict", now, ref="ev-1", reason="abandoned 40 days")
    assert acts[:2] == [
        Event("eviction_started", 1, {"board": "A", "lock": 1, "tenancy_id": tenancy["id"],
                                      "note": "abandoned 40 days", "ref": "ev-1"}),
        Unlock(1, "A", 1, 1),
    ]
    assert rig.state(1) == was  # nothing ends before the door moved
    opened = rig.door(1, now + 1000, closed=False)
    assert event(opened, "door_opened").data == {"board": "A", "lock": 1, "purpose": "evict",
                                                 "attempt": 1, "ref": "ev-1"}
    assert rig.state(1) == was
    acts = rig.door(1, now + 2000, closed=True, item=False)
    assert types(acts) == ["door_closed", "eviction_completed"]
    done = event(acts, "eviction_completed")
    public = {k: v for k, v in tenancy.items() if k != SECRET_KEY}
    assert done.data == {"board": "A", "lock": 1, "item_present": False,
                         "tenancy": {**public, "outcome": "seized"}, "was": was, "ref": "ev-1"}
    assert rig.state(1) == "free"
    cell = rig.cell(1)
    assert cell["tenancy"] is None and cell["block_reason"] is None
    assert cell["pending"] is None and cell["overdue_announced"] is False
    assert rig.m.cell_view(1)["since"] == now + 2000
    # The cell takes a new deposit at once and no old timer fires on it.
    assert rig.tick(now + 1000 * HOUR) == []
    rig.cmd(1, "deposit", now + 3000)


def test_evict_an_occupied_cell() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR, secret={"pin": PIN})
    _evict_cycle(rig, T0 + 10 * MIN, "occupied")


def test_evict_an_overdue_cell() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR, secret={"pin": PIN})
    rig.tick(T0 + HOUR)
    _evict_cycle(rig, T0 + 40 * 24 * HOUR, "overdue")


@pytest.mark.parametrize("overdue", [False, True])
def test_evict_a_blocked_cell_with_a_tenancy_clears_the_block(overdue: bool) -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR, secret={"pin": PIN})
    rig.cmd(1, "block", T0 + MIN, reason="abandoned")
    if overdue:
        rig.tick(T0 + HOUR)
    assert rig.cell(1)["block_reason"] == "abandoned"
    _evict_cycle(rig, T0 + 2 * HOUR, "blocked")


@pytest.mark.parametrize("setup", ["free", "blocked", "pending_deposit"])
def test_evict_without_a_tenancy_is_refused_and_changes_nothing(setup: str) -> None:
    rig = _without_tenancy(setup)
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.command(1, "evict", T0 + 2, reason="note")
    assert exc.value.reason == "not_occupied"
    assert rig.m.snapshot() == before


def test_evict_not_opened_in_time_is_cancelled_and_keeps_the_tenancy() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, T0, id="t-1", due_at=T0 + 10 * HOUR)
    rig.cmd(1, "block", T0 + MIN, reason="abandoned")
    rig.cmd(1, "evict", T0 + 2 * MIN, ref="ev", reason="note")  # nobody opens the door
    acts = rig.tick(T0 + 2 * MIN + T.open_timeout_ms)
    assert "eviction_cancelled" in types(acts)
    assert rig.m.tenancy(1) == tenancy and rig.state(1) == "blocked"


# ---------------------------------------------------------------- due_after_ms at deposit


def test_due_after_ms_sets_due_at_from_the_door_closing() -> None:
    rig = Rig()
    rig.cmd(1, "deposit", T0, tenancy={"id": "t-1", "due_after_ms": 90 * MIN})
    rig.door(1, T0 + 5_000, closed=False)
    acts = rig.door(1, T0 + 9_000, closed=True, item=True)
    tenancy = event(acts, "deposit_completed").data["tenancy"]
    assert tenancy["started_at"] == T0 + 9_000
    assert tenancy["due_at"] == T0 + 9_000 + 90 * MIN
    assert "due_after_ms" not in tenancy and "due_after_ms" not in rig.m.tenancy(1)
    assert rig.tick(T0 + 9_000 + 90 * MIN - 1) == []
    assert types(rig.tick(T0 + 9_000 + 90 * MIN)) == ["overdue"]


def test_due_after_ms_none_means_the_storage_limit() -> None:
    rig = Rig(Timing(storage_limit_ms=2 * HOUR))
    tenancy = rig.occupy(1, T0, id="t-1", due_after_ms=None)
    assert tenancy["due_at"] == T0 + 2000 + 2 * HOUR


def test_due_after_ms_zero_is_due_at_once() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, T0, id="t-1", due_after_ms=0)
    assert tenancy["due_at"] == tenancy["started_at"]
    assert types(rig.tick(T0 + 2000)) == ["overdue"]


def test_an_explicit_due_at_wins_over_due_after_ms() -> None:
    rig = Rig()
    tenancy = rig.occupy(1, T0, id="t-1", due_at=T0 + 5 * HOUR, due_after_ms=HOUR)
    assert tenancy["due_at"] == T0 + 5 * HOUR


@given(st.integers(0, 30 * 24 * HOUR), st.integers(1, 59_000))
def test_due_at_is_started_at_plus_due_after(after: int, close_after: int) -> None:
    rig = Rig()
    rig.cmd(1, "deposit", T0, tenancy={"id": "t", "due_after_ms": after})
    rig.door(1, T0 + close_after, closed=False)
    rig.door(1, T0 + close_after + 1, closed=True)
    tenancy = rig.m.tenancy(1)
    assert tenancy["due_at"] == tenancy["started_at"] + after == T0 + close_after + 1 + after


# ---------------------------------------------------------------- secrets


def test_public_tenancy_strips_the_secret_and_copies() -> None:
    tenancy = Tenancy.from_flat({"id": "t", "secret": {"pin": PIN},
                                 "payments": [{"amount": 1}]})
    public = public_tenancy(tenancy)
    assert public == {"id": "t", "payments": [{"amount": 1}]}
    assert public is not None
    public["payments"].append({"amount": 2})
    assert tenancy.flat()["payments"] == [{"amount": 1}]
    assert tenancy.flat()["secret"] == {"pin": PIN}  # the original keeps it
    assert public_tenancy(None) is None
    assert public_tenancy(Tenancy("t")) == {"id": "t"}


def _leaks(actions: Sequence[Action]) -> list[Event]:
    return [a for a in actions if isinstance(a, Event)
            and (PIN in repr(a.data) or PHONE in repr(a.data) or SECRET_KEY in a.data
                 or SECRET_KEY in (a.data.get("tenancy") or {}))]


def test_no_event_of_a_rental_ever_carries_the_secret() -> None:
    rig = Rig()
    secret = {"pin": PIN, "phone": PHONE}
    rig.cmd(1, "deposit", T0, ref="d", tenancy={"id": "t-1", "due_after_ms": HOUR,
                                                "secret": secret, "paid": 10000})
    rig.open_and_close(1, T0)
    assert rig.m.tenancy(1)["secret"] == secret  # the locker's own services still see it
    rig.cmd(1, "temporary", T0 + 10 * MIN, ref="tmp")
    rig.open_and_close(1, T0 + 10 * MIN)
    rig.update(1, {"paid": 19000, "due_at": T0 + 2 * HOUR}, T0 + 20 * MIN,
               event=("rental_extended", {"amount": 9000}))
    rig.cmd(1, "open", T0 + 30 * MIN, ref="op")
    rig.open_and_close(1, T0 + 30 * MIN)
    rig.cmd(1, "block", T0 + 40 * MIN, reason="inspection")
    rig.tick(T0 + 3 * HOUR)  # overdue while blocked
    rig.cmd(1, "unblock", T0 + 4 * HOUR)
    rig.cmd(1, "pickup", T0 + 5 * HOUR, ref="p")
    acts = rig.open_and_close(1, T0 + 5 * HOUR)
    assert event(acts, "pickup_completed").data["tenancy"]["id"] == "t-1"
    seen = set(types(rig.log))
    assert {"deposit_started", "deposit_completed", "temporary_access_completed",
            "rental_extended", "open_completed", "overdue", "unblocked",
            "pickup_completed"} <= seen
    assert _leaks(rig.log) == []


def test_no_event_of_a_cancelled_deposit_or_an_eviction_carries_the_secret() -> None:
    rig = Rig()
    secret = {"pin": PIN, "phone": PHONE}
    rig.cmd(2, "deposit", T0, tenancy={"id": "t-2", "secret": secret})
    rig.tick(T0 + T.open_timeout_ms)  # never opened: cancelled
    rig.cmd(1, "deposit", T0, tenancy={"id": "t-1", "secret": secret})
    rig.open_and_close(1, T0)
    rig.cmd(1, "evict", T0 + HOUR, reason="abandoned")
    rig.open_and_close(1, T0 + HOUR)
    assert {"deposit_cancelled", "eviction_started", "eviction_completed"} <= set(types(rig.log))
    assert _leaks(rig.log) == []


# ---------------------------------------------------------------- clock jumps


def test_shift_times_moves_every_at_integer_and_nothing_else() -> None:
    data = {
        "started_at": 10, "due_at": None, "flag_at": True, "due_after_ms": 5, "paid": 7,
        "payments": [{"paid_at": 1, "amount": 2}], "waiver": {"waived_at": 3, "amount": 4},
        "secret": {"pin": "1234"},
    }
    assert shift_times(data, 100) == {
        "started_at": 110, "due_at": None, "flag_at": True, "due_after_ms": 5, "paid": 7,
        "payments": [{"paid_at": 101, "amount": 2}], "waiver": {"waived_at": 103, "amount": 4},
        "secret": {"pin": "1234"},
    }
    assert data["started_at"] == 10  # a copy


def _jump_rig() -> tuple[Rig, int]:
    """Cell 1 occupied (due in 30 min), cell 2 a pending deposit, cell 3 open by an operator."""
    rig = Rig()
    rig.occupy(1, T0, id="t-1", due_at=T0 + HOUR, billing_stopped_at=None,
               payments=[{"paid_at": T0, "amount": 10000}])
    now = T0 + 30 * MIN
    rig.cmd(2, "deposit", now, ref="d2", tenancy={"id": "t-2", "created_at": now})
    rig.cmd(3, "open", now - 10_000, ref="o3")
    rig.door(3, now - 9_000, closed=False)  # left open: alarm due at now - 9 s + 120 s
    return rig, now


@pytest.mark.parametrize("delta", [5 * HOUR, -5 * HOUR])
def test_clock_jump_moves_every_stored_time(delta: int) -> None:
    rig, now = _jump_rig()
    before = rig.m.snapshot()
    rig.m.clock_jumped(delta)
    after = rig.m.snapshot()
    for cid in ("1", "2", "3"):
        assert after["cells"][cid]["since"] == before["cells"][cid]["since"] + delta
    t_before, t_after = before["cells"]["1"]["tenancy"], after["cells"]["1"]["tenancy"]
    assert t_after["started_at"] == t_before["started_at"] + delta
    assert t_after["due_at"] == t_before["due_at"] + delta
    assert t_after["payload"]["payments"] == [{"paid_at": T0 + delta, "amount": 10000}]
    assert t_after["id"] == "t-1" and t_after["payload"]["billing_stopped_at"] is None
    p_before, p_after = before["cells"]["2"]["pending"], after["cells"]["2"]["pending"]
    assert p_after["confirm_at"] == p_before["confirm_at"] + delta
    assert p_after["cancel_at"] == p_before["cancel_at"] + delta
    assert p_after["tenancy"]["payload"]["created_at"] == now + delta
    c_before, c_after = before["cells"]["3"], after["cells"]["3"]
    assert c_after["door_open_since"] == c_before["door_open_since"] + delta
    assert c_after["left_open_at"] == c_before["left_open_at"] + delta
    assert after["boards"] == before["boards"]


def _timers_fire_in_order(rig: Rig, now: int, jump: int) -> None:
    """Every timer fires exactly as long after the jump as it had left before it."""
    assert rig.tick(now + jump) == []
    assert rig.state(1) == "occupied"
    assert rig.m.pending_purpose(2) == "deposit"
    confirm = now + jump + T.unlock_confirm_ms
    assert rig.tick(confirm - 1) == []
    assert types(rig.tick(confirm)) == ["unlock_retry"]
    cancel = now + jump + T.open_timeout_ms
    acts = rig.tick(cancel)
    assert types(acts) == ["deposit_cancelled"] and event(acts, "deposit_cancelled").cell_id == 2
    left_open = now - 9_000 + T.door_left_open_ms + jump
    assert rig.tick(left_open - 1) == []
    assert types(rig.tick(left_open)) == ["door_left_open"]
    due = T0 + HOUR + jump
    assert rig.tick(due - 1) == [] and rig.state(1) == "occupied"
    assert types(rig.tick(due)) == ["overdue"]


def test_after_a_forward_jump_nothing_fires_early() -> None:
    rig, now = _jump_rig()
    rig.m.clock_jumped(5 * HOUR)
    _timers_fire_in_order(rig, now, 5 * HOUR)


def test_after_a_backward_jump_timers_fire_at_their_moved_times() -> None:
    """Not 5 h late: a backward step does not freeze the timers either."""
    rig, now = _jump_rig()
    rig.m.clock_jumped(-5 * HOUR)
    _timers_fire_in_order(rig, now, -5 * HOUR)


def test_without_the_shift_a_forward_jump_fires_everything_at_once() -> None:
    """Why clock_jumped exists: the deadlines are absolute wall-clock times."""
    rig, now = _jump_rig()
    fired = types(rig.tick(now + 5 * HOUR))
    assert {"overdue", "deposit_cancelled", "door_left_open"} <= set(fired)


def test_after_a_forward_jump_the_pending_deposit_can_still_complete() -> None:
    rig, now = _jump_rig()
    jump = 5 * HOUR
    rig.m.clock_jumped(jump)
    rig.tick(now + jump)
    rig.door(2, now + jump + 1000, closed=False)
    acts = rig.door(2, now + jump + 2000, closed=True, item=True)
    tenancy = event(acts, "deposit_completed").data["tenancy"]
    assert tenancy["started_at"] == now + jump + 2000


def test_clock_jump_shifts_a_paused_door() -> None:
    rig = Rig()
    rig.cmd(3, "open", T0 + 1_000, ref="o")
    for i in range(T.offline_after_polls):  # board B goes offline: its door is unknown
        rig.run(rig.m.board_polled("B", None, T0 + 2_000 + i))
    paused = rig.cell(3)["paused_at"]
    assert paused is not None and rig.cell(3)["door"] == "unknown"
    rig.m.clock_jumped(5 * HOUR)
    assert rig.cell(3)["paused_at"] == paused + 5 * HOUR
    # The board comes back 10 s later (wall time after the jump): the timers moved by 10 s only.
    pending = rig.cell(3)["pending"]
    back = paused + 5 * HOUR + 10_000
    rig.poll("B", back)
    moved = rig.cell(3)["pending"]
    assert moved["cancel_at"] == pending["cancel_at"] + 10_000
    assert moved["confirm_at"] == pending["confirm_at"] + 10_000


@given(st.integers(-48 * HOUR, 48 * HOUR))
def test_a_jump_and_its_undo_restore_the_snapshot(delta: int) -> None:
    rig, _ = _jump_rig()
    before = rig.m.snapshot()
    rig.m.clock_jumped(delta)
    rig.m.clock_jumped(-delta)
    assert rig.m.snapshot() == before


# ---------------------------------------------------------------- check_command

SETUPS: dict[str, Callable[[Rig], object]] = {
    "free": lambda rig: None,
    "occupied": lambda rig: rig.occupy(1, T0, id="t", due_at=T0 + 100 * HOUR),
    "overdue": lambda rig: (rig.occupy(1, T0, id="t", due_at=T0 + HOUR), rig.tick(T0 + HOUR)),
    "due": lambda rig: rig.occupy(1, T0, id="t", due_at=T0 + 5_000),  # due, not ticked
    "blocked": lambda rig: rig.cmd(1, "block", T0 + 1),
    "blocked_tenancy": lambda rig: (rig.occupy(1, T0, id="t", due_at=T0 + 100 * HOUR),
                                    rig.cmd(1, "block", T0 + 3000)),
    "busy": lambda rig: rig.cmd(1, "open", T0 + 1),
    "busy_occupied": lambda rig: (rig.occupy(1, T0, id="t", due_at=T0 + 100 * HOUR),
                                  rig.cmd(1, "temporary", T0 + 3000)),
    "door_open": lambda rig: rig.door(1, T0 + 1, closed=False),  # forced open: blocked too
    "door_unknown": lambda rig: rig.door(1, T0 + 1, closed=None),
    "not_ready": lambda rig: None,  # no board reported yet
}
OPEN_KINDS = ("deposit", "pickup", "temporary", "open", "evict")


@pytest.mark.parametrize("setup", sorted(SETUPS))
@pytest.mark.parametrize("kind", OPEN_KINDS)
def test_check_command_raises_like_command_and_changes_nothing(setup: str, kind: str) -> None:
    def build() -> Rig:
        rig = Rig(poll_at=None if setup == "not_ready" else T0)
        SETUPS[setup](rig)
        return rig

    checked, commanded = build(), build()
    before = checked.m.snapshot()
    reason = refused(lambda: checked.m.check_command(1, kind, T0 + 10_000))
    assert checked.m.snapshot() == before
    expected = refused(lambda: commanded.m.command(1, kind, T0 + 10_000, reason="note"))
    assert reason == expected


def test_check_command_refusals_on_a_few_cells() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t", due_at=T0 + HOUR)
    assert refused(lambda: rig.m.check_command(1, "deposit")) == "not_free"
    assert refused(lambda: rig.m.check_command(2, "pickup")) == "not_occupied"
    assert refused(lambda: rig.m.check_command(2, "evict")) == "not_occupied"
    assert refused(lambda: rig.m.check_command(99, "open")) == "unknown_cell"
    assert rig.m.check_command(1, "pickup") is None
    assert rig.m.check_command(1, "evict") is None
    assert rig.m.check_command(2, "deposit") is None
    assert rig.m.pending_purpose(1) is None and rig.m.pending_purpose(2) is None


def test_check_command_refuses_an_unknown_kind_like_command() -> None:
    rig = Rig()
    assert refused(lambda: rig.m.command(1, "frobnicate", T0 + 1)) == "unknown_command"
    assert refused(lambda: rig.m.check_command(1, "frobnicate")) == "unknown_command"


def test_check_command_never_changes_the_machine() -> None:
    rig = Rig()
    rig.occupy(1, T0, id="t", due_at=T0 + HOUR)
    before = copy.deepcopy(rig.m.snapshot())
    for cell in (1, 2, 3):
        for kind in OPEN_KINDS:
            refused(lambda c=cell, k=kind: rig.m.check_command(c, k))
    assert rig.m.snapshot() == before
