"""The console's per-locker sequencing without a broker or database (fleet_console/sequencing.py),
and the locker's window and the console's sequencer together over a hostile network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.io.outbox_window import AckVerdict, OutboxWindow
from fleet_console.sequencing import AckPacer, PermanentGap, ResendRequest, SeqGap, Sequencer

GAP_MS = 30_000


@pytest.mark.parametrize("module", ["daemon/io/outbox_window.py", "fleet_console/sequencing.py"])
def test_delivery_policies_are_pure(module: str) -> None:
    """No network, database, event loop or clock: time comes in as an argument."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / module).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections", "dataclasses", "enum", "typing"}, imported


def _fresh(*lockers: str) -> Sequencer:
    seq = Sequencer(GAP_MS)
    seq.gapped_restored = True
    for lk in lockers:
        seq.restore(lk, None, None)
    return seq


def test_first_event_sets_the_baseline_and_duplicates_are_counted_once() -> None:
    seq = _fresh("a")
    done = seq.sequence([("a", 7), ("a", 8), ("a", 7)], now=0)
    assert done.acks == {"a": 8} and done.new == 2 and done.store == [0, 1]
    again = seq.sequence([("a", 8)], now=1)
    assert again.new == 0 and again.acks == {"a": 8} and again.store == [0]


def test_ack_stops_at_a_hole_until_it_is_filled() -> None:
    seq = _fresh("a")
    seq.sequence([("a", 1)], now=0)
    done = seq.sequence([("a", 3), ("a", 4)], now=10)
    assert done.acks == {"a": 1} and done.gaps == [SeqGap("a", expected=2, got=3)]
    assert seq.gap_due(10 + GAP_MS - 1) is False
    done = seq.sequence([("a", 2)], now=20)
    assert done.acks == {"a": 4} and not done.permanent
    assert seq.states["a"].gap_since is None


def test_a_redelivery_in_one_batch_is_not_a_gap() -> None:
    seq = _fresh("a")
    seq.sequence([("a", 1)], now=0)
    done = seq.sequence([("a", 3), ("a", 2)], now=1)
    assert done.gaps == [] and done.acks == {"a": 3} and done.store == [1, 0]


def test_a_hole_is_asked_for_again_never_acked_past_until_the_locker_says_it_is_gone() -> None:
    seq = _fresh("a")
    seq.sequence([("a", 1), ("a", 4)], now=0)
    assert seq.gap_due(GAP_MS) is True
    done = seq.sequence([], now=GAP_MS)
    assert done.permanent == [] and done.acks == {}
    assert done.resend == [ResendRequest("a", 2, 3)]
    assert seq.gap_due(GAP_MS + 1) is False  # asked: again only after another timeout
    assert seq.sequence([], now=GAP_MS + 1).resend == []
    assert seq.sequence([], now=2 * GAP_MS).resend == [ResendRequest("a", 2, 3)]
    assert seq.states["a"].acked == 1  # however long it takes
    # The locker's word, for a range that does not start at the hole: nothing moves.
    assert seq.sequence([], now=2 * GAP_MS + 1, gone=[("a", 3, 3)]).acks == {}
    gone = seq.sequence([], now=2 * GAP_MS + 2, gone=[("a", 2, 50)])
    assert gone.permanent == [PermanentGap("a", missing_from=2, missing_to=3)]
    assert gone.acks == {"a": 4} and "a" in gone.changed  # not past 4: never seen beyond it
    late = seq.sequence([("a", 2)], now=2 * GAP_MS + 3)
    assert late.store == [0] and late.new == 0 and late.acks == {"a": 4}


def test_a_resent_range_fills_the_hole_and_is_acknowledged() -> None:
    seq = _fresh("a")
    seq.sequence([("a", 1), ("a", 5)], now=0)
    assert seq.sequence([], now=GAP_MS).resend == [ResendRequest("a", 2, 4)]
    done = seq.sequence([("a", 2), ("a", 3), ("a", 4)], now=GAP_MS + 1)
    assert done.acks == {"a": 5} and done.new == 3 and seq.states["a"].gap_since is None


