"""PIN guessing defence (daemon/access/pin_guard.py): cell lockouts and the kiosk-wide delay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.access.pin_guard import GuardPolicy, PinGuard

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_767_225_600_000
LOCKOUT = 5 * MIN


def fail_n(guard: PinGuard, cell: int, n: int, at: int, every: int = 1_000) -> list[int | None]:
    return [guard.failed(cell, at + i * every) for i in range(n)]


# -- cell lockout -------------------------------------------------------------------------------
def test_default_policy() -> None:
    p = GuardPolicy()
    assert (p.cell_attempts, p.cell_lockout_ms) == (5, LOCKOUT)
    assert (p.kiosk_free_failures, p.kiosk_window_ms) == (10, 10 * MIN)
    assert (p.kiosk_delay_step_ms, p.kiosk_max_delay_ms) == (1_000, 10_000)


def test_four_wrong_pins_do_not_lock() -> None:
    guard = PinGuard()
    assert fail_n(guard, 1, 4, T0) == [None] * 4
    assert guard.locked_until(1, T0 + 4_000) is None
    assert guard.attempts_left(1) == 1


def test_attempts_left_counts_down() -> None:
    guard = PinGuard()
    assert guard.attempts_left(1) == 5
    lefts = []
    for i in range(4):
        guard.failed(1, T0 + i)
        lefts.append(guard.attempts_left(1))
    assert lefts == [4, 3, 2, 1]


def test_fifth_wrong_pin_locks_the_cell_for_five_minutes() -> None:
    guard = PinGuard()
    results = fail_n(guard, 1, 5, T0)
    last = T0 + 4_000
    assert results == [None, None, None, None, last + LOCKOUT]
    assert guard.attempts_left(1) == 0
    assert guard.locked_until(1, last) == last + LOCKOUT
    assert guard.locked_until(1, last + LOCKOUT - 1) == last + LOCKOUT


def test_lockout_ends_at_the_right_ms_with_a_fresh_count() -> None:
    guard = PinGuard()
    fail_n(guard, 1, 5, T0, every=0)
    end = T0 + LOCKOUT
    assert guard.locked_until(1, end - 1) == end
    assert guard.locked_until(1, end) is None
    assert guard.attempts_left(1) == 5
    # A fresh count: one more wrong PIN does not lock again.
    assert guard.failed(1, end + 1) is None
    assert guard.locked_until(1, end + 1) is None
    assert guard.attempts_left(1) == 4


def test_a_right_pin_resets_the_count() -> None:
    guard = PinGuard()
    fail_n(guard, 1, 4, T0)
    guard.succeeded(1)
    assert guard.attempts_left(1) == 5
    assert fail_n(guard, 1, 4, T0 + 10_000) == [None] * 4
    assert guard.locked_until(1, T0 + 20_000) is None


def test_succeeded_on_an_unknown_cell_is_harmless() -> None:
    guard = PinGuard()
    guard.succeeded(42)
    assert guard.attempts_left(42) == 5


def test_other_cells_are_unaffected() -> None:
    guard = PinGuard()
    fail_n(guard, 1, 5, T0, every=0)
    assert guard.locked_until(1, T0 + 1) == T0 + LOCKOUT
    assert guard.locked_until(2, T0 + 1) is None
    assert guard.attempts_left(2) == 5
    fail_n(guard, 2, 4, T0 + 1, every=0)
    assert guard.locked_until(2, T0 + 2) is None
    guard.succeeded(2)
    assert guard.locked_until(1, T0 + 2) == T0 + LOCKOUT


def test_failures_spread_across_cells_lock_none() -> None:
    guard = PinGuard()
    for cell in range(1, 9):
        assert fail_n(guard, cell, 4, T0, every=0) == [None] * 4
    assert all(guard.locked_until(c, T0) is None for c in range(1, 9))


def test_custom_policy() -> None:
    guard = PinGuard(GuardPolicy(cell_attempts=2, cell_lockout_ms=10_000))
    assert guard.failed(7, T0) is None
    assert guard.failed(7, T0 + 5) == T0 + 5 + 10_000


# -- kiosk-wide delay ---------------------------------------------------------------------------
def test_no_delay_below_the_threshold() -> None:
    guard = PinGuard()
    assert guard.delay_ms(T0) == 0
    for i in range(9):
        guard.failed(i, T0 + i)
        assert guard.delay_ms(T0 + i) == 0


def test_delay_grows_one_step_per_failure_up_to_the_max() -> None:
    guard = PinGuard()
    delays = []
    for i in range(25):
        guard.failed(100 + i, T0 + i * 1_000)  # every failure on a fresh cell: no lockout
        delays.append(guard.delay_ms(T0 + i * 1_000))
    assert delays[:9] == [0] * 9
    assert delays[9:19] == [1_000 * k for k in range(1, 11)]
    assert delays[19:] == [10_000] * 6


def test_delay_forgets_failures_outside_the_window() -> None:
    guard = PinGuard()
    for i in range(12):
        guard.failed(i, T0 + i)
    assert guard.delay_ms(T0 + 11) == 3_000
    # The window is 10 minutes: a failure exactly that old no longer counts.
    assert guard.delay_ms(T0 + 10 * MIN - 1) == 3_000
    assert guard.delay_ms(T0 + 10 * MIN) == 2_000
    assert guard.delay_ms(T0 + 10 * MIN + 2) == 0
    assert guard.delay_ms(T0 + HOUR) == 0


def test_a_right_pin_does_not_clear_the_kiosk_window() -> None:
    guard = PinGuard()
    for i in range(10):
        guard.failed(1 + i % 3, T0 + i)
    guard.succeeded(1)
    assert guard.delay_ms(T0 + 20) == 1_000


def test_custom_delay_policy() -> None:
    guard = PinGuard(GuardPolicy(kiosk_free_failures=2, kiosk_window_ms=1_000,
                                 kiosk_delay_step_ms=250, kiosk_max_delay_ms=600))
    guard.failed(1, T0)
    assert guard.delay_ms(T0) == 0
    guard.failed(2, T0 + 1)
    assert guard.delay_ms(T0 + 1) == 250
    guard.failed(3, T0 + 2)
    assert guard.delay_ms(T0 + 2) == 500
    guard.failed(4, T0 + 3)
    assert guard.delay_ms(T0 + 3) == 600


# -- clock jumps --------------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [5 * HOUR, -5 * HOUR, 1, -1])
def test_shift_keeps_the_remaining_lockout_across_a_clock_jump(delta: int) -> None:
    guard = PinGuard()
    fail_n(guard, 1, 5, T0, every=0)
    end = T0 + LOCKOUT
    one_minute_in = T0 + MIN
    assert guard.locked_until(1, one_minute_in) == end
    guard.shift(delta)
    assert guard.locked_until(1, one_minute_in + delta) == end + delta
    assert guard.locked_until(1, end + delta - 1) == end + delta
    assert guard.locked_until(1, end + delta) is None


def test_without_shift_a_jump_would_distort_the_lockout() -> None:
    """The reason shift() exists: the stored end is an absolute wall-clock time."""
    guard = PinGuard()
    fail_n(guard, 1, 5, T0, every=0)
    assert guard.locked_until(1, T0 + 5 * HOUR) is None  # forward jump: freed at once


def test_shift_keeps_the_kiosk_window_across_a_clock_jump() -> None:
    for delta in (5 * HOUR, -5 * HOUR):
        guard = PinGuard()
        for i in range(12):
            guard.failed(i, T0 + i)
        guard.shift(delta)
        assert guard.delay_ms(T0 + 11 + delta) == 3_000
        assert guard.delay_ms(T0 + 10 * MIN + delta) == 2_000
        assert guard.delay_ms(T0 + 10 * MIN + 12 + delta) == 0


def test_shift_leaves_counts_without_lockout_alone() -> None:
    guard = PinGuard()
    fail_n(guard, 1, 3, T0)
    guard.shift(5 * HOUR)
    assert guard.attempts_left(1) == 2
    assert guard.locked_until(1, T0 + 5 * HOUR) is None


# -- properties ---------------------------------------------------------------------------------
@given(st.lists(st.integers(0, 20 * MIN), max_size=40), st.integers(0, 30 * MIN))
def test_delay_is_bounded_and_zero_with_few_recent_failures(times: list[int], probe: int) -> None:
    guard = PinGuard()
    policy = guard.policy
    times = sorted(times)
    for i, t in enumerate(times):
        guard.failed(1000 + i, T0 + t)
    now = T0 + max([probe, *times])
    recent = [t for t in times if T0 + t > now - policy.kiosk_window_ms]
    delay = guard.delay_ms(now)
    assert 0 <= delay <= policy.kiosk_max_delay_ms
    over = len(recent) - policy.kiosk_free_failures + 1
    assert delay == (0 if over <= 0 else min(policy.kiosk_max_delay_ms,
                                              over * policy.kiosk_delay_step_ms))


@given(st.integers(-24 * HOUR, 24 * HOUR), st.integers(0, LOCKOUT - 1))
def test_shift_preserves_the_time_left(delta: int, waited: int) -> None:
    guard = PinGuard()
    fail_n(guard, 1, 5, T0, every=0)
    guard.shift(delta)
    until = guard.locked_until(1, T0 + delta + waited)
    assert until is not None and until - (T0 + delta + waited) == LOCKOUT - waited


def test_snapshot_and_restore_keep_counts_and_lockouts() -> None:
    guard = PinGuard()
    for _ in range(5):
        guard.failed(1, 1_000)
    guard.failed(2, 2_000)
    restored = PinGuard()
    restored.restore(json.loads(json.dumps(guard.snapshot())))  # through the store's JSON
    assert restored.locked_until(1, 3_000) == 1_000 + 5 * 60_000
    assert restored.attempts_left(2) == 4
    assert restored.delay_ms(3_000) == guard.delay_ms(3_000)


def test_a_malformed_snapshot_is_ignored() -> None:
    guard = PinGuard()
    guard.failed(1, 0)
    guard.restore({"cells": {"x": [1]}, "recent": []})
    assert guard.attempts_left(1) == 4  # unchanged


def test_the_kept_state_stays_small_whatever_the_number_of_failures() -> None:
    """Stored after every failure: its size must not follow the number of tries."""
    guard = PinGuard()
    for i in range(5_000):
        guard.failed(1 + i % 6, T0 + i)
    kept = GuardPolicy().kept_failures
    assert kept == 19 and len(guard.snapshot()["recent"]) == kept
    assert guard.delay_ms(T0 + 5_000) == 10_000  # the maximum, as with every failure kept
    assert len(json.dumps(guard.snapshot())) < 600


def test_a_wrong_pin_on_a_missing_cell_slows_the_kiosk_but_keeps_no_count() -> None:
    guard = PinGuard(GuardPolicy(kiosk_free_failures=2))
    guard.failed_elsewhere(T0)
    guard.failed_elsewhere(T0 + 1)
    assert guard.delay_ms(T0 + 2) == 1_000
    assert guard.snapshot()["cells"] == {}


def test_an_old_snapshot_with_every_failure_is_cut_to_what_counts() -> None:
    guard = PinGuard()
    guard.restore({"cells": {}, "recent": list(range(T0, T0 + 2_500))})
    assert len(guard.snapshot()["recent"]) == 19
    assert guard.delay_ms(T0 + 2_500) == 10_000
