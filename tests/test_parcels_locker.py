"""The parcel business end to end (issue 12): a real lockerd with a pty relay board, the kiosk
API over real HTTP, notifications through a real SMTP server and the test SMS gateway.

Cells (tests/fixtures/storage_locker.py): 1 S and 6 S (charging) rent for storage; 2 S, 3 M,
4 M, 5 L take parcels. The code a recipient uses is read from the e-mail the SMTP server got.
"""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any

import pytest

from contract.pin_hash import hash_pin
from tests.fixtures.storage_locker import StorageRig, profile_toml

PARCEL_CELLS = [2, 3, 4, 5]

PROFILE = profile_toml().replace(
    '[[cell_groups]]\nname = "small"',
    '[[cell_groups]]\nname = "parcels"\ncells = [2, 3, 4, 5]\nbusiness = "parcels"\n'
    '[[cell_groups]]\nname = "small"',
)


def parcels_toml(notify: str = "", **extra: Any) -> str:
    lines = [
        'address = "1 Test Street"',
        'opening_hours = "8-20"',
        *(f"{k} = {v}" for k, v in extra.items()),
        "[notify]",
        'pickup_emails = ["admin@example.org"]',
        notify,
    ]
    staff = [("c1", "Carl", "courier", "1001", "2468"), ("o1", "Olga", "operator", "2002", "1357"),
             ("k1", "Kim", "collector", "3003", "8642"),
             ("a1", "Ann", "administrator", "4004", "9753")]
    for sid, name, role, code, pin in staff:
        lines += ["[[staff]]", f'id = "{sid}"', f'name = "{name}"', f'role = "{role}"',
                  f'code = "{code}"', f'pin_hash = "{hash_pin(pin, n=16)}"']
    people = [("r1", "Ivan Petrov", "+79161234567", "ivan@example.org", "Accounting"),
              ("r2", "Anna Smirnova", None, "anna@example.org", "Sales"),
              ("r3", "Boris Orlov", "+79160000003", None, "Sales")]
    for rid, name, phone, mail, dept in people:
        lines += ["[[recipients]]", f'id = "{rid}"', f'name = "{name}"',
                  f'department = "{dept}"']
        if phone:
            lines.append(f'phone = "{phone}"')
        if mail:
            lines.append(f'email = "{mail}"')
    return "\n".join(lines) + "\n"


async def parcel_locker(storage_locker: Any, notify: str = "", **extra: Any) -> StorageRig:
    return await storage_locker(PROFILE, parcels=parcels_toml(notify, **extra))


async def login(rig: StorageRig, code: str = "1001", pin: str = "2468") -> str:
    answer = await rig.http.post("/api/v1/parcels/staff/login", json={"code": code, "pin": pin})
    assert answer.status_code == 200, answer.text
    return answer.json()["session"]


def mail_to(rig: StorageRig, address: str) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.content, policy=email.policy.default)  # type: ignore[misc]
            for m in rig.mailbox.messages if address in m.recipients]


async def wait_mail(rig: StorageRig, address: str, count: int = 1) -> list[Any]:
    import asyncio
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = mail_to(rig, address)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} e-mail(s) to {address} did not come")


def code_in(message: Any) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"code: (\d+)", body) or re.search(r"Код доступа: (\d+)", body)
    assert found, body
    return found.group(1)


async def deposit(rig: StorageRig, session: str, recipient: str = "r1", size: str = "M",
                  **extra: Any) -> dict:
    mark = rig.mark
    answer = await rig.http.post("/api/v1/parcels/deposits", json={
        "session": session, "recipient_id": recipient, "size": size, **extra})
    assert answer.status_code == 201, answer.text
    placed = answer.json()
    await rig.door_cycle(placed["cell"], "deposit_completed" if not extra.get("cell")
                         else "temporary_access_completed", since=mark)
    await rig.wait_event("parcel_deposited", cell=placed["cell"], since=mark)
    return placed


