"""The locker's pacing rules, pure: resync answers (delay, merge, one per interval) and the
reconnect backoff (a spread first reconnect after a loss, then exponential with jitter)."""

from __future__ import annotations

import random

import pytest

from daemon.io.fleet_pacing import Backoff, ResyncGate, ResyncVerdict

ALL = frozenset({"status", "cells", "config"})


def test_a_request_is_answered_once_within_its_spread() -> None:
    gate = ResyncGate(10.0, random.Random(1))
    ask = gate.asked(ALL, 2000, now=100.0)
    assert ask.verdict is ResyncVerdict.SCHEDULED
    assert ask.due_at is not None and 100.0 <= ask.due_at <= 102.0
    assert gate.due(ask.due_at - 0.001) == frozenset()
    assert gate.timeout(100.0) == pytest.approx(ask.due_at - 100.0)
    assert gate.due(ask.due_at) == ALL
    assert gate.due(ask.due_at + 1) == frozenset()  # answered: nothing more
    assert gate.timeout(ask.due_at + 1) is None


def test_a_flood_of_requests_costs_one_republish() -> None:
    gate = ResyncGate(10.0, random.Random(2))
    first = gate.asked(frozenset({"cells"}), 5000, now=0.0)
    for i in range(1000):
        again = gate.asked(frozenset({"status"}), 0, now=i / 1000)
        assert again.verdict is ResyncVerdict.MERGED and again.due_at == first.due_at
    assert first.due_at is not None
    assert gate.due(first.due_at) == {"cells", "status"}
    done = first.due_at
    # within min_interval of the answer: ignored, whatever the spread
    for t in (done, done + 5, done + 9.999):
        assert gate.asked(ALL, 0, now=t).verdict is ResyncVerdict.TOO_SOON
        assert gate.due(t) == frozenset()
    assert gate.asked(ALL, 0, now=done + 10).verdict is ResyncVerdict.SCHEDULED
    assert gate.due(done + 10) == ALL


def test_delays_cover_the_spread_window() -> None:
    rng = random.Random(3)
    delays = []
    for _ in range(500):
        gate = ResyncGate(0.0, rng)
        ask = gate.asked(ALL, 60_000, now=0.0)
        assert ask.due_at is not None
        delays.append(ask.due_at)
    assert 0 <= min(delays) < 3 and 57 < max(delays) <= 60  # spread, not lumped


def test_backoff_first_reconnect_after_a_loss_is_spread_then_exponential() -> None:
    rng = random.Random(4)
    firsts = []
    for _ in range(300):
        backoff = Backoff(0.5, 4.0, rng, first_spread=20.0)
        backoff.reset()  # connected once, then lost
        firsts.append(backoff.next_delay())
        later = [backoff.next_delay() for _ in range(5)]
        for delay, ceiling in zip(later, [0.5, 1, 2, 4, 4], strict=True):
            assert ceiling / 2 <= delay <= ceiling
    assert all(0 <= d <= 20 for d in firsts)
    # full jitter: a thousand lockers would not come back in the same second
    per_second = [sum(1 for d in firsts if s <= d < s + 1) for s in range(20)]
    assert max(per_second) < 40 and min(per_second) > 2


def test_backoff_without_spread_or_before_any_connection_is_plain_exponential() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(5), first_spread=20.0)
    assert 0.25 <= backoff.next_delay() <= 0.5  # never connected: nothing lost to spread
    plain = Backoff(0.5, 4.0, random.Random(5))
    plain.reset()
    assert 0.25 <= plain.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(0.5, 4.0, first_spread=-1)
