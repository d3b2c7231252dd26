"""A parcel's life (daemon/parcels/lifecycle.py) and a return's (returns.py): door events in,
events and effects out; illegal steps refused without a change; no secret in any event."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.events import EVENTS
from daemon.fsm.actions import Event
from daemon.parcels.effects import IssueCode, Notify, OpenCell, RevokeCode
from daemon.parcels.lifecycle import (
    BOARD_OFFLINE,
    CELL_BLOCKED,
    DEPOSITED,
    EXPIRED,
    FAULT,
    FINAL,
    PICKED_UP,
    ParcelBook,
    ParcelError,
    ParcelRules,
)
from daemon.parcels.returns import ReturnBook, RevokeReturnCode

H = 3600_000
RULES = ParcelRules(window_ms=48 * H, reminders_ms=(24 * H, 2 * H), pickup_report=True)


def types(out: list) -> list[str]:
    return [a.type if isinstance(a, Event) else type(a).__name__ for a in out]


def deposit(book: ParcelBook, pid: str, cell: int, now: int, recipient: str = "r1",
            barcode: str | None = None, item: bool | None = True) -> list:
    assert book.begin_deposit(pid, cell=cell, size="M", recipient_id=recipient,
                              courier_id="c1", barcode=barcode, now_ms=now) == [
        OpenCell(cell, "parcel_deposit")]
    return book.door_closed(cell, item, now)


def test_deposit_notifies_once_with_a_code_and_the_code_opens_for_the_pickup() -> None:
    book = ParcelBook(RULES)
    out = deposit(book, "p1", 4, 0, barcode="BC1")
    assert types(out) == ["parcel_deposited", "IssueCode", "Notify"]
    assert out[0].data["due_at"] == 48 * H and out[0].data["barcode"] == "BC1"
    assert out[1] == IssueCode(4, "r1", "p1") and out[2].kind == "parcel_arrived"
    assert book.begin_pickup(4, 10) == [OpenCell(4, "parcel_pickup")]
    out = book.door_closed(4, False, 20)
    assert types(out) == ["parcel_picked_up", "RevokeCode", "Notify"]
    assert out[2].kind == "pickup_report"
    assert book.parcels["p1"].state == PICKED_UP and book.load_of(4) is None


def test_adding_to_the_cell_keeps_one_code_and_restarts_the_window() -> None:
    book = ParcelBook(RULES)
    deposit(book, "p1", 4, 0)
    with pytest.raises(ParcelError, match="cell_taken"):
        book.begin_deposit("p9", cell=4, size="S", recipient_id="r2", courier_id="c1",
                           barcode=None, now_ms=1)
    out = deposit(book, "p2", 4, 10 * H)
    assert types(out) == ["parcel_deposited", "Notify"]  # no new code: the same one opens
    assert out[0].data["added"] is True and out[0].data["parcels"] == ["p1", "p2"]
    assert out[1].kind == "parcel_added"
    assert book.due_at(4) == 58 * H
    book.begin_pickup(4, 11 * H)
    out = book.door_closed(4, None, 11 * H)
    assert types(out) == ["parcel_picked_up", "parcel_picked_up", "RevokeCode", "Notify"]


def test_a_door_never_opened_or_closed_empty_cancels_and_sends_no_code() -> None:
    book = ParcelBook(RULES)
    book.begin_deposit("p1", cell=2, size="S", recipient_id="r1", courier_id="c1",
                       barcode="B", now_ms=0)
    assert types(book.open_failed(2, 5)) == ["parcel_cancelled"]
    assert book.load_of(2) is None
    out = deposit(book, "p2", 2, 10, barcode="B", item=False)  # the barcode is free again
    assert types(out) == ["parcel_cancelled"] and out[0].data["reason"] == "closed_empty"
    # A pickup whose door never opened leaves the parcel waiting (its code still works).
    deposit(book, "p3", 3, 20)
    book.begin_pickup(3, 30)
    assert book.open_failed(3, 40) == []
    assert book.parcels["p3"].state == DEPOSITED


def test_duplicate_barcodes_are_refused_and_an_announced_barcode_fills_the_recipient() -> None:
    book = ParcelBook(RULES)
    assert types(book.announce("p1", "BC1", "r7", 0)) == ["parcel_announced"]
    with pytest.raises(ParcelError, match="duplicate_barcode"):
        book.announce("p2", "BC1", "r8", 1)
    with pytest.raises(ParcelError, match="wrong_recipient"):
        book.begin_deposit("x", cell=1, size="S", recipient_id="r8", courier_id="c1",
                           barcode="BC1", now_ms=2)
    book.begin_deposit("x", cell=1, size="S", recipient_id=None, courier_id="c1",
                       barcode="BC1", now_ms=2)
    out = book.door_closed(1, True, 3)
    assert out[0].data["parcel_id"] == "p1" and out[0].data["recipient_id"] == "r7"
    assert out[0].data["announced_at"] == 0
    with pytest.raises(ParcelError, match="duplicate_barcode"):
        book.begin_deposit("p3", cell=2, size="S", recipient_id="r1", courier_id="c1",
                           barcode="BC1", now_ms=4)


def test_a_scanned_barcode_is_cleaned_and_may_be_required() -> None:
    book = ParcelBook(ParcelRules(barcode_required=True))
    with pytest.raises(ParcelError, match="barcode_required"):
        book.begin_deposit("p1", cell=1, size="S", recipient_id="r1", courier_id="c1",
                           barcode="  ", now_ms=0)
    with pytest.raises(ParcelError, match="bad_barcode"):
        book.begin_deposit("p1", cell=1, size="S", recipient_id="r1", courier_id="c1",
                           barcode="AB CD", now_ms=0)
    out = deposit(book, "p1", 1, 0, barcode="JJD0001234\r\n")  # the scanner's Enter
    assert out[0].data["barcode"] == "JJD0001234"
    with pytest.raises(ParcelError, match="duplicate_barcode"):
        book.begin_deposit("p2", cell=2, size="S", recipient_id="r1", courier_id="c1",
                           barcode=" JJD0001234", now_ms=1)


def test_faults_gone_ends_only_the_faults_that_no_longer_hold() -> None:
    """lockerd's start: the book's faults against the restored cell machine (a crash between
    the machine's end of a fault and the book's write). A cell keeps its pause while a fault of
    another cause holds; a legacy fault (no cause) ends only when nothing holds."""
    book = ParcelBook(RULES)
    for cell in (2, 3, 4):
        deposit(book, f"p{cell}", cell, 0)
    book.fault_started(2, 10 * H, CELL_BLOCKED)
    book.fault_started(3, 10 * H, CELL_BLOCKED)
    book.fault_started(3, 11 * H, BOARD_OFFLINE)
    book.fault_started(4, 10 * H, FAULT)
    holding = {(3, BOARD_OFFLINE), (4, FAULT)}
    assert book.faults_gone(12 * H, lambda c, cause: (c, cause) in holding) == [2]
    assert book.due_at(2) == 50 * H and book.stopped(3) and book.stopped(4)
    assert book.faults[3] == [(10 * H, 12 * H, CELL_BLOCKED), (11 * H, None, BOARD_OFFLINE)]
    assert book.faults_gone(13 * H, lambda c, cause: False) == [3, 4]
    assert book.due_at(4) == 51 * H
    assert book.faults_gone(14 * H, lambda c, cause: True) == []  # nothing left going on


def test_reminders_and_expiry_pause_on_a_fault_then_the_courier_takes_it_back() -> None:
    book = ParcelBook(RULES)
    deposit(book, "p1", 5, 0)
    assert book.tick(23 * H) == []
    out = book.tick(24 * H)
    assert [(n.kind, n.key) for n in out] == [("parcel_reminder", f"reminder:5:0:{24 * H}")]
    assert book.tick(25 * H) == []  # once only
    book.fault_started(5, 30 * H)
    assert book.due_at(5) is None
    assert book.tick(60 * H) == []  # blocked by a fault: nothing expires
    book.fault_ended(5, 40 * H)
    assert book.due_at(5) == 58 * H
    out = book.tick(56 * H)
    assert [n.kind for n in out] == ["parcel_reminder"]
    assert book.tick(57 * H) == []
    out = book.tick(58 * H)
    assert types(out) == ["parcel_expired", "RevokeCode", "Notify"]
    assert book.parcels["p1"].state == EXPIRED
    with pytest.raises(ParcelError, match="illegal_transition"):
        book.begin_pickup(5, 59 * H)
    assert [ld.cell for ld in book.expired_loads()] == [5]
    assert book.begin_take_back(5, "c2", 59 * H) == [OpenCell(5, "parcel_take_back")]
    out = book.door_closed(5, False, 59 * H)
    assert types(out) == ["parcel_returned_to_sender"] and out[0].data["staff_id"] == "c2"
    assert book.expired_loads() == []


def test_illegal_steps_are_refused_and_change_nothing() -> None:
    book = ParcelBook(RULES)
    deposit(book, "p1", 5, 0)
    before = copy.deepcopy(book)
    with pytest.raises(ParcelError, match="illegal_transition"):
        book.begin_take_back(5, "c1", 1)  # not expired yet
    with pytest.raises(ParcelError, match="no_parcel"):
        book.door_closed(5, True, 1)  # nothing was opened
    with pytest.raises(ParcelError, match="no_parcel"):
        book.begin_pickup(6, 1)
    with pytest.raises(ParcelError, match="duplicate_parcel"):
        book.begin_deposit("p1", cell=7, size="S", recipient_id="r1", courier_id="c1",
                           barcode=None, now_ms=1)
    assert book == before
    book.begin_pickup(5, 2)
    with pytest.raises(ParcelError, match="busy"):
        book.begin_pickup(5, 3)


def test_a_return_is_dropped_with_its_code_and_collected() -> None:
    returns = ReturnBook()
    returns.create("ret1", "r1")
    assert returns.begin_drop("ret1", 9, "L", 0) == [OpenCell(9, "return_drop")]
    assert returns.door_closed(9, False, 1) == []  # closed empty: the code still works
    returns.begin_drop("ret1", 9, "L", 2)
    out = returns.door_closed(9, True, 3)
    assert types(out) == ["return_deposited", "RevokeReturnCode"]
    assert out[1] == RevokeReturnCode("ret1") and out[0].data["size"] == "L"
    assert [r.id for r in returns.waiting()] == ["ret1"]
    returns.begin_collect(9, "col1", 4)
    out = returns.door_closed(9, None, 5)
    assert types(out) == ["return_collected"] and out[0].data["staff_id"] == "col1"
    with pytest.raises(ParcelError):
        returns.begin_collect(9, "col1", 6)


#: A phone, an e-mail address, or a run of digits as long as a code (times are ints, not text).
SECRET_RE = re.compile(r"\+\d{8,}|@|\d{6}")


def texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in texts(v)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in [k, *texts(v)]]
    return []
OPS = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 4), st.sampled_from(["r1", "r2"]),
              st.sampled_from([None, "B1", "B2", "B3"])),
    st.tuples(st.just("close"), st.integers(1, 4), st.sampled_from([True, False, None])),
    st.tuples(st.just("fail"), st.integers(1, 4)),
    st.tuples(st.just("pickup"), st.integers(1, 4)),
    st.tuples(st.just("take_back"), st.integers(1, 4)),
    st.tuples(st.just("fault"), st.integers(1, 4)),
    st.tuples(st.just("unfault"), st.integers(1, 4)),
    st.tuples(st.just("tick"), st.integers(0, 30 * H)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, max_size=60))
def test_any_sequence_keeps_the_books_true_and_events_free_of_secrets(ops: list[tuple]) -> None:
    book = ParcelBook(RULES)
    now, n = 0, 0
    finals: dict[str, int] = {}
    keys: list[str] = []
    codes_issued: list[int] = []
    for op in ops:
        before = copy.deepcopy(book)
        try:
            if op[0] == "deposit":
                n += 1
                out = book.begin_deposit(f"p{n}", cell=op[1], size="S", recipient_id=op[2],
                                         courier_id="c1", barcode=op[3], now_ms=now)
            elif op[0] == "close":
                out = book.door_closed(op[1], op[2], now)
            elif op[0] == "fail":
                out = book.open_failed(op[1], now)
            elif op[0] == "pickup":
                out = book.begin_pickup(op[1], now)
            elif op[0] == "take_back":
                out = book.begin_take_back(op[1], "c2", now)
            elif op[0] == "fault":
                book.fault_started(op[1], now)
                out = []
            elif op[0] == "unfault":
                book.fault_ended(op[1], now)
                out = []
            else:
                now += op[1]
                out = book.tick(now)
        except ParcelError:
            assert book == before  # a refusal changes nothing
            continue
        for action in out:
            if isinstance(action, Event):
                assert action.type in EVENTS
                allowed = set(EVENTS[action.type].data.model_fields)
                assert set(action.data) <= allowed, action
                assert not any(SECRET_RE.search(t) for t in texts(action.data)), action
                if action.type in ("parcel_picked_up", "parcel_returned_to_sender",
                                   "parcel_cancelled"):
                    pid = action.data["parcel_id"]
                    finals[pid] = finals.get(pid, 0) + 1
            elif isinstance(action, Notify):
                keys.append(action.key)
            elif isinstance(action, IssueCode):
                codes_issued.append(action.cell)
            elif isinstance(action, RevokeCode):
                assert action.cell in codes_issued
        # Invariants: one recipient per cell, its parcels all in it, final parcels in no cell.
        for cell, load in book.loads.items():
            assert {book.parcels[p].recipient_id for p in load.parcels} <= {load.recipient_id}
            assert all(book.parcels[p].cell == cell for p in load.parcels)
        in_cells = {p for ld in book.loads.values() for p in ld.parcels}
        for pid, parcel in book.parcels.items():
            if parcel.state in FINAL:
                assert pid not in in_cells
                assert finals.get(pid) == 1
    assert len(keys) == len(set(keys))  # each notification queued once
    # A restart brings back the same book (the snapshot is JSON, with no secret in it).
    again = ParcelBook(RULES)
    again.restore(json.loads(json.dumps(book.snapshot())))
    assert again == book


def test_a_clock_step_keeps_the_window_as_long_as_it_was() -> None:
    book = ParcelBook(RULES)
    deposit(book, "p1", 5, 0)
    book.fault_started(5, 10 * H)
    book.fault_ended(5, 11 * H)
    book.shift(-5 * H)  # the wall clock was 5 h fast and got corrected
    assert book.due_at(5) == 44 * H
    book.tick(44 * H - 1)
    assert book.parcels["p1"].state == DEPOSITED
    assert types(book.tick(44 * H))[0] == "parcel_expired"
    book.forget_finished(100 * H)
    assert "p1" in book.parcels  # expired is not finished: it waits for the courier


def test_a_malformed_snapshot_is_refused_and_changes_nothing() -> None:
    book = ParcelBook(RULES)
    deposit(book, "p1", 5, 0)
    before = copy.deepcopy(book)
    for bad in ({"v": 2}, {"v": 1, "parcels": [{"id": "x"}], "loads": [], "faults": {}},
                {"v": 1, "parcels": [], "loads": [{"cell": 1, "recipient_id": "r",
                                                   "parcels": ["nope"]}], "faults": {}}):
        with pytest.raises(ValueError, match="malformed"):
            book.restore(bad)
    assert book == before
