"""The console's resync planner, pure: whom to ask for retained state again, and how fast."""

from __future__ import annotations

from fleet_console.resync import LockerView, ResyncPlanner, TokenBucket, lacking

S = 1000  # ms


def online(locker: str, *, cells: int, declared: int | None = 16, status_at: int = 0,
           oldest: int | None = None) -> LockerView:
    return LockerView(locker, status_at, True, declared, cells,
                      oldest if oldest is not None else (status_at if cells else None))


def test_what_the_console_lacks() -> None:
    assert lacking(LockerView("L", None, None, None), None) is None  # heard, no status
    assert lacking(online("L", cells=16), None) == ()
    assert lacking(online("L", cells=3), None) == ("cells",)
    assert lacking(online("L", cells=16, status_at=5 * S, oldest=4 * S), None) == ("cells",)
    assert lacking(online("L", cells=0, declared=None), None) == ()  # declares none: unknown
    offline = LockerView("L", 10 * S, False, 16, 16, 0)
    assert lacking(offline, None) == ()  # cannot answer; republishes everything on return
    assert lacking(offline, 9 * S) == ()  # heard before its last will
    assert lacking(offline, 11 * S) == ("status", "cells")  # back, its status lost


def test_asks_after_grace_then_once_per_retry_while_incomplete() -> None:
    planner = ResyncPlanner(rate_per_s=50, retry_s=30, grace_s=10)
    view = [online("L1", cells=2)]
    assert planner.plan(view, 0) == []  # first seen incomplete: its cells may be on the way
    assert planner.plan(view, 9 * S) == []
    [ask] = planner.plan(view, 10 * S)
    assert (ask.locker, ask.what) == ("L1", ("cells",))
    for t in (11, 20, 39.9):
        assert planner.plan(view, int(t * S)) == []  # once per retry_s
    assert [a.locker for a in planner.plan(view, 40 * S)] == ["L1"]
    assert planner.plan([online("L1", cells=16)], 41 * S) == []  # complete: forgotten
    assert planner.plan(view, 42 * S) == []  # incomplete again: a new grace


def test_no_status_asks_for_everything_and_heard_after_will_for_status() -> None:
    planner = ResyncPlanner(grace_s=0)
    planner.heard(["L2"], 20 * S)
    asks = planner.plan([LockerView("L1", None, None, None),
                         LockerView("L2", 10 * S, False, 4, 4, 0),
                         LockerView("L3", 10 * S, False, 4, 4, 0)], 21 * S)
    assert {(a.locker, a.what) for a in asks} == {("L1", None), ("L2", ("status", "cells"))}


def test_token_bucket_paces_a_storm_and_spreads_the_answers() -> None:
    planner = ResyncPlanner(rate_per_s=50, burst=250, retry_s=30, grace_s=0)
    views = [online(f"L{i:04}", cells=0) for i in range(1000)]
    first = planner.plan(views, 0)
    assert len(first) == 250  # the burst
    assert {a.spread_ms for a in first} == {5000}  # 250 answers over the time 250 tokens take
    asked = {a.locker for a in first}
    t = 0
    while len(asked) < 1000:
        t += 5 * S
        more = planner.plan(views, t)
        assert len(more) <= 250 and not asked & {a.locker for a in more}
        asked |= {a.locker for a in more}
    assert t == 15 * S  # 1000 lockers at 50/s: 20 s, the first 5 s as a burst


def test_token_bucket() -> None:
    bucket = TokenBucket(10, 5, now_ms=0)
    assert bucket.take(8, 0) == 5
    assert bucket.take(8, 100) == 1
    assert bucket.take(8, 10_000) == 5  # capped at capacity
