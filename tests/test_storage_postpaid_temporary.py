"""Postpaid temporary access: the client pays for the time used so far, then the door opens, and
the rental goes on billing (issue 10, item 4). Real HTTP to a real lockerd over a pty board."""

from __future__ import annotations

from tests.fixtures.storage_locker import HOUR, MINUTE, profile_toml


async def test_postpaid_temporary_access_pays_the_time_used_then_opens(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="printed_pin"))
    offers = (await rig.http.get("/api/v1/offers")).json()
    assert offers["temporary_access"] is True  # and it is what happens, below
    view = await rig.rent("M", period_s=None)
    cell, pin = view["cell"], view["pin"]

    rig.advance(20 * MINUTE)  # the first started hour: 150.00
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["due"] == 15000
    assert account["can"]["temporary"] is True  # the screen offers it, with the amount
    assert account["temporary_due"] == 15000

    # The bill moved on since the screen showed it: nothing charged, the new amount told.
    stale = await rig.http.post(f"/api/v1/cells/{cell}/temporary",
                                json={"pin": pin, "due": 9999})
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "due_changed"
    assert stale.json()["error"]["params"]["due"] == 15000
    assert rig.terminal.operations() == []

    mark = rig.mark
    opened = await rig.http.post(f"/api/v1/cells/{cell}/temporary",
                                 json={"pin": pin, "due": 15000})
    assert opened.status_code == 200, opened.text
    assert opened.json()["paid"] == 15000 and opened.json()["door"] == "opening"
    await rig.door_cycle(cell, "temporary_access_completed", since=mark)
    paid = await rig.wait_event("debt_paid", cell=cell, since=mark)
    assert paid["data"]["amount"] == 15000
    [op] = rig.terminal.operations()
    assert (op["amount"], op["charges"], op["status"]) == (15000, 1, "approved")
    assert rig.daemon.machine.cell_view(cell)["state"] == "occupied"  # the rental goes on

    # Billing goes on: the second hour is owed at pickup, the first is not paid twice.
    rig.advance(HOUR)
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["price"] == 30000 and account["bill"]["due"] == 15000
    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.status_code == 200 and picked.json()["paid"] == 15000, picked.text
    done = await rig.door_cycle(cell, "pickup_completed", since=mark)
    assert done["data"]["tenancy"]["paid"] == 30000


async def test_postpaid_temporary_access_declined_keeps_the_door_shut(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="printed_pin"))
    view = await rig.rent("S", period_s=None)
    cell, pin = view["cell"], view["pin"]
    rig.advance(5 * MINUTE)
    rig.terminal.set_next("decline")
    refused = await rig.http.post(f"/api/v1/cells/{cell}/temporary", json={"pin": pin})
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "payment_declined"
    assert rig.sim.unlock_count(0, cell) == 1  # only the deposit opened it
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["paid"] == 0 and account["bill"]["due"] == 10000
