"""Kiosk logins of couriers and staff (daemon/parcels/staff.py) and a parcel's cell by best fit
(daemon/parcels/sizing.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.parcels import Staff
from contract.pin_hash import hash_pin
from contract.recipients import Recipient
from daemon.fsm.allocation import Candidate
from daemon.parcels.newcomers import DuplicateRecipient, added_recipient
from daemon.parcels.sizing import NoCell, offer_cell
from daemon.parcels.staff import LoginPolicy, StaffDesk, StaffError, staff_open_event

PIN = hash_pin("4321", n=16)


def member(i: str, role: str, code: str, disabled: bool = False) -> Staff:
    return Staff(id=i, name=i, role=role, code=code, pin_hash=PIN, disabled=disabled)  # type: ignore[arg-type]


def desk() -> StaffDesk:
    staff = [member("c1", "courier", "1001"), member("o1", "operator", "2001"),
             member("k1", "collector", "3001"), member("a1", "administrator", "4001"),
             member("gone", "courier", "5001", disabled=True)]
    return StaffDesk(staff, LoginPolicy(attempts=3, lockout_ms=60_000, idle_ms=10_000))


def test_a_login_with_code_and_pin_starts_a_session_of_that_role() -> None:
    d = desk()
    login = d.login("1001", "4321", 0)
    assert login.session is not None and login.session.role == "courier"
    assert [(e.type, e.data) for e in login.events] == [
        ("staff_login", {"staff_id": "c1", "role": "courier"})]
    for code, pin in (("1001", "9999"), ("7777", "4321"), ("5001", "4321")):
        refused = d.login(code, pin, 1)
        assert (refused.session, refused.refused) == (None, "wrong_login")


def test_wrong_pins_lock_that_login_for_a_while_with_an_alarm() -> None:
    d = desk()
    assert d.login("1001", "0000", 0).refused == "wrong_login"
    assert d.login("1001", "0000", 1).refused == "wrong_login"
    locked = d.login("1001", "0000", 2)
    assert (locked.refused, locked.until) == ("login_locked", 60_002)
    [alarm] = locked.events
    assert alarm.type == "staff_login_locked" and alarm.alarm
    assert alarm.data == {"failures": 3, "until": 60_002, "alarm": True, "staff_id": "c1",
                          "role": "courier"}
    assert "4321" not in repr(alarm) and "1001" not in repr(alarm)
    assert d.login("1001", "4321", 30_000).refused == "login_locked"  # even the right PIN
    assert d.login("2001", "4321", 30_000).session is not None  # other logins unaffected
    # A second lockout in a row lasts twice as long (up to a day); a good login forgets them.
    for t in (60_002, 60_003):
        assert d.login("1001", "0000", t).refused == "wrong_login"
    again = d.login("1001", "0000", 60_004)
    assert (again.refused, again.until) == ("login_locked", 60_004 + 120_000)
    assert d.login("1001", "4321", 180_004).session is not None
    for t in (180_005, 180_006, 180_007):
        last = d.login("1001", "0000", t)
    assert last.until == 180_007 + 60_000


def test_a_known_code_gets_a_few_pin_guesses_a_day() -> None:
    d = StaffDesk(desk().staff, verify=lambda pin, h: False)  # the defaults: 15 min, a day
    now, guesses = 0, 0
    while now < 30 * 24 * 3600_000:
        login = d.login("1001", "0000", now)
        if login.refused == "login_locked" and not login.events:
            assert login.until is not None
            now = login.until
            continue
        guesses += 1
    assert guesses < 3 * 30 + 30  # about 3 a day once the lockouts reach a day


def test_a_restart_or_a_clock_step_does_not_lift_a_lockout_and_strangers_use_bounded_memory(
) -> None:
    d = desk()
    for t in range(3):
        d.login("1001", "0000", t)
    again = desk()
    again.restore(json.loads(json.dumps(d.snapshot())))
    assert again.login("1001", "4321", 1_000).refused == "login_locked"
    again.shift(-30_000)  # the clock was 30 s fast: the lockout still lasts its full minute
    assert again.login("1001", "4321", 30_001).refused == "login_locked"
    assert again.login("1001", "4321", 30_002).session is not None
    small = StaffDesk(desk().staff, LoginPolicy(kept_logins=50), verify=lambda pin, h: False)
    for i in range(500):
        small.login(f"{900000 + i}", "0000", i)
    assert len(small.snapshot()["failures"]) <= 50


def test_a_session_ends_on_logout_idle_time_or_the_door_closing() -> None:
    d = desk()
    s1 = d.login("1001", "4321", 0).session
    s2 = d.login("2001", "4321", 0).session
    s3 = d.login("3001", "4321", 0).session
    assert s1 and s2 and s3
    assert [e.data["reason"] for e in d.logout(s1.id, 1)] == ["logout"]
    with pytest.raises(StaffError, match="no_session"):
        d.session(s1.id, 2)
    d.opened(s2.id, 7)
    assert [e.data["reason"] for e in d.door_closed(7, 3)] == ["door_closed"]
    d.session(s3.id, 9_000)  # a touch keeps it alive
    assert d.tick(18_000) == []
    assert [e.data["reason"] for e in d.tick(19_000)] == ["idle"]


@pytest.mark.parametrize(
    ("code", "may", "may_not"),
    [
        ("1001", ["deposit", "take_back", "collect_returns"], ["open", "set_language"]),
        ("2001", ["block", "unblock", "open", "resume_code_entry"], ["deposit", "reports"]),
        ("3001", ["block", "open", "collect_returns"], ["deposit", "set_language"]),
        ("4001", ["set_language", "service_view", "issue_return_code", "reports"],
         ["deposit", "open"]),
    ],
)
def test_roles_gate_what_a_session_may_do(code: str, may: list, may_not: list) -> None:
    d = desk()
    session = d.login(code, "4321", 0).session
    assert session is not None
    for action in may:
        assert d.authorize(session.id, action, 1, reason="jammed door") is session
    for action in may_not:
        with pytest.raises(StaffError, match="forbidden"):
            d.authorize(session.id, action, 1, reason="x")


def test_an_open_needs_a_reason_and_records_what_the_cell_held() -> None:
    d = desk()
    session = d.login("3001", "4321", 0).session
    assert session is not None
    with pytest.raises(StaffError, match="reason_required"):
        d.authorize(session.id, "open", 1, reason="  ")
    event = staff_open_event(session, 4, "cash box", "parcel", ["p1"])
    assert event.type == "cell_opened_by_staff"
    assert event.data == {"staff_id": "k1", "role": "collector", "reason": "cash box",
                          "holds": "parcel", "parcels": ["p1"]}


def cell(id_: int, size: str, state: str = "free", business: str = "parcels") -> Candidate:
    return Candidate(id_, size, business, state, "closed", False)


def test_a_parcel_gets_its_size_or_the_next_one_up_or_a_clear_refusal() -> None:
    cells = [cell(1, "S", "occupied"), cell(2, "M"), cell(3, "L"),
             cell(4, "S", business="storage")]
    assert (offer_cell(cells, "M").cell, offer_cell(cells, "M").larger) == (2, False)
    small = offer_cell(cells, "S")  # S full (and cell 4 is storage's): the next size up
    assert (small.cell, small.size, small.larger) == (2, "M", True)
    assert offer_cell(cells, "L").cell == 3
    with pytest.raises(NoCell, match="size L"):
        offer_cell(cells, "L", reserved={3})


def test_a_recipient_added_by_a_courier_is_reported_without_phone_or_email() -> None:
    r = Recipient(id="new1", name="Anna", department="Sales", phone="+49151 2345 6789",
                  email="anna@example.com")
    event = added_recipient(r, "c1", {"r1"})
    assert event.type == "recipient_added"
    assert event.data == {"recipient_id": "new1", "name": "Anna", "courier_id": "c1",
                          "has_phone": True, "has_email": True, "department": "Sales"}
    with pytest.raises(DuplicateRecipient):
        added_recipient(r, "c1", {"new1"})


LOGIN_OPS = st.lists(st.tuples(st.sampled_from(["1001", "2001", "9999"]),
                               st.sampled_from(["4321", "0000"]),
                               st.integers(0, 20 * 60_000)), max_size=40)


@settings(max_examples=100, deadline=None)
@given(LOGIN_OPS)
def test_any_login_sequence_locks_after_three_wrong_and_never_admits_a_wrong_pin(
    ops: list[tuple[str, str, int]]
) -> None:
    d = StaffDesk(desk().staff, verify=lambda pin, h: pin == "4321")
    now = 0
    wrong_in_row: dict[str, int] = {}
    locked_until: dict[str, int] = {}
    for code, pin, dt in ops:
        now += dt
        login = d.login(code, pin, now)
        if now < locked_until.get(code, 0):
            assert login.refused == "login_locked" and not login.events
            continue
        if login.session is not None:
            assert pin == "4321" and code != "9999"
            wrong_in_row[code] = 0
            continue
        wrong_in_row[code] = wrong_in_row.get(code, 0) + 1
        if wrong_in_row[code] >= 3:
            assert login.refused == "login_locked" and login.until is not None
            assert [e.type for e in login.events] == ["staff_login_locked"]
            assert login.events[0].alarm and "pin" not in repr(login.events[0].data)
            locked_until[code], wrong_in_row[code] = login.until, 0
        else:
            assert login.refused == "wrong_login" and not login.events
