"""The console's parcel projection (fleet_console/parcel_records.py), pure: whatever order and
however often the locker's events arrive, each parcel ends in the same row, never moved back."""

from __future__ import annotations

import itertools
from typing import Any

from fleet_console.parcel_records import Changes, ParcelKey, Row, StoredEvent, project

L = "L1"


class Tables:
    """The parcel tables as dicts: what the database would hold after each batch."""

    def __init__(self) -> None:
        self.parcels: dict[ParcelKey, Row] = {}
        self.returns: dict[ParcelKey, Row] = {}
        self.kiosk: dict[ParcelKey, Row] = {}
        self.logins: dict[tuple[str, int], Row] = {}

    def apply(self, events: list[StoredEvent]) -> Changes:
        changes = project(events, self.parcels, self.returns)
        self.parcels.update(changes.parcels)
        self.returns.update(changes.returns)
        for key, row in changes.kiosk_recipients.items():
            self.kiosk.setdefault(key, row)
        for row in changes.staff_logins:
            self.logins.setdefault((row["locker"], row["seq"]), row)
        return changes


def ev(seq: int, type_: str, **data: Any) -> StoredEvent:
    return StoredEvent(L, seq, 1_000 * seq, type_, data)


LIFE = [
    ev(1, "parcel_announced", parcel_id="p1", barcode="BC1", recipient_id="r1",
       announced_at=1_000),
    ev(2, "parcel_deposited", parcel_id="p1", barcode="BC1", recipient_id="r1", cell=4,
       size="M", courier_id="c1", announced_at=1_000, deposited_at=2_000, due_at=90_000,
       parcels=["p1"], added=False),
    ev(3, "parcel_expired", parcel_id="p1", barcode="BC1", recipient_id="r1", cell=4,
       size="M", courier_id="c1", deposited_at=2_000),
    ev(4, "parcel_returned_to_sender", parcel_id="p1", barcode="BC1", recipient_id="r1",
       cell=4, size="M", courier_id="c1", deposited_at=2_000, staff_id="c2"),
]
FINAL = {"locker": L, "parcel_id": "p1", "barcode": "BC1", "cell": 4, "size": "M",
         "recipient_id": "r1", "courier_id": "c1", "status": "returned_to_sender",
         "announced_at": 1_000, "deposited_at": 2_000, "picked_up_at": None,
         "expires_at": 90_000, "updated_at": 4_000, "updated_seq": 4}


def test_a_parcels_steps_make_one_row() -> None:
    t = Tables()
    t.apply(LIFE[:2])
    assert t.parcels[(L, "p1")]["status"] == "deposited"
    assert t.parcels[(L, "p1")]["expires_at"] == 90_000
    t.apply(LIFE[2:])
    assert t.parcels == {(L, "p1"): FINAL}


def test_any_order_and_any_repetition_end_in_the_same_row() -> None:
    for order in itertools.permutations(LIFE):
        t = Tables()
        for e in order:
            t.apply([e])
            assert t.apply([e]).empty  # the same event again changes nothing
        assert t.parcels[(L, "p1")] == FINAL, [e.seq for e in order]
    t = Tables()
    t.apply(list(reversed(LIFE)) + LIFE)  # one batch, duplicates inside
    assert t.parcels[(L, "p1")] == FINAL


def test_a_late_older_event_never_moves_a_parcel_back() -> None:
    t = Tables()
    t.apply([ev(5, "parcel_picked_up", parcel_id="p1", cell=4)])
    t.apply([LIFE[1], LIFE[0]])  # the deposit and announcement arrive after the pickup
    row = t.parcels[(L, "p1")]
    assert row["status"] == "picked_up" and row["picked_up_at"] == 5_000
    assert (row["barcode"], row["size"], row["courier_id"], row["deposited_at"]) == (
        "BC1", "M", "c1", 2_000)  # filled in by the older events
    assert row["updated_seq"] == 5


def test_adding_to_the_cell_restarts_the_window_of_the_parcels_there() -> None:
    t = Tables()
    t.apply([LIFE[1]])
    t.apply([ev(6, "parcel_deposited", parcel_id="p2", cell=4, size="S", recipient_id="r1",
                deposited_at=6_000, due_at=150_000, parcels=["p1", "p2"], added=True)])
    assert t.parcels[(L, "p1")]["expires_at"] == 150_000
    assert t.parcels[(L, "p2")]["expires_at"] == 150_000
    t.apply([LIFE[1]])  # the first deposit again: the window stays the later one
    assert t.parcels[(L, "p1")]["expires_at"] == 150_000


def test_returns_kiosk_recipients_and_logins() -> None:
    t = Tables()
    t.apply([
        ev(1, "return_collected", return_id="R1", cell=2, size="L", staff_id="s9"),
        ev(2, "return_deposited", return_id="R1", cell=2, size="L", deposited_at=500),
        ev(3, "recipient_added", recipient_id="r7", name="Петров", courier_id="c1",
           has_phone=True, has_email=False),
        ev(4, "staff_login", staff_id="c1", role="courier"),
        ev(5, "staff_login_locked", staff_id="c2", failures=5, until=99_000, alarm=True),
    ])
    assert t.returns[(L, "R1")] | {} == {
        "locker": L, "return_id": "R1", "cell": 2, "size": "L", "recipient_id": None,
        "status": "collected", "deposited_at": 500, "collected_at": 1_000,
        "collected_by": "s9", "updated_at": 2_000, "updated_seq": 2}
    assert t.kiosk[(L, "r7")]["name"] == "Петров" and t.kiosk[(L, "r7")]["has_phone"] is True
    assert [(r["staff_id"], r["outcome"], r["failures"], r["locked_until"])
            for r in t.logins.values()] == [("c1", "ok", None, None), ("c2", "locked", 5, 99_000)]


def test_what_does_not_fit_is_left_out_never_raised() -> None:
    t = Tables()
    changes = t.apply([
        ev(1, "parcel_deposited", parcel_id="x" * 65, cell=1),  # no id fits: no row
        ev(2, "parcel_deposited", parcel_id="p3", cell="four"),  # not the contract: no row
        ev(3, "parcel_deposited", parcel_id="p4", barcode="B" * 200, size="HUGEST", cell=3),
        ev(4, "recipient_added", name="no id"),
        ev(5, "parcel_picked_up"),
        ev(6, "parcel_deposited", parcel_id="p5", barcode="A\x00B", cell=2**40, due_at=2**70),
        ev(7, "parcel_deposited", parcel_id="p\x006"),
        ev(8, "staff_login_locked", staff_id="s\x00", failures=-1, until=2**64),
    ])
    assert list(changes.parcels) == [(L, "p4"), (L, "p5")]
    row = changes.parcels[(L, "p4")]
    assert (row["barcode"], row["size"], row["cell"]) == (None, None, 3)
    row = changes.parcels[(L, "p5")]
    assert (row["barcode"], row["cell"], row["expires_at"]) == (None, None, None)
    assert [(r["staff_id"], r["failures"], r["locked_until"]) for r in changes.staff_logins] == [
        (None, None, None)]
