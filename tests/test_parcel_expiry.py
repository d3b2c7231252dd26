"""The pickup window that knows faults (daemon/parcels/expiry.py): it stops while the cell is
blocked by a fault and resumes; reminders move with it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.parcels.expiry import due_at, expired, paused_ms, reminders_due

H = 3600_000
faults_st = st.lists(
    st.tuples(st.integers(-10 * H, 100 * H), st.integers(0, 10 * H)).map(
        lambda t: (t[0], t[0] + t[1])),
    max_size=8,
)


def overlap(faults: list[tuple[int, int]], a: int, b: int) -> int:
    """Length of [a, b) covered by the faults, counted point by point on a minute grid."""
    covered = 0
    step = 60_000
    for t in range(a, b, step):
        if any(s <= t < e for s, e in faults):
            covered += step
    return covered


def test_a_fault_stops_the_window_and_it_resumes_after() -> None:
    # 48 h window from 0; the cell was blocked by a lock fault from 10 h to 13 h.
    assert due_at(0, 48 * H, [(10 * H, 13 * H)]) == 51 * H
    assert not expired(0, 48 * H, [(10 * H, 13 * H)], 50 * H)
    assert expired(0, 48 * H, [(10 * H, 13 * H)], 51 * H)
    # A fault going on now stops the clock: no end is known, nothing expires.
    assert due_at(0, 48 * H, [(47 * H, None)]) is None
    assert not expired(0, 48 * H, [(47 * H, None)], 500 * H)
    # A fault before the window (an earlier parcel's) does not count.
    assert due_at(20 * H, 48 * H, [(0, 10 * H)]) == 68 * H
    # A reminder 2 h before the end moves with the fault.
    assert reminders_due(0, 48 * H, [(10 * H, 13 * H)], 46 * H, [2 * H]) == []
    assert reminders_due(0, 48 * H, [(10 * H, 13 * H)], 49 * H, [24 * H, 2 * H]) == [24 * H, 2 * H]


@settings(deadline=None)
@given(st.integers(0, 50 * H).map(lambda m: m - m % 60_000),
       st.integers(1, 60).map(lambda h: h * H),
       faults_st.map(lambda fs: [(s - s % 60_000, e - e % 60_000) for s, e in fs]))
def test_the_window_ends_after_its_length_plus_the_faults_inside_it(
    start: int, window: int, faults: list[tuple[int, int]]
) -> None:
    end = due_at(start, window, faults)
    assert end is not None
    assert end == start + window + overlap(faults, start, end)
    assert paused_ms(start, faults, end) == overlap(faults, start, end)
    assert expired(start, window, faults, end)
    assert not expired(start, window, faults, end - 1) or end - 1 < start


@settings(deadline=None)
@given(st.integers(0, 10 * H), faults_st, st.integers(0, 120 * H))
def test_reminders_come_in_order_before_the_end(
    start: int, faults: list[tuple[int, int]], now: int
) -> None:
    window, before = 48 * H, [24 * H, 2 * H]
    due = reminders_due(start, window, faults, now, before)
    assert due == sorted(due, reverse=True)
    if expired(start, window, faults, now):
        assert due == before
    if 2 * H in due:
        assert 24 * H in due


def test_the_window_runs_again_only_when_the_cell_has_no_fault_left() -> None:
    """A lock fault, then the board offline and back: the lock fault still stops the clock."""
    from daemon.parcels.lifecycle import ParcelBook, ParcelRules

    book = ParcelBook(ParcelRules(window_ms=48 * H, reminders_ms=()))
    assert book.begin_deposit("p1", cell=4, size="M", recipient_id="r1", courier_id="c1",
                              barcode=None, now_ms=0)
    book.door_closed(4, True, 0)
    assert book.fault_started(4, 10 * H, "cell_blocked")  # the window stops
    assert not book.fault_started(4, 11 * H, "board_offline")  # already stopped
    assert not book.fault_ended(4, 12 * H, "board_offline")  # the lock fault remains
    assert book.due_at(4) is None
    assert book.tick(100 * H) == []  # nothing expires while the cell is blocked
    assert book.fault_ended(4, 100 * H, "cell_blocked")  # no fault left: it runs again
    assert book.due_at(4) == 138 * H  # 48 h of usable time from 0, 90 h blocked
    # Ended twice, or a fault that never began, changes nothing.
    assert not book.fault_ended(4, 101 * H, "cell_blocked")
    assert not book.fault_ended(4, 101 * H, "board_offline")
    assert book.due_at(4) == 138 * H


def test_the_causes_of_the_faults_survive_a_restart() -> None:
    from daemon.parcels.lifecycle import ParcelBook, ParcelRules

    book = ParcelBook(ParcelRules(window_ms=48 * H, reminders_ms=()))
    book.begin_deposit("p1", cell=4, size="M", recipient_id="r1", courier_id="c1",
                       barcode=None, now_ms=0)
    book.door_closed(4, True, 0)
    book.fault_started(4, 10 * H, "cell_blocked")
    book.fault_started(4, 11 * H, "board_offline")
    again = ParcelBook(book.rules)
    again.restore(book.snapshot())
    assert not again.fault_ended(4, 12 * H, "board_offline")
    assert again.fault_ended(4, 20 * H, "cell_blocked")
    assert again.due_at(4) == 58 * H


def test_a_fault_stored_before_causes_were_kept_ends_as_it_did() -> None:
    from daemon.parcels.lifecycle import ParcelBook, ParcelRules

    book = ParcelBook(ParcelRules(window_ms=48 * H, reminders_ms=()))
    book.begin_deposit("p1", cell=4, size="M", recipient_id="r1", courier_id="c1",
                       barcode=None, now_ms=0)
    book.door_closed(4, True, 0)
    snap = book.snapshot()
    snap["faults"] = {"4": [[10 * H, None]]}  # the form before causes
    again = ParcelBook(book.rules)
    again.restore(snap)
    assert again.due_at(4) is None
    assert again.fault_ended(4, 12 * H, "board_offline")
    assert again.due_at(4) == 50 * H
