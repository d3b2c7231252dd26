"""Storage lockers end to end through the kiosk API: real HTTP, real pty board, real store.

Each payment mode, PIN by receipt and by SMS, extension, temporary access with and without debt,
overdue then pickup, charging, declined and lost payments, PIN guessing, clock jumps, languages.
"""

from __future__ import annotations

import asyncio
import time

from tests.fixtures.storage_locker import HOUR, MINUTE, profile_toml


def _ops(rig) -> list[dict]:
    return rig.terminal.operations()


async def test_prepaid_rental_with_printed_pin_then_pickup(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid", auth="printed_pin"))
    offers = (await rig.http.get("/api/v1/offers")).json()
    small = next(s for s in offers["sizes"] if s["size"] == "S" and not s["charging"])
    assert small["free"] == 2
    assert [p["price"]["amount"] for p in small["periods"]] == [10000, 26500]

    view = await rig.rent("S", period_s=3600)
    assert view["amount"] == {"amount": 10000, "currency": "RUB"}
    cell, pin = view["cell"], view["pin"]
    [op] = _ops(rig)
    assert op["amount"] == 10000 and op["charges"] == 1 and op["status"] == "approved"
    approved = await rig.wait_event("payment_approved", cell=cell)
    assert approved["data"]["amount"] == 10000 and approved["data"]["currency"] == "RUB"
    receipt = await rig.wait_event("receipt_issued", cell=cell)
    assert receipt["data"]["total"] == 10000 and receipt["data"]["printed"] is True
    printed = rig.receipts.read_bytes()
    assert pin.encode() in printed and b"\x1d\x56" in printed  # the PIN, then a paper cut
    assert pin in view["receipt"]
    # The PIN never leaves the locker in an event.
    assert not [e for e in rig.events if pin in str(e["data"])]
    assert rig.daemon.machine.cell_view(cell)["state"] == "occupied"

    wrong = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": "000000"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_pin"
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["due"] == 0 and account["bill"]["paid"] == 10000
    assert account["can"]["extend"] is False  # prepaid: a fixed period

    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.status_code == 200, picked.text
    assert picked.json()["paid"] == 0
    done = await rig.door_cycle(cell, "pickup_completed", since=mark)
    assert done["data"]["tenancy"]["paid"] == 10000
    assert rig.daemon.machine.cell_view(cell)["state"] == "free"
    assert [o["charges"] for o in _ops(rig)] == [1]  # never charged twice
    again = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert again.status_code == 403  # the PIN died with the tenancy


async def test_sms_confirmed_postpaid_rental_pays_at_pickup_with_email_receipt(
    storage_locker,
) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="sms"))
    created = await rig.http.post(
        "/api/v1/rentals", json={"size": "M", "email": "client@example.org"}
    )
    assert created.status_code == 201, created.text
    rental = created.json()
    rid, cell = rental["rental_id"], rental["cell"]
    assert rental["state"] == "phone" and rental["amount"]["amount"] == 0
    early = await rig.http.post(f"/api/v1/rentals/{rid}/start")
    assert early.status_code == 409 and early.json()["error"]["code"] == "wrong_step"

    bad = await rig.http.post(f"/api/v1/rentals/{rid}/phone", json={"phone": "12ab"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_phone"
    sent = await rig.http.post(f"/api/v1/rentals/{rid}/phone", json={"phone": "+7 900 123-45-67"})
    assert sent.status_code == 200, sent.text
    sms = (await rig.sms.wait_async(1)).json()
    again = await rig.http.post(f"/api/v1/rentals/{rid}/phone", json={"phone": "+79001234567"})
    assert again.status_code == 429 and again.json()["error"]["code"] == "sms_too_soon"
    assert sms["to"] == "+79001234567"
    code = sms["text"].rsplit(" ", 1)[1]
    wrong = await rig.http.post(f"/api/v1/rentals/{rid}/code", json={"code": "000000"
                                if code != "000000" else "111111"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_code"
    ok = await rig.http.post(f"/api/v1/rentals/{rid}/code", json={"code": code})
    assert ok.status_code == 200 and ok.json()["state"] == "payment"

    mark = rig.mark
    started = await rig.http.post(f"/api/v1/rentals/{rid}/start")
    assert started.status_code == 200, started.text
    await rig.door_cycle(cell, "deposit_completed", since=mark)
    pin_sms = (await rig.sms.wait_async(2)).json()
    pin = (await rig.http.get(f"/api/v1/rentals/{rid}")).json()["pin"]
    assert pin in pin_sms["text"] and pin_sms["to"] == "+79001234567"
    issued = await rig.wait_event("pin_issued", cell=cell, since=mark)
    assert "sms" in issued["data"]["channels"]
    assert _ops(rig) == []  # postpaid: nothing was charged up front

    rig.advance(2 * HOUR + 30 * MINUTE)  # three started hours of 150.00
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["price"] == 45000 and account["bill"]["due"] == 45000
    assert account["state"] == "occupied"  # postpaid is not overdue before the limit

    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.status_code == 200, picked.text
    assert picked.json()["paid"] == 45000
    await rig.door_cycle(cell, "pickup_completed", since=mark)
    paid = await rig.wait_event("debt_paid", cell=cell, since=mark)
    assert paid["data"]["amount"] == 45000
    [op] = _ops(rig)
    assert op["amount"] == 45000 and op["charges"] == 1
    deadline = time.monotonic() + 5
    while not rig.mailbox.messages and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [(_sender, rcpt, raw)] = rig.mailbox.messages
    content = raw.decode("utf-8", errors="replace")
    assert rcpt == ["client@example.org"] and "450.00 RUB" in content


async def test_partial_mode_temporary_access_overdue_refused_then_extension(
    storage_locker,
) -> None:
    rig = await storage_locker(profile_toml(mode="partial", storage_limit_s=6 * 3600))
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]

    mark = rig.mark
    temp = await rig.http.post(f"/api/v1/cells/{cell}/temporary", json={"pin": pin})
    assert temp.status_code == 200, temp.text
    done = await rig.door_cycle(cell, "temporary_access_completed", since=mark)
    assert done["data"]["state"] == "occupied"

    rig.advance(61 * MINUTE)
    await rig.wait_cell(cell, state="overdue")
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["due"] == 9000 and account["can"]["temporary"] is False
    refused = await rig.http.post(f"/api/v1/cells/{cell}/temporary", json={"pin": pin},
                                  params={"lang": "ru"})
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "debt" and "задолженность" in error["message"]
    assert "90.00 RUB" in error["message"]

    # Extend by an hour: pays the second hour used and a third one (90 + 75).
    extended = await rig.http.post(f"/api/v1/cells/{cell}/extend",
                                   json={"pin": pin, "period_s": 3600})
    assert extended.status_code == 200, extended.text
    body = extended.json()
    assert body["paid"] == 16500 and body["bill"]["due"] == 0
    await rig.wait_cell(cell, state="occupied")
    event = await rig.wait_event("rental_extended", cell=cell)
    assert event["data"]["amount"] == 16500 and event["data"]["paid_total"] == 26500
    assert [o["amount"] for o in _ops(rig)] == [10000, 16500]
    too_long = await rig.http.post(f"/api/v1/cells/{cell}/extend",
                                   json={"pin": pin, "period_s": 10800})
    assert too_long.status_code == 200  # paid up to 6 h: exactly the limit
    beyond = await rig.http.post(f"/api/v1/cells/{cell}/extend",
                                 json={"pin": pin, "period_s": 3600})
    assert beyond.status_code == 422 and beyond.json()["error"]["code"] == "beyond_limit"
    assert len(_ops(rig)) == 3  # the refused extension charged nothing

    mark = rig.mark
    again = await rig.http.post(f"/api/v1/cells/{cell}/temporary", json={"pin": pin})
    assert again.status_code == 200, again.text
    await rig.door_cycle(cell, "temporary_access_completed", since=mark)
    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.json()["paid"] == 0
    await rig.door_cycle(cell, "pickup_completed", since=mark)


async def test_prepaid_overdue_then_pickup_pays_the_debt(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid", temporary=False))
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    no_temp = await rig.http.post(f"/api/v1/cells/{cell}/temporary", json={"pin": pin})
    assert no_temp.status_code == 403
    assert no_temp.json()["error"]["code"] == "temporary_disabled"
    no_ext = await rig.http.post(f"/api/v1/cells/{cell}/extend",
                                 json={"pin": pin, "period_s": 3600})
    assert no_ext.json()["error"]["code"] == "extension_disabled"

    rig.advance(2 * HOUR + 10 * MINUTE)
    overdue = await rig.wait_event("overdue", cell=cell)
    assert overdue["data"]["state"] == "overdue"
    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.status_code == 200, picked.text
    assert picked.json()["paid"] == 16500  # 100 + 90 + 75 minus the 100 prepaid
    done = await rig.door_cycle(cell, "pickup_completed", since=mark)
    assert done["data"]["overdue"] is True and done["data"]["tenancy"]["paid"] == 26500
    assert [o["charges"] for o in _ops(rig)] == [1, 1]


async def test_charging_cell_powers_its_socket_while_rented(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    view = await rig.rent("S", period_s=3600, charging=True)
    cell, pin = view["cell"], view["pin"]
    assert cell == 6 and view["charging"] is True
    assert view["amount"]["amount"] == 15000  # 100 storage + 50 flat charging
    await rig.wait_event("charging_on", cell=6)
    assert rig.sim.relay_on(0, 7)

    mark = rig.mark
    await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    await rig.door_cycle(cell, "pickup_completed", since=mark)
    await rig.wait_event("charging_off", cell=6, since=mark)
    assert not rig.sim.relay_on(0, 7)


async def test_declined_then_approved_payment_charges_once(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600})).json()
    rig.terminal.set_next("decline")
    declined = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert declined.status_code == 402
    assert declined.json()["error"]["code"] == "payment_declined"
    assert rig.sim.unlock_count(0, rental["cell"]) == 0
    await rig.wait_event("payment_declined", cell=rental["cell"])

    rig.terminal.set_next("cancel")  # the client pressed cancel on the terminal
    cancelled = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert cancelled.json()["error"]["code"] == "payment_cancelled"
    rig.terminal.set_next("timeout")  # approved, but the reply was lost: asked, not guessed
    mark = rig.mark
    ok = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert ok.status_code == 200, ok.text
    await rig.door_cycle(rental["cell"], "deposit_completed", since=mark)
    [op] = _ops(rig)  # three attempts, one operation, one charge
    assert (op["status"], op["attempts"], op["charges"]) == ("approved", 3, 1)
    records = [p for p in rig.daemon.store.payments() if p["op_id"] == op["operation_id"]]
    assert [(p["status"], p["settled"]) for p in records] == [("captured", True)]


async def test_door_that_never_opens_gives_the_money_back(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "L", "period_s": 3600})).json()
    cell = rental["cell"]
    rig.sim.set_stuck(0, cell, True)
    started = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert started.status_code == 200
    await rig.wait_event("lock_fault", cell=cell)
    cancelled = await rig.wait_event("deposit_cancelled", cell=cell)
    assert cancelled["data"]["void_payment"] is True
    voided = await rig.wait_event("payment_voided", cell=cell)
    assert voided["data"]["amount"] == 15000
    [op] = _ops(rig)
    assert op["status"] == "voided" and op["charges"] == 1 and op["voids"] == 1
    assert rig.daemon.machine.tenancy(cell) is None
    view = (await rig.http.get(f"/api/v1/rentals/{rental['rental_id']}")).json()
    assert view["state"] == "cancelled" and "pin" not in view
    refund = await rig.wait_event("receipt_issued", cell=cell, operation="refund")
    assert refund["data"]["total"] == 15000


async def test_pin_guessing_is_locked_out_and_slowed(storage_locker) -> None:
    rig = await storage_locker(
        profile_toml(), kiosk={"slow_after_failures": 7, "slow_step_ms": 400}
    )
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    wrong = "0" * 6 if pin != "0" * 6 else "1" * 6
    for left in (4, 3, 2, 1):
        reply = await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": wrong})
        assert reply.status_code == 403 and reply.json()["error"]["params"]["attempts"] == left
    locked = await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": wrong})
    assert locked.status_code == 423 and locked.json()["error"]["code"] == "pin_locked"
    await rig.wait_event("pin_locked", cell=cell)
    right = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert right.status_code == 423  # even the right PIN waits out the lockout
    assert rig.sim.unlock_count(0, cell) == 1  # only the deposit ever opened it

    # Someone walking the cells: after 7 failures in the window every answer is held back.
    for other in (3, 4):
        await rig.http.post(f"/api/v1/cells/{other}/account", json={"pin": wrong})
    started = time.monotonic()
    slow = await rig.http.post("/api/v1/cells/5/account", json={"pin": wrong})
    assert slow.status_code == 403 and time.monotonic() - started >= 0.4

    rig.advance(5 * MINUTE + 1000)
    unlocked = await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})
    assert unlocked.status_code == 200


