"""The ingest's lag meter (fleet_console/lag.py): pure, time passed in.

What an operator relies on: the `ingest_lag` alarm is raised once per episode, only when the
stored events' p50 age stayed above the threshold for the configured time, and ended when the
ingest is back under (or idle and caught up); per-locker freshness is never lost to a failed
heartbeat write.
"""

from __future__ import annotations

from fleet_console.lag import LagMeter

S = 1000


def _meter() -> LagMeter:
    return LagMeter(alarm_ms=60 * S, alarm_for_ms=30 * S, started_at=0)


def test_a_beat_sums_up_the_interval() -> None:
    m = _meter()
    m.stored(1 * S, [1 * S - 10, 1 * S - 30, 1 * S - 20])
    m.stored(2 * S, [2 * S - 500])
    m.waiting(7)
    beat = m.beat(5 * S)
    assert (beat.lag_p50_ms, beat.lag_max_ms) == (20, 500)
    assert (beat.events_per_s, beat.batches_per_s, beat.inbox_depth) == (0.8, 0.4, 7)
    again = m.beat(10 * S)
    assert (again.lag_p50_ms, again.events_per_s, again.interval_ms) == (None, 0.0, 5 * S)


def test_the_alarm_starts_once_per_episode_after_the_stretch_and_ends_back_under() -> None:
    m = _meter()
    seen = []
    for t in range(5, 120, 5):  # 90 s behind from t=5 to t=60, then caught up
        now = t * S
        lag = 90 * S if t <= 60 else 1 * S
        m.stored(now, [now - lag])
        b = m.beat(now)
        seen.append((t, b.alarm_starts, b.alarm_ends))
    starts = [t for t, s, _ in seen if s]
    ends = [t for t, _, e in seen if e]
    assert starts == [35]  # first above at 5 s, above for 30 s at 35 s: one alarm
    assert ends == [65]


def test_a_short_spike_or_one_old_backlog_raises_nothing() -> None:
    m = _meter()
    for t in range(5, 100, 5):
        now = t * S
        ages = [100] * 9 + [3600 * S]  # one locker empties a day-old outbox: p50 stays low
        if t == 20:
            ages = [120 * S] * 10  # one beat behind, then back
        m.stored(now, [now - a for a in ages])
        assert not m.beat(now).alarm_starts


def test_no_event_neither_starts_nor_ends_unless_idle_and_caught_up() -> None:
    m = _meter()
    for t in (5, 10, 15, 20, 25, 30, 35):
        m.stored(t * S, [t * S - 90 * S])
        m.beat(t * S)
    assert m.alarm_open
    m.waiting(500)  # a stalled store: nothing stored, messages waiting
    b = m.beat(40 * S)
    assert (b.alarm_ends, b.lag_p50_ms, m.alarm_open) == (False, None, True)
    m.waiting(0)  # idle and caught up
    assert m.beat(45 * S).alarm_ends and not m.alarm_open


def test_freshness_is_kept_across_a_failed_heartbeat_write() -> None:
    m = _meter()
    m.heard("L1", 1 * S, last_event_at=900, stored_seq=7)
    m.heard("L2", 1 * S)
    m.heard("L1", 2 * S, last_event_at=800, stored_seq=5)  # a late resend of older seqs
    failed = m.beat(3 * S)
    assert failed.lockers["L1"].stored_seq == 7 and failed.lockers["L1"].last_event_at == 900
    m.unbeat(failed)
    m.heard("L1", 4 * S, last_event_at=950, stored_seq=8)
    beat = m.beat(5 * S)
    assert beat.lockers["L1"].last_heard_at == 4 * S and beat.lockers["L1"].stored_seq == 8
    assert beat.lockers["L2"].last_heard_at == 1 * S and beat.lockers["L2"].stored_seq is None


def test_a_failed_write_of_the_alarm_raises_it_again() -> None:
    m = _meter()
    beats = []
    for t in range(5, 45, 5):
        m.stored(t * S, [t * S - 90 * S])
        beats.append(m.beat(t * S))
    [raised] = [b for b in beats if b.alarm_starts]
    m.unbeat(raised)
    assert not m.alarm_open
    m.stored(50 * S, [50 * S - 90 * S])
    assert m.beat(50 * S).alarm_starts
