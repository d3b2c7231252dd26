"""The ingest's pure rules against a hostile locker: the quarantine gate and the flood meter."""

from __future__ import annotations

from fleet_console.flood import FloodMeter
from fleet_console.quarantine import (
    EXCERPT_BYTES,
    Admission,
    QuarantineGate,
    bounded_text,
    excerpt,
)


def test_excerpt_is_bounded_and_secrets_are_never_kept() -> None:
    assert excerpt(b"x" * 10_000) == b"x" * EXCERPT_BYTES
    assert excerpt(b"short") == b"short"
    assert excerpt(b'{"text": "PIN 1234"}', secret=True) is None


def test_bounded_text_has_no_nul_and_a_limit() -> None:
    assert bounded_text("a\x00b", 10) == "a\\x00b"
    assert bounded_text("y" * 500, 20) == "y" * 17 + "..."


def test_gate_keeps_a_budget_per_locker_and_reason_and_one_alarm_per_window() -> None:
    gate = QuarantineGate(keep_per_window=3, window_s=60)
    answers = [gate.admit("A", "undeclared_cell", 1000 + i) for i in range(20_000)]
    assert sum(a.keep for a in answers) == 3
    assert sum(a.alarm for a in answers) == 1
    # Another reason of the same locker, and another locker, have budgets of their own.
    assert gate.admit("A", "too_large", 2000) == Admission(True, True, 0)
    assert gate.admit("B", "undeclared_cell", 2000) == Admission(True, True, 0)
    # The next window's alarm counts what the last one did not keep.
    assert gate.admit("A", "undeclared_cell", 61_000) == Admission(True, True, 19_997)
    assert gate.admit("A", "undeclared_cell", 61_001) == Admission(True, False)


def test_flood_meter_alarms_once_per_episode() -> None:
    meter = FloodMeter(rate_per_s=50, window_s=10)
    t = 0
    floods = []
    for _ in range(300):  # 100 messages/s for 30 s
        floods.append(meter.observe("A", 10, t))
        assert meter.observe("B", 1, t) is None  # 10/s: never a flood
        t += 100
    started = [f for f in floods if f is not None]
    assert len(started) == 1 and started[0].count == 510
    # A calm window ends the episode; the next flood is a new one.
    assert meter.observe("A", 1, t + 10_000) is None
    assert meter.observe("A", 1, t + 20_000) is None
    assert meter.observe("A", 600, t + 20_001) is not None


def test_flood_meter_allows_a_burst_under_the_window_budget() -> None:
    meter = FloodMeter(rate_per_s=50, window_s=10)
    assert meter.observe("A", 500, 0) is None  # 500 at once: the budget of the window
    assert meter.observe("A", 1, 5_000) is not None