def test_for_replicas_a_new_locker_starts_at_zero_and_a_hole_knows_it_was_asked_before() -> None:
    """Replicas see a locker's events out of order: its first seen is not its baseline, and
    the time a hole was asked for is stored (restored here as another replica would)."""
    seq = Sequencer(GAP_MS, baseline_from_first=False)
    seq.gapped_restored = True
    seq.restore("a", None, None)
    first = seq.sequence([("a", 3)], now=0)
    assert first.acks == {"a": 0} and first.gaps == [SeqGap("a", 1, 3)]  # 1, 2 not yet seen
    asked = seq.sequence([], now=GAP_MS)
    assert asked.resend == [ResendRequest("a", 1, 2)] and not asked.resend[0].again
    assert "a" in asked.changed and seq.states["a"].asked_at == GAP_MS
    st = seq.states["a"]
    other = Sequencer(GAP_MS, baseline_from_first=False)
    other.gapped_restored = True
    other.restore("a", st.acked, st.gap_since, st.above, st.asked_at)
    assert other.sequence([], now=GAP_MS + 1).resend == []  # asked already, by the first
    again = other.sequence([], now=2 * GAP_MS)
    assert again.resend == [ResendRequest("a", 1, 2)] and again.resend[0].again
    filled = other.sequence([("a", 2), ("a", 1)], now=2 * GAP_MS + 1)
    assert filled.acks == {"a": 3} and other.states["a"].asked_at is None


def test_a_long_hole_is_asked_for_in_bounded_ranges() -> None:
    seq = Sequencer(GAP_MS, max_resend=10)
    seq.gapped_restored = True
    seq.restore("a", None, None)
    seq.sequence([("a", 1), ("a", 100)], now=0)
    assert seq.sequence([], now=GAP_MS).resend == [ResendRequest("a", 2, 11)]


def test_restored_state_carries_the_seqs_stored_past_a_hole() -> None:
    seq = Sequencer(GAP_MS)
    assert seq.gap_due(0) is True  # lockers with a hole are not restored yet
    seq.restore("a", 5, 100, [7, 8])
    seq.gapped_restored = True
    assert seq.missing(["a", "b"]) == ["b"]
    done = seq.sequence([("a", 6)], now=200)
    assert done.acks == {"a": 8} and done.new == 1


def test_one_ack_per_locker_in_flight_the_newest_watermark_next_and_a_failed_one_kept() -> None:
    acks = AckPacer()
    assert acks.watermark("a", 5) is True and acks.take("a") == 5
    assert acks.watermark("a", 7) is False and acks.watermark("a", 9) is False  # waits
    assert acks.finished("a") is True and acks.take("a") == 9  # the newest, alone
    acks.failed("a", 9)  # the broker did not take it
    assert acks.finished("a") is True and acks.due == {"a": 9}
    assert acks.take("a") == 9 and acks.reconnected() == [] and acks.busy == set()
    acks.failed("a", 9)
    assert acks.reconnected() == ["a"]


_batches = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 30)), max_size=12),
        st.integers(0, 20_000),  # ms until this batch
    ),
    max_size=25,
)


_gone = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 30), st.integers(0, 5)), max_size=2
)


@settings(max_examples=300, deadline=None)
@given(batches=_batches, gones=st.lists(_gone, max_size=25))
def test_an_ack_never_covers_a_seq_not_stored_unless_the_locker_said_it_is_gone(
    batches: list[tuple[list[tuple[str, int]], int]],
    gones: list[list[tuple[str, int, int]]],
) -> None:
    """Whatever arrives, whenever, and whatever the lockers say is gone: an ack covers only
    stored seqs and seqs their locker said it no longer has; a hole is asked for again."""
    seq = _fresh("a", "b")
    stored: dict[str, set[int]] = {"a": set(), "b": set()}
    said_gone: dict[str, set[int]] = {"a": set(), "b": set()}
    given_up: dict[str, set[int]] = {"a": set(), "b": set()}
    late: dict[str, set[int]] = {"a": set(), "b": set()}
    baseline: dict[str, int] = {}
    new = 0
    now = 0
    for n, (events, dt) in enumerate(batches):
        now += dt
        gone = [(lk, lo, lo + span) for lk, lo, span in (gones[n] if n < len(gones) else [])]
        for lk, lo, hi in gone:
            said_gone[lk] |= set(range(lo, hi + 1))
        done = seq.sequence(events, now, gone)
        for i in done.store:
            lk, s = events[i]
            baseline.setdefault(lk, s)
            if s in given_up[lk] and s not in stored[lk]:
                late[lk].add(s)  # a late fill of a permanent gap: stored, not counted new
            stored[lk].add(s)
        new += done.new
        for lost in done.permanent:
            hole = set(range(lost.missing_from, lost.missing_to + 1))
            assert not hole & stored[lost.locker]
            assert hole <= said_gone[lost.locker], "moved past a hole on nobody's word"
            given_up[lost.locker] |= hole
        for ask in done.resend:
            wanted = set(range(ask.from_seq, ask.to_seq + 1))
            assert wanted and not wanted & stored[ask.locker], "asked for what is stored"
        for lk, up_to in done.acks.items():
            covered = set(range(baseline[lk], up_to + 1))
            assert covered <= stored[lk] | given_up[lk], "an ack covers a seq not stored"
    # Stored once: each (locker, seq) at or past the baseline is counted new exactly once.
    assert new == sum(
        len({s for s in stored[lk] - late[lk] if s >= baseline[lk]}) for lk in baseline
    )


