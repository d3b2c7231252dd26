"""The pure parcel core driven together as lockerd will drive it: a courier logs in, deposits by
best fit, the code goes out, the recipient picks up with code + phone digits; a second parcel is
added; a stranger's guesses fail. No event ever holds a code, PIN, phone or e-mail."""

from __future__ import annotations

from contract.parcels import ParcelsSection
from contract.pin_hash import hash_pin
from daemon.fsm.actions import Event
from daemon.fsm.allocation import Candidate
from daemon.parcels.codes import CodeBook, Verdict, code_policy
from daemon.parcels.effects import IssueCode, Notify, OpenCell, RevokeCode
from daemon.parcels.lifecycle import ParcelBook, ParcelRules
from daemon.parcels.sizing import offer_cell
from daemon.parcels.staff import LoginPolicy, StaffDesk

SECTION = ParcelsSection.model_validate({
    "address": "Main St 1",
    "staff": [{"id": "c1", "name": "Carl", "role": "courier", "code": "1001",
               "pin_hash": hash_pin("2468", n=16)}],
    "recipients": [{"id": "r1", "name": "Anna", "phone": "+4915123456789",
                    "email": "anna@example.com"}],
})


class Driver:
    """What the app will do with the core's output: record events, carry out effects."""

    def __init__(self) -> None:
        self.book = ParcelBook(ParcelRules.from_section(SECTION))
        self.codes = CodeBook(b"locker-secret", code_policy(SECTION))
        self.events: list[Event] = []
        self.sent: list[tuple[str, str]] = []  # (notification kind, code or "")
        self.opened: list[int] = []

    def run(self, out: list) -> None:
        code = ""
        for action in out:
            if isinstance(action, Event):
                self.events.append(action)
            elif isinstance(action, OpenCell):
                self.opened.append(action.cell)
            elif isinstance(action, IssueCode):
                recipient = SECTION.recipient(action.recipient_id)
                assert recipient is not None
                issued = self.codes.issue(action.cell, recipient.phone, action.seed)
                # What the outbox keeps is (seed, attempt): the code is derived again to send.
                code = self.codes.derive(action.seed, issued.attempt, issued.factor)
                assert code == issued.code
            elif isinstance(action, RevokeCode):
                self.codes.revoke(action.cell)
            elif isinstance(action, Notify):
                self.sent.append((action.kind, code))


def test_a_day_at_the_parcel_locker() -> None:
    d = Driver()
    desk = StaffDesk(SECTION.staff, LoginPolicy.from_section(SECTION))
    login = desk.login("1001", "2468", 0)
    assert login.session is not None
    d.events.extend(login.events)
    desk.authorize(login.session.id, "deposit", 1)
    cells = [Candidate(1, "S", "parcels", "free", "closed", False),
             Candidate(2, "M", "parcels", "free", "closed", False)]
    cell = offer_cell(cells, "S").cell
    d.run(d.book.begin_deposit("p1", cell=cell, size="S", recipient_id="r1",
                               courier_id="c1", barcode="BC123", now_ms=10))
    desk.opened(login.session.id, cell)
    d.run(d.book.door_closed(cell, True, 20))
    d.events.extend(desk.door_closed(cell, 20))
    [(kind, code)] = d.sent
    assert kind == "parcel_arrived" and len(code) == 6
    # Another courier visit adds a parcel: same cell, same code, a notice.
    d.run(d.book.begin_deposit("p2", cell=cell, size="S", recipient_id="r1",
                               courier_id="c1", barcode="BC124", now_ms=30))
    d.run(d.book.door_closed(cell, True, 40))
    assert d.sent[-1][0] == "parcel_added"
    # A stranger guesses; the recipient then types code and the last 4 digits of the phone.
    assert d.codes.check("000000", "0000", 50).verdict is Verdict.WRONG
    assert d.codes.asks_factor(code) and not d.codes.asks_factor(code + "1234")
    check = d.codes.check(code, "6789", 60)
    assert check.cell == cell
    assert d.book.parcels_in(cell) == ["p1", "p2"]
    d.run(d.book.begin_pickup(cell, 60))
    d.run(d.book.door_closed(cell, False, 70))
    assert d.opened == [cell, cell, cell]
    assert d.book.parcels_in(cell) == []
    assert d.codes.check(code, "6789", 80).verdict is not Verdict.OK  # used: never again
    assert [e.type for e in d.events] == [
        "staff_login", "parcel_deposited", "staff_logout", "parcel_deposited",
        "parcel_picked_up", "parcel_picked_up"]
    text = repr(d.events)
    for secret in (code, "2468", "1001", "+4915123456789", "6789", "anna@example.com"):
        assert secret not in text
