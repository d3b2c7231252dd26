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
