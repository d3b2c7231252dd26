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


def parcels_toml(**extra: Any) -> str:
    lines = [
        'address = "1 Test Street"',
        'opening_hours = "8-20"',
        *(f"{k} = {v}" for k, v in extra.items()),
        "[notify]",
        'pickup_emails = ["admin@example.org"]',
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


async def parcel_locker(storage_locker: Any, **extra: Any) -> StorageRig:
    return await storage_locker(PROFILE, parcels=parcels_toml(**extra))


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