async def test_wall_clock_jump_does_not_change_the_bill(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    rig.advance(30 * MINUTE)
    mark = rig.mark
    rig.jump(5 * HOUR)  # NTP after a boot without a real-time clock, say
    jumped = await rig.wait_event("clock_jumped", since=mark)
    assert abs(jumped["data"]["delta_ms"] - 5 * HOUR) < 2000
    await asyncio.sleep(0.6)  # a few ticks: the overdue timer must not fire
    assert rig.daemon.machine.cell_view(cell)["state"] == "occupied"
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert 30 * MINUTE <= account["bill"]["elapsed_ms"] < 31 * MINUTE
    assert account["bill"]["due"] == 0

    mark = rig.mark
    rig.jump(-8 * HOUR)
    await rig.wait_event("clock_jumped", since=mark)
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert 30 * MINUTE <= account["bill"]["elapsed_ms"] < 31 * MINUTE
    rig.advance(40 * MINUTE)  # real time still counts: now in the second hour
    await rig.wait_cell(cell, state="overdue")
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["due"] == 9000


async def test_languages_errors_and_openapi(storage_locker) -> None:
    rig = await storage_locker(profile_toml())
    en = await rig.http.post("/api/v1/rentals", json={"size": "S", "period_s": 7})
    assert en.status_code == 422 and en.json()["error"]["code"] == "bad_period"
    ru = await rig.http.post("/api/v1/rentals", json={"size": "S", "period_s": 7},
                             headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert "Выберите" in ru.json()["error"]["message"]
    bad = await rig.http.post("/api/v1/rentals", json={"size": "XL"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    assert "size" in bad.json()["error"]["message"]
    unknown = await rig.http.get("/api/v1/offers", params={"lang": "de"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_language"
    texts = (await rig.http.get("/api/v1/texts", params={"lang": "ru"})).json()
    assert texts["language"] == "ru" and "PIN" in texts["texts"]["wrong_pin"]
    offers = (await rig.http.get("/api/v1/offers", params={"lang": "ru"})).json()
    assert offers["language"] == "ru" and offers["languages"] == ["en", "ru"]
    rental = await rig.http.get("/api/v1/rentals/nope")
    assert rental.status_code == 404 and rental.json()["error"]["code"] == "unknown_rental"
    spec = (await rig.http.get("/openapi.json")).json()
    assert {"/api/v1/rentals", "/api/v1/cells/{cell}/pickup", "/api/v1/cells/{cell}/extend",
            "/api/v1/cells/{cell}/temporary"} <= set(spec["paths"])


async def test_a_slow_card_payment_is_not_taken_for_a_lost_one(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rig.terminal.delay_s = 1.2  # the client fumbles with the card; reconcile runs every 0.5 s
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600})).json()
    mark = rig.mark
    started = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert started.status_code == 200, started.text
    rig.terminal.delay_s = 0  # what reconcile asks from now on is answered at once
    await rig.wait_event("door_opened", cell=rental["cell"], since=mark)
    await asyncio.sleep(1.6)  # the client takes a while to put the bag in
    rig.sim.close_door(0, rental["cell"])
    await rig.wait_event("deposit_completed", cell=rental["cell"], since=mark)
    await asyncio.sleep(0.6)
    [op] = _ops(rig)
    assert (op["status"], op["charges"], op["voids"]) == ("approved", 1, 0)
    assert "payment_voided" not in rig.types()
    assert rig.daemon.machine.cell_view(rental["cell"])["state"] == "occupied"


async def test_two_extensions_at_once_are_both_booked(storage_locker) -> None:
    """A double tap on "extend": two payments, each quoted and booked on the tenancy as it is."""
    rig = await storage_locker(profile_toml(mode="partial"))
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    rig.terminal.delay_s = 0.3  # both requests are in before the first charge is answered
    body = {"pin": pin, "period_s": 3600}
    first, second = await asyncio.gather(
        rig.http.post(f"/api/v1/cells/{cell}/extend", json=body),
        rig.http.post(f"/api/v1/cells/{cell}/extend", json=body),
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert sorted([first.json()["paid"], second.json()["paid"]]) == [7500, 9000]
    assert [o["amount"] for o in _ops(rig)] == [10000, 9000, 7500]
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["paid"] == 26500  # every payment is on the tenancy


async def test_postpaid_with_printed_pin_prints_a_pin_slip(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="printed_pin"))
    view = await rig.rent("S", period_s=None)
    assert view["amount"]["amount"] == 0 and _ops(rig) == []
    slip = await rig.wait_event("receipt_issued", cell=view["cell"])
    assert slip["data"]["total"] == 0 and slip["data"]["printed"] is True
    printed = rig.receipts.read_bytes()
    assert view["pin"].encode() in printed and b"pay at pickup" in printed


async def test_an_unknown_outcome_is_settled_once_the_terminal_answers(storage_locker) -> None:
    """Approved by the bank, reply lost, terminal then unreachable: the client is told the truth
    (unknown), the door stays shut, and the money comes back as soon as the terminal answers."""
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600})).json()
    rig.terminal.set_next("timeout")
    rig.terminal.hold_after_approve_s = 0.3

    async def terminal_drops_off() -> None:
        await asyncio.sleep(0.15)  # after the approval, before the (lost) reply
        rig.terminal.offline = True

    dropped = asyncio.create_task(terminal_drops_off())
    started = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    await dropped
    assert started.status_code == 502 and started.json()["error"]["code"] == "payment_unknown"
    unknown = await rig.wait_event("payment_unknown", cell=rental["cell"])
    assert unknown["data"]["alarm"] is True  # an operator should look
    assert rig.sim.unlock_count(0, rental["cell"]) == 0

    rig.terminal.offline = False  # reconcile (every 0.5 s) learns it was approved: not delivered
    voided = await rig.wait_event("payment_voided", cell=rental["cell"], timeout=5)
    assert voided["data"]["reason"] == "not_delivered"
    [op] = _ops(rig)
    assert (op["charges"], op["voids"], op["status"]) == (1, 1, "voided")

    # The client tries again: the voided operation is not reused, a new one is charged.
    mark = rig.mark
    again = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert again.status_code == 200, again.text
    await rig.door_cycle(rental["cell"], "deposit_completed", since=mark)
    assert [(o["status"], o["charges"]) for o in _ops(rig)] == [("voided", 1), ("approved", 1)]


async def test_trying_again_after_an_unknown_outcome_is_not_a_second_charge(
    storage_locker,
) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rig.daemon.storage.ledger.reconcile = _never  # the client is quicker than reconcile here
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600})).json()
    rig.terminal.set_next("timeout")
    rig.terminal.hold_after_approve_s = 0.3

    async def terminal_drops_off() -> None:
        await asyncio.sleep(0.15)
        rig.terminal.offline = True

    dropped = asyncio.create_task(terminal_drops_off())
    first = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    await dropped
    assert first.json()["error"]["code"] == "payment_unknown"
    rig.terminal.offline, rig.terminal.hold_after_approve_s = False, 0
    mark = rig.mark
    again = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start")
    assert again.status_code == 200, again.text  # the terminal knew: approved already
    await rig.door_cycle(rental["cell"], "deposit_completed", since=mark)
    [op] = _ops(rig)
    assert (op["charges"], op["voids"], op["status"]) == (1, 0, "approved")


async def _never() -> None:
    return None
