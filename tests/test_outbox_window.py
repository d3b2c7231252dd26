"""The locker's delivery policy without a broker: the outbox window (events until `events/ack`)
and results/notifications until `delivered` (daemon/io/outbox_window.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.io.outbox_window import (
    AckVerdict,
    OutboxGap,
    OutboxWindow,
    Resend,
    UntilDelivered,
    answer_resend,
)


def _read(window: OutboxWindow, outbox: list[int]) -> list[int]:
    """What FleetLink does on a publish pass: ask the window, read the outbox, hand them over."""
    read = window.next_read()
    if read is None:
        return []
    rows = [s for s in outbox if s > read.after_seq][: read.limit]
    window.sending(rows, 0.0)
    return rows


def test_window_sends_at_most_max_in_flight_until_an_ack_makes_room() -> None:
    w = OutboxWindow(max_in_flight=3, resend_after=30.0, now=0.0)
    outbox = list(range(1, 11))
    w.outbox_grew()
    assert _read(w, outbox) == [1, 2, 3]
    w.outbox_grew()
    assert _read(w, outbox) == []  # full
    assert w.judge_ack(2) is AckVerdict.NEW
    assert w.acknowledged(2, 1.0) == 2
    del outbox[:2]
    assert _read(w, outbox) == [4, 5]


def test_ack_beyond_what_was_sent_is_ignored_and_old_acks_are_no_news() -> None:
    w = OutboxWindow(max_in_flight=10, resend_after=30.0, now=0.0)
    w.outbox_grew()
    assert _read(w, [1, 2, 3]) == [1, 2, 3]
    assert w.judge_ack(4) is AckVerdict.NEVER_SENT
    assert w.judge_ack(3) is AckVerdict.NEW
    w.acknowledged(3, 0.0)
    assert w.judge_ack(3) is AckVerdict.OLD
    assert w.judge_ack(1) is AckVerdict.OLD


def test_outbox_starting_past_one_moves_the_watermark_and_reports_holes() -> None:
    w = OutboxWindow(max_in_flight=10, resend_after=30.0, now=0.0)
    w.outbox_grew()
    read = w.next_read()
    assert read is not None and read.after_seq == 0
    assert w.sending([41, 42, 45], 0.0) == [OutboxGap(expected=43, got=45)]
    assert (w.acked, w.sent, w.highest_sent) == (40, 45, 45)
    assert w.judge_ack(40) is AckVerdict.OLD  # acked in a past run


def test_stalled_acks_resend_from_the_watermark_after_resend_after() -> None:
    w = OutboxWindow(max_in_flight=10, resend_after=30.0, now=0.0)
    w.outbox_grew()
    read = w.next_read()
    assert read is not None
    w.sending([1, 2, 3], 5.0)
    assert w.timeout() == 30.0
    assert w.tick(34.9) is None
    assert w.tick(35.0) == Resend(after_seq=0, unacked=3)
    read = w.next_read()
    assert read is not None and read.after_seq == 0
    assert w.tick(36.0) is None  # the clock started again


def test_reconnect_sends_again_from_the_watermark() -> None:
    w = OutboxWindow(max_in_flight=10, resend_after=30.0, now=0.0)
    w.outbox_grew()
    _read(w, [1, 2, 3])
    w.acknowledged(1, 0.0)
    w.reconnected(1.0)
    assert _read(w, [2, 3]) == [2, 3]


def test_until_delivered_resends_until_named_and_gives_up_after_deliver_for() -> None:
    p = UntilDelivered(resend_after=10.0, deliver_for_s=100.0)
    p.add_result("c1/done", "t/result", b"r", 0.0)
    p.add_notification("n1", "t/notify", b"n", 0.0)
    p.add_notification("n1", "t/notify", b"n", 1.0)  # a repeat is one item
    due, expired = p.due(0.0)
    assert [o.key for o in due] == [("result", "c1/done"), ("notification", "n1")] and not expired
    p.sent(due, 0.0)
    assert p.due(5.0) == ([], []) and p.timeout(5.0) == 5.0
    assert [o.key for o in p.due(10.0)[0]] == [("result", "c1/done"), ("notification", "n1")]
    p.delivered([("c1", "done")], [])
    assert len(p) == 1
    p.reconnected()
    assert [o.key for o in p.due(11.0)[0]] == [("notification", "n1")]
    assert p.due(100.5) == ([], [("notification", "n1")]) and len(p) == 0


def test_a_repeated_result_goes_again_after_what_is_queued() -> None:
    p = UntilDelivered(resend_after=10.0, deliver_for_s=100.0)
    p.add_result("c1/done", "t", b"1", 0.0)
    p.add_result("c2/done", "t", b"2", 0.0)
    p.add_result("c1/done", "t", b"1", 1.0)
    assert [o.key[1] for o in p.due(1.0)[0]] == ["c2/done", "c1/done"]


# --- any interleaving ------------------------------------------------------------------------
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("send"), st.just(0)),
        st.tuples(st.just("deliver"), st.integers(0, 50)),
        st.tuples(st.just("duplicate"), st.integers(0, 50)),
        st.tuples(st.just("drop"), st.integers(0, 50)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("old_ack"), st.integers(0, 50)),
        st.tuples(st.just("forged_ack"), st.integers(1, 5)),
        st.tuples(st.just("reconnect"), st.just(0)),
        st.tuples(st.just("tick"), st.integers(0, 40)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(steps=_steps, start=st.integers(1, 1000), max_in_flight=st.integers(1, 6))
def test_every_outbox_event_is_sent_until_acked_and_never_dropped_before(
    steps: list[tuple[str, int]], start: int, max_in_flight: int
) -> None:
    """A lossy, duplicating network and a console acking what it stored: the outbox drops only
    what the console stored, and once the network behaves, everything gets through."""
    now = 0.0
    w = OutboxWindow(max_in_flight, resend_after=30.0, now=now)
    outbox: list[int] = []
    next_seq = start
    to_console: list[int] = []
    to_locker: list[int] = []
    stored: set[int] = set()
    acks_seen: list[int] = []

    def console_receives(seq: int) -> None:
        stored.add(seq)
        watermark = start - 1
        while watermark + 1 in stored:
            watermark += 1
        to_locker.append(watermark)
        acks_seen.append(watermark)

    def locker_receives(up_to: int) -> None:
        verdict = w.judge_ack(up_to)
        if verdict is AckVerdict.NEW:
            dropped = [s for s in outbox if s <= up_to]
            assert set(dropped) <= stored, "dropped before the console stored it"
            outbox[:] = [s for s in outbox if s > up_to]
            w.acknowledged(up_to, now)
        assert w.acked <= w.highest_sent

    def send() -> None:
        to_console.extend(_read(w, outbox))

    for op, arg in steps:
        if op == "append":
            outbox.extend(range(next_seq, next_seq + arg))
            next_seq += arg
            w.outbox_grew()
        elif op == "send":
            send()
        elif op in ("deliver", "duplicate", "drop") and to_console:
            i = arg % len(to_console)
            seq = to_console[i] if op == "duplicate" else to_console.pop(i)
            if op != "drop":
                console_receives(seq)
        elif op == "ack" and to_locker:
            locker_receives(to_locker.pop(arg % len(to_locker)))
        elif op == "old_ack" and acks_seen:
            locker_receives(acks_seen[arg % len(acks_seen)])
        elif op == "forged_ack":
            assert w.judge_ack(w.highest_sent + arg) is AckVerdict.NEVER_SENT
        elif op == "reconnect":
            to_console.clear()
            to_locker.clear()
            now += 1.0
            w.reconnected(now)
        elif op == "tick":
            now += arg
            w.tick(now)
        if op != "send" and op != "tick" and op != "reconnect":
            send()  # FleetLink's publish pass runs after every wake-up

    # The network behaves from now on: each round the timer may fire, everything is delivered.
    for _ in range(4 * (next_seq - start) + 10):
        if not outbox:
            break
        now += 30.0
        w.tick(now)
        send()
        while to_console:
            console_receives(to_console.pop(0))
        while to_locker:
            locker_receives(to_locker.pop(0))
    assert outbox == [], "an event was never acknowledged"
    assert stored == set(range(start, next_seq))


def test_resend_answer_resends_what_is_held_and_says_gone_only_for_what_is_not() -> None:
    a = answer_resend(3, 9, [4, 5, 8, 12], highest_sent=12)
    assert a.resend == [4, 5, 8]
    assert a.gone == [(3, 3), (6, 7), (9, 9)]
    # never gone for a seq not sent yet (a confused console asking for the future)
    assert answer_resend(5, 9, [5], highest_sent=6).gone == [(6, 6)]
    assert answer_resend(5, 9, [], highest_sent=0).gone == []


@given(
    held=st.sets(st.integers(1, 60)),
    lo=st.integers(1, 60),
    span=st.integers(0, 30),
    highest=st.integers(0, 70),
)
@settings(max_examples=300)
def test_resend_answer_never_says_gone_for_a_held_seq(
    held: set[int], lo: int, span: int, highest: int
) -> None:
    a = answer_resend(lo, lo + span, sorted(held), highest)
    named = {s for f, t in a.gone for s in range(f, t + 1)}
    assert not named & held
    assert all(lo <= s <= min(lo + span, highest) for s in named)
    assert set(a.resend) == {s for s in held if lo <= s <= lo + span}
    # everything sent in the range is answered, one way or the other
    assert named | set(a.resend) >= set(range(lo, min(lo + span, highest) + 1))