async def test_a_courier_deposit_reaches_the_recipient_by_email_and_the_code_opens_it(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    found = await rig.http.get("/api/v1/parcels/recipients",
                               params={"session": session, "q": "petr"})
    assert found.status_code == 200, found.text
    hits = found.json()["recipients"]
    assert [h["id"] for h in hits] == ["r1"] and "phone" not in hits[0]

    placed = await deposit(rig, session, "r1", "M", barcode="PKG-0001")
    assert placed["cell"] in PARCEL_CELLS and placed["size"] == "M"
    mail = (await wait_mail(rig, "ivan@example.org"))[0]
    assert "1 Test Street" in mail.get_body(preferencelist=("plain",)).get_content()
    code = code_in(mail)
    sms = await rig.sms.wait_async(1)
    assert code in sms.json()["text"]
    # Nothing in the store holds the code in clear.
    for path in rig.daemon.config.data_dir.iterdir():
        if path.is_file():
            assert code.encode() not in path.read_bytes(), path

    no_digits = await rig.http.post("/api/v1/parcels/pickup", json={"code": code})
    assert no_digits.status_code == 422
    assert no_digits.json()["error"]["code"] == "phone_digits_required"
    mark = rig.mark
    opened = await rig.http.post("/api/v1/parcels/pickup",
                                 json={"code": code, "phone_digits": "4567"})
    assert opened.status_code == 200, opened.text
    assert opened.json()["cell"] == placed["cell"]
    await rig.door_cycle(placed["cell"], "pickup_completed", since=mark)
    await rig.wait_event("parcel_picked_up", cell=placed["cell"], since=mark)
    await rig.wait_cell(placed["cell"], state="free")
    admin = await wait_mail(rig, "admin@example.org")
    assert placed["parcel_id"] in admin[0].get_body(preferencelist=("plain",)).get_content()
    again = await rig.http.post("/api/v1/parcels/pickup",
                                json={"code": code, "phone_digits": "4567"})
    assert again.status_code == 403 and again.json()["error"]["code"] == "wrong_code"


@pytest.mark.parametrize("lang", ["en", "ru"])
async def test_refusals_come_with_codes_in_the_clients_language(storage_locker: Any,
                                                                 lang: str) -> None:
    rig = await parcel_locker(storage_locker)
    wrong = await rig.http.post("/api/v1/parcels/staff/login", params={"lang": lang},
                                json={"code": "1001", "pin": "0000"})
    assert wrong.status_code == 403
    error = wrong.json()["error"]
    assert error["code"] == "wrong_login"
    assert error["message"] == ("Wrong code or PIN." if lang == "en" else "Неверный код или PIN.")
    bad = await rig.http.post("/api/v1/parcels/staff/login", json={"code": 1001, "pin": "1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    extra = await rig.http.post("/api/v1/parcels/staff/login",
                                json={"code": "1001", "pin": "2468", "admin": True})
    assert extra.status_code == 400


async def test_a_second_parcel_joins_the_recipients_cell_and_one_code_opens_both(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    first = await deposit(rig, session, "r2", "S", barcode="A-1")
    code = code_in((await wait_mail(rig, "anna@example.org"))[0])
    assert len(code) == 10  # no phone: a longer code, no phone digits asked
    session = await login(rig)  # the door closing ended the session
    mark = rig.mark
    second = await deposit(rig, session, "r2", "S", barcode="A-2", cell=first["cell"])
    added = await rig.wait_event("parcel_deposited", cell=first["cell"], since=mark)
    assert added["data"]["added"] is True and len(added["data"]["parcels"]) == 2
    notices = await wait_mail(rig, "anna@example.org", 2)
    assert "added" in notices[1].get_body(preferencelist=("plain",)).get_content()
    mark = rig.mark
    opened = await rig.http.post("/api/v1/parcels/pickup", json={"code": code})
    assert opened.status_code == 200, opened.text
    assert set(opened.json()["parcels"]) == {first["parcel_id"], second["parcel_id"]}
    await rig.door_cycle(first["cell"], "pickup_completed", since=mark)
    await rig.wait_event("parcel_picked_up", parcel_id=second["parcel_id"], since=mark)


async def test_no_free_cell_and_a_duplicate_barcode_are_refused_with_codes(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    await deposit(rig, session, "r1", "L", barcode="BIG-1")
    session = await login(rig)
    full = await rig.http.post("/api/v1/parcels/deposits", json={
        "session": session, "recipient_id": "r2", "size": "L"})
    assert full.status_code == 409 and full.json()["error"]["code"] == "no_cell"
    assert "L" in full.json()["error"]["message"]
    larger = await rig.http.post("/api/v1/parcels/deposits", params={"lang": "ru"}, json={
        "session": session, "recipient_id": "r2", "size": "M", "barcode": "BIG-1"})
    assert larger.status_code == 409
    assert larger.json()["error"]["code"] == "duplicate_barcode"
    assert larger.json()["error"]["message"] == "Посылка с этим штрихкодом уже в постамате."
    # Nothing was opened or kept for the refused ones.
    assert rig.types().count("deposit_started") == 1


async def test_a_courier_pin_guessed_three_times_locks_the_login_with_an_alarm(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    answers = [await rig.http.post("/api/v1/parcels/staff/login",
                                   json={"code": "1001", "pin": pin})
               for pin in ("1111", "2222", "3333", "2468")]
    assert [a.status_code for a in answers] == [403, 403, 423, 423]
    assert answers[3].json()["error"]["code"] == "login_locked"
    locked = await rig.wait_event("staff_login_locked")
    assert locked["data"]["alarm"] is True and locked["data"]["staff_id"] == "c1"
    rig.advance(16 * 60_000)
    assert (await rig.http.post("/api/v1/parcels/staff/login",
                                json={"code": "1001", "pin": "2468"})).status_code == 200


async def test_code_guessing_is_slowed_then_paused_with_an_alarm_until_an_operator_resumes(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker, code_daily_cap=6)
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "S")
    code = code_in((await wait_mail(rig, "ivan@example.org"))[0])

    async def enter(typed: str, digits: str = "4567") -> Any:
        return await rig.http.post("/api/v1/parcels/pickup",
                                   json={"code": typed, "phone_digits": digits})

    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert (await enter(wrong)).status_code == 403
    slowed = await enter(wrong)
    assert slowed.status_code == 429 and slowed.json()["error"]["code"] == "code_wait"
    assert (await enter(code)).status_code == 429  # not even checked
    rig.advance(2_500)
    assert (await enter(wrong)).status_code == 403  # the 6th wrong one: the daily cap
    paused = await rig.wait_event("code_entry_paused")
    assert paused["data"]["alarm"] is True
    rig.advance(60_000)
    refused = await enter(code)
    assert refused.status_code == 423 and refused.json()["error"]["code"] == "code_paused"
    operator = await login(rig, "2002", "1357")
    resumed = await rig.http.post("/api/v1/parcels/codes/resume", json={"session": operator})
    assert resumed.status_code == 200, resumed.text
    await rig.wait_event("code_entry_resumed")
    mark = rig.mark
    assert (await enter(code)).status_code == 200
    await rig.door_cycle(placed["cell"], "pickup_completed", since=mark)


async def test_expiry_reminds_pauses_while_the_cell_is_faulted_and_the_courier_takes_it_back(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker, pickup_window_s=60, reminders_s="[30]")
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "M")
    cell = placed["cell"]
    await wait_mail(rig, "ivan@example.org")
    rig.advance(31_000)
    reminder = (await wait_mail(rig, "ivan@example.org", 2))[1]
    assert "waits until" in reminder.get_body(preferencelist=("plain",)).get_content()
    # Forced open: the cell is blocked by a fault and the window stops.
    mark = rig.mark
    rig.sim.open_door(0, cell)
    await rig.wait_event("forced_open", cell=cell, since=mark)
    await rig.wait_event("parcel_window_paused", cell=cell, since=mark)
    rig.sim.close_door(0, cell)
    await rig.wait_event("door_closed", cell=cell, since=mark)
    rig.advance(120_000)
    await rig.wait_event("parcel_window_paused", cell=cell, since=mark)
    import asyncio
    await asyncio.sleep(0.6)
    assert "parcel_expired" not in rig.types(mark)
    mark = rig.mark
    rig.daemon.command(cell, "unblock")
    await rig.wait_event("parcel_window_resumed", cell=cell, since=mark)
    rig.advance(20_000)
    await asyncio.sleep(0.6)
    assert "parcel_expired" not in rig.types(mark)  # 51 s of 60 used
    rig.advance(10_000)
    await rig.wait_event("parcel_expired", cell=cell, since=mark)
    await wait_mail(rig, "ivan@example.org", 3)
    session = await login(rig)
    listed = await rig.http.get("/api/v1/parcels/expired", params={"session": session})
    assert [c["cell"] for c in listed.json()["cells"]] == [cell]
    mark = rig.mark
    taken = await rig.http.post("/api/v1/parcels/take-back",
                                json={"session": session, "cell": cell})
    assert taken.status_code == 200, taken.text
    await rig.door_cycle(cell, "eviction_completed", since=mark)
    await rig.wait_event("parcel_returned_to_sender", cell=cell, since=mark)
    await rig.wait_cell(cell, state="free")


async def test_a_return_is_dropped_with_its_code_and_collected(storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker, returns_enabled="true")
    admin = await login(rig, "4004", "9753")
    issued = await rig.http.post("/api/v1/parcels/admin/returns",
                                 json={"session": admin, "recipient_id": "r3"})
    assert issued.status_code == 201, issued.text
    code = issued.json()["return_code"]
    asked = await rig.http.post("/api/v1/parcels/pickup", json={"code": code})
    assert asked.json()["state"] == "size_needed"
    mark = rig.mark
    dropped = await rig.http.post("/api/v1/parcels/pickup", json={"code": code, "size": "M"})
    assert dropped.status_code == 200, dropped.text
    cell = dropped.json()["cell"]
    assert cell in PARCEL_CELLS
    await rig.door_cycle(cell, "deposit_completed", since=mark)
    await rig.wait_event("return_deposited", cell=cell, since=mark)
    dead = await rig.http.post("/api/v1/parcels/pickup", json={"code": code, "size": "M"})
    assert dead.status_code == 403
    collector = await login(rig, "3003", "8642")
    waiting = await rig.http.get("/api/v1/parcels/returns", params={"session": collector})
    assert [r["cell"] for r in waiting.json()["returns"]] == [cell]
    mark = rig.mark
    collected = await rig.http.post("/api/v1/parcels/returns/collect",
                                    json={"session": collector, "cell": cell})
    assert collected.status_code == 200, collected.text
    await rig.door_cycle(cell, "pickup_completed", since=mark)
    await rig.wait_event("return_collected", cell=cell, since=mark)
    await rig.wait_cell(cell, state="free")


async def test_operator_and_collector_open_block_and_unblock_with_a_reason(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "S")
    cell = placed["cell"]
    operator = await login(rig, "2002", "1357")
    no_reason = await rig.http.post(f"/api/v1/parcels/cells/{cell}/open",
                                    json={"session": operator, "reason": ""})
    assert no_reason.status_code == 400
    courier = await login(rig)
    forbidden = await rig.http.post(f"/api/v1/parcels/cells/{cell}/open",
                                    json={"session": courier, "reason": "look"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    mark = rig.mark
    opened = await rig.http.post(f"/api/v1/parcels/cells/{cell}/open",
                                 json={"session": operator, "reason": "recipient has no phone"})
    assert opened.status_code == 200, opened.text
    event = await rig.wait_event("cell_opened_by_staff", cell=cell, since=mark)
    assert event["data"]["holds"] == "parcel" and event["data"]["staff_id"] == "o1"
    await rig.door_cycle(cell, "open_completed", since=mark)
    collector = await login(rig, "3003", "8642")
    blocked = await rig.http.post(f"/api/v1/parcels/cells/{cell}/block",
                                  json={"session": collector, "reason": "dirty"})
    assert blocked.status_code == 200, blocked.text
    await rig.wait_cell(cell, state="blocked")
    unblocked = await rig.http.post(f"/api/v1/parcels/cells/{cell}/unblock",
                                    json={"session": collector, "reason": "cleaned"})
    assert unblocked.status_code == 200, unblocked.text
    await rig.wait_cell(cell, state="occupied")


async def test_storage_rentals_and_parcels_share_the_locker_without_touching_each_others_cells(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "S")
    assert placed["cell"] == 2  # the parcel group's S cell, never storage's 1
    rental = await rig.rent("S")
    assert rental["cell"] == 1
    session = await login(rig)
    full = await rig.http.post("/api/v1/parcels/deposits", json={
        "session": session, "recipient_id": "r2", "size": "S"})
    # S is full for parcels: the next size up (M) is offered and opened.
    assert full.status_code == 201 and full.json()["larger"] is True
    assert full.json()["cell"] in (3, 4)
    # The rental's PIN does not open the parcel cell, nor does storage's pickup.
    stolen = await rig.http.post("/api/v1/cells/2/pickup", json={"pin": rental["pin"]})
    assert stolen.status_code in (403, 404, 409)


async def test_the_parcel_routes_answer_only_what_the_openapi_document_declares(
        storage_locker: Any) -> None:
    from tests.test_kiosk_openapi import assert_declared

    rig = await parcel_locker(storage_locker)
    spec = (await rig.http.get("/openapi.json")).json()
    assert "/api/v1/parcels/deposits" in spec["paths"]
    seen = set()

    async def call(method: str, url: str, **kw: Any) -> Any:
        reply = await rig.http.request(method, url, **kw)
        seen.add(assert_declared(spec, reply))
        return reply

    await call("POST", "/api/v1/parcels/staff/login", json={"code": "1001", "pin": "9"})
    await call("POST", "/api/v1/parcels/staff/login", json={"code": 1})
    session = (await call("POST", "/api/v1/parcels/staff/login",
                          json={"code": "1001", "pin": "2468"})).json()["session"]
    await call("GET", "/api/v1/parcels/staff/session", params={"session": "nope"})
    await call("GET", "/api/v1/parcels/recipients", params={"session": session, "q": "a"})
    await call("POST", "/api/v1/parcels/recipients", json={"session": session, "name": "X",
                                                           "phone": "12"})
    await call("POST", "/api/v1/parcels/recipients", json={"session": session,
                                                           "name": "Newcomer Nina",
                                                           "email": "nina@example.org"})
    await call("POST", "/api/v1/parcels/deposits", json={"session": session, "size": "XL"})
    await call("POST", "/api/v1/parcels/deposits", json={"session": session, "size": "S",
                                                         "recipient_id": "ghost"})
    await call("POST", "/api/v1/parcels/deposits", json={"session": session, "size": "S"})
    await call("POST", "/api/v1/parcels/pickup", json={"code": "123456"})
    await call("POST", "/api/v1/parcels/pickup", json={"code": "123456", "phone_digits": "1"})
    await call("GET", "/api/v1/parcels/expired", params={"session": session})
    await call("POST", "/api/v1/parcels/take-back", json={"session": session, "cell": 3})
    await call("POST", "/api/v1/parcels/cells/3/open", json={"session": session,
                                                             "reason": "x"})
    await call("POST", "/api/v1/parcels/admin/returns", json={"session": session})
    await call("GET", "/api/v1/parcels/nope")
    admin = (await call("POST", "/api/v1/parcels/staff/login",
                        json={"code": "4004", "pin": "9753"})).json()["session"]
    await call("POST", "/api/v1/parcels/admin/language", json={"session": admin,
                                                               "language": "de"})
    ru = await call("POST", "/api/v1/parcels/admin/language", json={"session": admin,
                                                                    "language": "ru"})
    assert ru.json() == {"language": "ru"}
    cells = await call("GET", "/api/v1/parcels/admin/cells", params={"session": admin})
    assert {c["cell"] for c in cells.json()["cells"] if c["business"] == "parcels"} == {
        2, 3, 4, 5}
    report = await call("POST", "/api/v1/parcels/admin/report",
                        json={"session": admin, "email": "boss@example.org"})
    assert report.json()["free"] == {"S": 1, "M": 2, "L": 1}
    mail = (await wait_mail(rig, "boss@example.org"))[0]
    assert "свободно S:1 M:2 L:1" in mail.get_body(preferencelist=("plain",)).get_content()
    await call("POST", "/api/v1/parcels/staff/logout", json={"session": admin})
    assert len(seen) >= 15


async def test_console_commands_announce_a_parcel_issue_a_return_code_and_ask_a_report(
        storage_locker: Any, mqtt_broker: Any) -> None:
    """The signed commands W2's console sends, received by lockerd's fleet side."""
    import json
    import uuid

    from contract.signing import make_command, private_key_from_seed, public_key_b64

    key = private_key_from_seed(b"\x07" * 32)
    locker = f"P-{uuid.uuid4().hex[:8]}"
    creds = mqtt_broker.add_locker(locker)
    rig = await storage_locker(
        PROFILE, parcels=parcels_toml(returns_enabled="true"), locker_id=locker,
        mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port,
              "username": creds.username, "password": creds.password},
        trust={"console-1": public_key_b64(key)})
    fleet = rig.daemon.fleet
    assert fleet is not None
    sent: list[dict] = []
    fleet._send = sent.extend  # type: ignore[method-assign]

    async def command(type_: str, args: dict[str, Any]) -> list[dict]:
        before = len(sent)
        signed = make_command(locker, type_, args, operator="olga", reason="", key_id="console-1",
                              private_key=key, now_ms=rig.daemon.clock())
        await fleet.command_received(json.dumps(signed).encode(), locker)
        return sent[before:]

    announced = await command("expect-parcel", {"parcel_id": "P-77", "barcode": "BC-77",
                                                "recipient_id": "r1"})
    assert [r["status"] for r in announced] == ["accepted", "done"], announced
    await rig.wait_event("parcel_announced", parcel_id="P-77")
    # The courier's scan fills the recipient in.
    session = await login(rig)
    placed = await deposit(rig, session, None, "S", barcode="BC-77")  # type: ignore[arg-type]
    assert placed["parcel_id"] == "P-77"
    malformed = await command("expect-parcel", {"parcel_id": "P-78"})
    assert malformed[-1]["status"] == "rejected" and malformed[-1]["reason"] == "malformed"
    duplicate = await command("expect-parcel", {"parcel_id": "P-79", "barcode": "BC-77",
                                                "recipient_id": "r2"})
    assert duplicate[-1]["reason"] == "duplicate_barcode"

    issued = await command("create-return", {"return_id": "RET-1", "recipient_id": None})
    assert issued[-1]["status"] == "done"
    code = issued[-1]["data"]["return_code"]
    assert len(code) == 10
    stored = rig.daemon.store.command_record(issued[-1]["cmd_id"])
    assert code not in json.dumps(stored)  # sent once, stored redacted
    for path in rig.daemon.config.data_dir.iterdir():
        if path.is_file():
            assert code.encode() not in path.read_bytes(), path
    asked = await rig.http.post("/api/v1/parcels/pickup", json={"code": code})
    assert asked.json() == {"return_id": "RET-1", "state": "size_needed"}

    report = await command("report-cells", {"email": "ops@example.org"})
    assert report[-1]["status"] == "done"
    mail = (await wait_mail(rig, "ops@example.org"))[0]
    assert locker in mail["Subject"]


async def test_the_daily_cell_report_leaves_at_its_hour(storage_locker: Any) -> None:
    import asyncio

    rig = await parcel_locker(
        storage_locker,
        notify='daily_report_at = "03:00"\ndaily_report_emails = ["boss@example.org"]')
    session = await login(rig)
    await deposit(rig, session, "r1", "M")
    while rig.daemon.parcels.next_report_at is None:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    assert not mail_to(rig, "boss@example.org")  # not before its hour
    rig.advance(25 * 3600_000)
    report = (await wait_mail(rig, "boss@example.org"))[0]
    text = report.get_body(preferencelist=("plain",)).get_content()
    assert "free S:1 M:1 L:1" in text and "occupied S:0 M:1 L:0" in text, text
    await rig.wait_event("cell_report_queued", why="daily")


async def test_a_board_offline_stops_the_pickup_window_of_its_cells(storage_locker: Any) -> None:
    import asyncio

    rig = await parcel_locker(storage_locker, pickup_window_s=60, reminders_s="[30]")
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "M")
    cell = placed["cell"]
    mark = rig.mark
    rig.sim.set_silent(True)
    await rig.wait_event("board_offline", since=mark, timeout=10)
    await rig.wait_event("parcel_window_paused", cell=cell, since=mark)
    rig.advance(120_000)
    await asyncio.sleep(0.6)
    assert "parcel_expired" not in rig.types(mark)
    mark = rig.mark
    rig.sim.set_silent(False)
    resumed = await rig.wait_event("parcel_window_resumed", cell=cell, since=mark, timeout=10)
    assert resumed["data"]["due_at"] > rig.daemon.clock() + 50_000


async def test_a_board_back_online_does_not_end_a_lock_fault_pause_on_the_same_cell(
        storage_locker: Any) -> None:
    """Two faults on one cell: the window runs again only when neither is left (issue 12)."""
    rig = await parcel_locker(storage_locker, pickup_window_s=60, reminders_s="[30]")
    session = await login(rig)
    cell = (await deposit(rig, session, "r1", "M"))["cell"]
    mark = rig.mark
    rig.sim.open_door(0, cell)  # forced open: the cell is blocked by a fault
    await rig.wait_event("parcel_window_paused", cell=cell, since=mark)
    rig.sim.close_door(0, cell)
    await rig.wait_event("door_closed", cell=cell, since=mark)
    rig.sim.set_silent(True)  # and then its board goes offline
    await rig.wait_event("board_offline", since=mark, timeout=10)
    rig.sim.set_silent(False)
    await rig.wait_event("board_online", since=mark, timeout=10)
    assert rig.daemon.machine.cell_view(cell)["state"] == "blocked"
    rig.advance(120_000)  # twice the window while the cell stays blocked
    mark = rig.mark
    rig.daemon.command(cell, "unblock")
    resumed = await rig.wait_event("parcel_window_resumed", cell=cell, since=mark)
    assert resumed["data"]["due_at"] > rig.daemon.clock() + 50_000
    paused_or_resumed = [t for t in rig.types() if t.startswith("parcel_window_")]
    assert paused_or_resumed == ["parcel_window_paused", "parcel_window_resumed"]
    assert "parcel_expired" not in rig.types()


def test_lockerd_check_names_a_bad_key_of_the_parcels_file(tmp_path: Any) -> None:
    import subprocess

    from tests.fixtures.lockerd import LOCKERD

    root = __import__("pathlib").Path(__file__).resolve().parent.parent / "config"
    text = (root / "locker.example.toml").read_text()
    text = text.replace('profile = "profile.example.toml"',
                        f'profile = "{root}/profile.example.toml"')
    text = text.replace('parcels = "parcels.example.toml"', 'parcels = "parcels.toml"')
    (tmp_path / "parcels.toml").write_text(parcels_toml().replace('role = "courier"',
                                                                   'role = "driver"', 1))
    path = tmp_path / "locker.toml"
    path.write_text(text)
    out = subprocess.run([LOCKERD, "--config", str(path), "--check"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert "parcels.toml" in out.stderr and "staff" in out.stderr and "role" in out.stderr, (
        out.stderr)
    (tmp_path / "parcels.toml").write_text(parcels_toml())
    good = subprocess.run([LOCKERD, "--config", str(path), "--check"], capture_output=True,
                          text=True, timeout=30)
    assert good.returncode == 0, good.stderr


async def test_the_administrators_language_is_the_notifications_language(
        storage_locker: Any) -> None:
    rig = await parcel_locker(storage_locker)
    admin = await login(rig, "4004", "9753")
    forbidden = await rig.http.post("/api/v1/parcels/admin/language",
                                    json={"session": await login(rig), "language": "ru"})
    assert forbidden.status_code == 403
    chosen = await rig.http.post("/api/v1/parcels/admin/language",
                                 json={"session": admin, "language": "ru"})
    assert chosen.status_code == 200, chosen.text
    await rig.wait_event("parcels_language_set", language="ru")
    placed = await deposit(rig, await login(rig), "r2", "S")
    mail = (await wait_mail(rig, "anna@example.org"))[0]
    assert mail["Subject"] == "Вам пришла посылка"
    mark = rig.mark
    opened = await rig.http.post("/api/v1/parcels/pickup", json={"code": code_in(mail)})
    assert opened.status_code == 200, opened.text
    await rig.door_cycle(placed["cell"], "pickup_completed", since=mark)


async def test_a_stranger_at_the_kiosk_cannot_read_a_parcel_by_its_id(storage_locker: Any) -> None:
    """A parcel's barcode and recipient are staff's to see: a stranger who learnt a parcel id
    (a courier's receipt, a tracking page) gets nothing from the kiosk API without a session."""
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    placed = await deposit(rig, session, "r1", "S", barcode="TRACK-77")
    url = f"/api/v1/parcels/{placed['parcel_id']}"
    stranger = await rig.http.get(url)
    assert stranger.status_code == 400 and "TRACK-77" not in stranger.text
    forged = await rig.http.get(url, params={"session": "not-a-session"})
    assert forged.status_code in (401, 403) and "TRACK-77" not in forged.text
    staff = await rig.http.get(url, params={"session": await login(rig)})
    assert staff.status_code == 200, staff.text
    assert (staff.json()["barcode"], staff.json()["recipient_id"]) == ("TRACK-77", "r1")


async def test_the_state_every_step_writes_does_not_keep_what_is_over(
        storage_locker: Any) -> None:
    """Each step stores the parcel books whole: keys of notices sent (kept against sending one
    twice) leave it with the finished parcels, an hour on, as used codes never enter it."""
    rig = await parcel_locker(storage_locker)
    session = await login(rig)
    placed = await deposit(rig, session, "r2", "S")
    code = code_in((await wait_mail(rig, "anna@example.org"))[0])
    mark = rig.mark
    assert (await rig.http.post("/api/v1/parcels/pickup", json={"code": code})).status_code == 200
    await rig.door_cycle(placed["cell"], "pickup_completed", since=mark)
    await rig.wait_event("parcel_picked_up", cell=placed["cell"], since=mark)
    await wait_mail(rig, "admin@example.org")
    await rig.wait_event("parcel_notice_sent", since=mark)
    stored = rig.daemon.store.meta("parcels")
    assert stored["sent"] and "retired" not in stored["codes"]
    rig.advance(2 * 3600_000)
    import asyncio
    import time

    deadline = time.monotonic() + 5
    while True:  # the periodic work forgets them; a step stores the books again
        await login(rig)
        stored = rig.daemon.store.meta("parcels")
        if stored["book"]["parcels"] == [] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert stored["book"]["parcels"] == [] and stored["sent"] == [], stored