@settings(max_examples=300, deadline=None)
@given(batches=_batches, gones=st.lists(_gone, max_size=25),
       replicas=st.lists(st.integers(0, 1), max_size=25))
def test_replicas_sharing_the_state_in_the_database_never_ack_a_seq_not_stored(
    batches: list[tuple[list[tuple[str, int]], int]],
    gones: list[list[tuple[str, int, int]]],
    replicas: list[int],
) -> None:
    """Two ingest replicas take turns on batches in any order (one transaction at a time, as
    the row locks make it); each reloads the state from the "database" before its batch and
    writes back what changed: an ack covers only stored seqs and seqs said gone, every event is
    counted new once across both, and a hole is never asked for twice within the gap timeout."""
    seqs = [Sequencer(GAP_MS, baseline_from_first=False) for _ in range(2)]
    rows: dict[str, tuple[int | None, int | None, int | None]] = {}  # acked, gap_since, asked
    stored: dict[str, set[int]] = {"a": set(), "b": set()}
    said_gone: dict[str, set[int]] = {"a": set(), "b": set()}
    given_up: dict[str, set[int]] = {"a": set(), "b": set()}
    late: dict[str, set[int]] = {"a": set(), "b": set()}
    asked: dict[str, list[int]] = {"a": [], "b": []}
    new = 0
    now = 0
    for n, (events, dt) in enumerate(batches):
        now += dt
        seq = seqs[replicas[n] if n < len(replicas) else n % 2]
        seq.forget()
        for lk in ("a", "b"):  # what lock_sequences reads
            acked, gap_since, asked_at = rows.get(lk, (None, None, None))
            above = (() if gap_since is None or acked is None
                     else {x for x in stored[lk] if x > acked})
            seq.restore(lk, acked, gap_since, above, asked_at)
        seq.gapped_restored = True
        gone = [(lk, lo, lo + span) for lk, lo, span in (gones[n] if n < len(gones) else [])]
        for lk, lo, hi in gone:
            said_gone[lk] |= set(range(lo, hi + 1))
        done = seq.sequence(events, now, gone)
        for i in done.store:
            lk, x = events[i]
            if x in given_up[lk] and x not in stored[lk]:
                late[lk].add(x)
            stored[lk].add(x)
        new += done.new
        for lost in done.permanent:
            given_up[lost.locker] |= set(range(lost.missing_from, lost.missing_to + 1))
        for ask in done.resend:
            assert not asked[ask.locker] or now - asked[ask.locker][-1] >= GAP_MS or (
                rows[ask.locker][2] is None), "asked again before the gap timeout"
            asked[ask.locker].append(now)
        for lk in done.changed:  # written back in the same transaction
            st_ = seq.states[lk]
            rows[lk] = (st_.acked, st_.gap_since, st_.asked_at)
        for lk, up_to in done.acks.items():
            assert set(range(1, up_to + 1)) <= stored[lk] | given_up[lk], (
                "an ack covers a seq not stored")
    assert new == sum(len(stored[lk] - late[lk]) for lk in stored)


# --- the two together --------------------------------------------------------------------------
_net = st.lists(
    st.tuples(
        st.sampled_from(["append", "send", "deliver", "duplicate", "drop", "ack", "reconnect",
                         "tick", "batch"]),
        st.integers(0, 50),
    ),
    max_size=100,
)


