"""What the screen and the paper say is the truth (issue 10, item 7): a slip that takes no money
says no card paid; a rental's receipt is still there after a restart; a PIN lockout says how
long it really lasts."""

from __future__ import annotations

import re

import httpx

from tests.fixtures.storage_locker import profile_toml
from tests.test_storage_crash import _start, _wait


async def test_a_postpaid_slip_does_not_say_a_card_paid(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="printed_pin"))
    view = await rig.rent("S", period_s=None)
    printed = rig.receipts.read_bytes().decode("cp866", errors="replace")
    for text in (view["receipt"], printed):
        assert "Paid by card" not in text, text
        assert "Nothing was charged" in text and "pay at pickup" in text
    assert view["pin"] in view["receipt"]


def test_the_receipt_of_a_rental_survives_a_restart(board_sim, lockerd, tmp_path) -> None:
    sim, d, http, _, _, _, port = _start(board_sim, lockerd, tmp_path)
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    cell, rid = rental["cell"], rental["rental_id"]
    mark = d.mark
    assert http.post(f"/api/v1/rentals/{rid}/start").status_code == 200
    d.wait_event("door_opened", cell=cell, since=mark)
    sim.close_door(0, cell)
    d.wait_event("pin_issued", cell=cell, since=mark)
    before = http.get(f"/api/v1/rentals/{rid}").json()
    assert before["receipt"] and re.search(r"PIN: \d{6}", before["receipt"])

    d.kill9()
    d.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait(lambda: http.get(f"/api/v1/rentals/{rid}").status_code == 200)
    after = http.get(f"/api/v1/rentals/{rid}").json()
    assert after["state"] == "occupied"
    assert after["receipt"] == before["receipt"]  # the same paper, number and time included


async def test_a_short_pin_lockout_says_its_seconds(storage_locker) -> None:
    rig = await storage_locker(profile_toml(), kiosk={"pin_lockout_s": 15, "slow_step_ms": 0})
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    wrong = "0" * 6 if pin != "0" * 6 else "1" * 6
    for _ in range(4):
        await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": wrong})
    for lang, unit in (("en", "s"), ("ru", "с")):
        locked = await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": wrong},
                                     params={"lang": lang})
        assert locked.status_code == 423
        error = locked.json()["error"]
        assert 14 <= error["params"]["seconds"] <= 15, error
        assert error["params"]["minutes"] == 0, error  # 15 s is not "1 min"
        assert f"{error['params']['seconds']} {unit}" in error["message"], error
    rig.advance(10_000)
    later = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert 4 <= later["error"]["params"]["seconds"] <= 5, later