@settings(max_examples=300, deadline=None)
@given(steps=_net, max_in_flight=st.integers(1, 6))
def test_any_interleaving_of_sends_acks_reconnects_and_duplicates_loses_and_doubles_nothing(
    steps: list[tuple[str, int]], max_in_flight: int
) -> None:
    """The locker's OutboxWindow and the console's Sequencer over a network that drops,
    duplicates and reorders, the console batching at random: every event ends up stored exactly
    once and leaves the outbox only after that. The console knows the locker (its baseline is
    set: the first event ever seen sets it otherwise), and no hole times out in this run."""
    now = 0.0
    w = OutboxWindow(max_in_flight, resend_after=30.0, now=now)
    seq = Sequencer(gap_timeout_ms=10**15)
    seq.gapped_restored = True
    seq.restore("lk", 0, None)
    outbox: list[int] = []
    next_seq = 1
    to_console: list[int] = []
    inbox: list[int] = []  # the console's unbatched messages
    to_locker: list[int] = []
    db: set[int] = set()  # the events table: (locker, seq) is unique
    new = 0  # events the console counted as new

    def send() -> None:
        read = w.next_read()
        if read is None:
            return
        rows = [s for s in outbox if s > read.after_seq][: read.limit]
        w.sending(rows, now)
        to_console.extend(rows)

    def batch() -> None:
        events = [("lk", s) for s in inbox]
        inbox.clear()
        done = seq.sequence(events, int(now * 1000))
        nonlocal new
        assert not done.permanent
        db.update(events[i][1] for i in done.store)
        new += done.new
        if "lk" in done.acks:
            to_locker.append(done.acks["lk"])

    def locker_receives(up_to: int) -> None:
        if w.judge_ack(up_to) is AckVerdict.NEW:
            assert {s for s in outbox if s <= up_to} <= db, "dropped before stored"
            outbox[:] = [s for s in outbox if s > up_to]
            w.acknowledged(up_to, now)

    for op, arg in steps:
        if op == "append":
            outbox.extend(range(next_seq, next_seq + arg % 4 + 1))
            next_seq += arg % 4 + 1
            w.outbox_grew()
        elif op in ("deliver", "duplicate", "drop") and to_console:
            i = arg % len(to_console)
            s = to_console[i] if op == "duplicate" else to_console.pop(i)
            if op != "drop":
                inbox.append(s)
        elif op == "ack" and to_locker:
            locker_receives(to_locker.pop(arg % len(to_locker)))
        elif op == "reconnect":
            to_console.clear()
            to_locker.clear()
            w.reconnected(now)
        elif op == "tick":
            now += arg % 31
            w.tick(now)
        elif op == "batch":
            batch()
        send()

    for _ in range(4 * next_seq + 10):
        if not outbox:
            break
        now += 30.0
        w.tick(now)
        send()
        inbox.extend(to_console)
        to_console.clear()
        batch()
        while to_locker:
            locker_receives(to_locker.pop(0))
    assert outbox == [], "an event was never acknowledged"
    assert db == set(range(1, next_seq)), "an event was lost"
    assert new == next_seq - 1, "an event was counted twice"
    assert seq.states["lk"].acked == next_seq - 1


def test_paced_acks_go_out_together_at_most_once_per_interval() -> None:
    acks = AckPacer(interval_ms=50)
    assert acks.wait_ms(now=1000) == 0  # the first flush goes at once
    acks.watermark("a", 3)
    assert acks.flush(now=1000) == ["a"] and acks.take("a") == 3
    acks.watermark("b", 7)
    assert acks.wait_ms(now=1020) == 30  # b waits for the interval
    acks.watermark("b", 9)  # a later batch: still one ack for b
    acks.watermark("a", 5)  # a still has one in flight
    assert acks.wait_ms(now=1050) == 0 and acks.flush(now=1050) == ["b"]
    assert acks.take("b") == 9 and acks.due == {"a": 5}
    assert acks.finished("a") is True and acks.wait_ms(now=1060) == 40


def test_at_most_max_in_flight_acks_await_the_broker_the_rest_follow() -> None:
    acks = AckPacer(interval_ms=0, max_in_flight=2)
    for lk in ("a", "b", "c"):
        acks.watermark(lk, 1)
    sent = acks.flush(now=0)
    assert sent == ["a", "b"] and [acks.take(lk) for lk in sent] == [1, 1]
    assert acks.flush(now=1) == []  # no room until one finishes
    acks.finished("a")
    assert acks.flush(now=2) == ["c"]
