"""A storage locker in a fleet: profiles published from the console, and force majeure from the
call center (waive, reveal-pin, evict), sent with `locker-console` through a real Mosquitto and
finished by the client at the kiosk."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

from contract.signing import public_key_b64
from tests.fixtures.storage_locker import HOUR, SMS_BODY, profile_toml
from tests.test_fleet_console_e2e import (  # noqa: F401 (fixture)
    CONSOLE,
    console,
    console_setup,
)


async def _locker(storage_locker, mqtt_broker, key, profile: str | None = None, **extra):
    """A storage locker in the fleet: its own broker account, trusting the console's key."""
    locker_id = f"S-{uuid.uuid4().hex[:8]}"
    creds = mqtt_broker.add_locker(locker_id)
    rig = await storage_locker(
        profile or profile_toml(mode="prepaid"),
        locker_id=locker_id,
        mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port,
              "username": creds.username, "password": creds.password},
        trust={"console-1": public_key_b64(key)},
        **extra,
    )
    await rig.wait_log("mqtt_connected")
    return locker_id, rig


async def _console(config, *args: str):
    return await asyncio.to_thread(console, config, *args)


async def test_waive_lets_the_client_pick_up_without_paying(
    storage_locker, mqtt_broker, console_setup  # noqa: F811
) -> None:
    key, config, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    view = await rig.rent("S", period_s=3600)
    cell, pin = view["cell"], view["pin"]
    rig.advance(3 * HOUR + 1)  # four started hours: 100 + 90 + 75 + 75, 100 prepaid
    await rig.wait_cell(cell, state="overdue")
    await rig.realign_wall_clock()
    rig.terminal.offline = True  # the POS terminal is out of order

    refused = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "terminal_offline"

    out = await _console(config, "waive", "--locker", locker, "--cell", str(cell),
                         "--reason", "POS terminal out of order")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "240.00 RUB" in out.stdout
    waived = await rig.wait_event("debt_waived", cell=cell)
    assert waived["data"]["amount"] == 24000
    assert waived["data"]["reason"] == "POS terminal out of order"

    rig.advance(HOUR)  # billing stopped with the waiver
    await rig.realign_wall_clock()
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["due"] == 0 and account["bill"]["waived"] == 24000
    mark = rig.mark
    picked = await rig.http.post(f"/api/v1/cells/{cell}/pickup", json={"pin": pin})
    assert picked.status_code == 200 and picked.json()["paid"] == 0
    await rig.door_cycle(cell, "pickup_completed", since=mark)

    nothing = await _console(config, "waive", "--locker", locker, "--cell", str(cell),
                             "--reason", "again")
    assert nothing.returncode == 1 and "not_occupied" in nothing.stdout + nothing.stderr


async def test_reveal_pin_then_evict_an_abandoned_cell(
    storage_locker, mqtt_broker, console_setup  # noqa: F811
) -> None:
    key, config, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    view = await rig.rent("M", period_s=3600)
    cell, pin = view["cell"], view["pin"]

    out = await _console(config, "reveal-pin", "--locker", locker, "--cell", str(cell),
                         "--reason", "client unreachable for 10 days")
    assert out.returncode == 0, out.stdout + out.stderr
    assert pin in out.stdout
    revealed = await rig.wait_event("pin_revealed", cell=cell)
    assert revealed["data"]["reason"] == "client unreachable for 10 days"
    assert pin not in str(revealed)  # the act is an event; the PIN is not in it

    mark = rig.mark
    out = await _console(config, "evict", "--locker", locker, "--cell", str(cell),
                         "--note", "one suitcase; witnesses: guard Ivanov, officer Petrov",
                         "--reason", "abandoned")
    assert out.returncode == 0, out.stdout + out.stderr
    started = await rig.wait_event("eviction_started", cell=cell, since=mark)
    assert started["data"]["note"].startswith("one suitcase")
    done = await rig.door_cycle(cell, "eviction_completed", since=mark)
    assert done["data"]["tenancy"]["outcome"] == "seized"
    assert rig.daemon.machine.cell_view(cell)["state"] == "free"
    gone = await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})
    assert gone.status_code == 403


async def test_a_published_profile_prices_new_rentals_not_running_ones(
    storage_locker, mqtt_broker, console_setup, tmp_path  # noqa: F811
) -> None:
    key, config, _ = console_setup
    locker, rig = await _locker(storage_locker, mqtt_broker, key)
    view = await rig.rent("S", period_s=3600)  # under version 1: first hour 100.00
    cell, pin = view["cell"], view["pin"]

    dearer = tmp_path / "profile-v2.toml"
    dearer.write_text(profile_toml(mode="prepaid", version=2).replace("price = 10000",
                                                                      "price = 20000"))
    out = await _console(config, "publish-config", "--locker", locker, str(dearer))
    assert out.returncode == 0, out.stdout + out.stderr
    await rig.wait_event("config_applied")
    offers = (await rig.http.get("/api/v1/offers")).json()
    assert offers["profile"]["version"] == 2
    small = next(s for s in offers["sizes"] if s["size"] == "S" and not s["charging"])
    assert small["periods"][0]["price"]["amount"] == 20000

    rig.advance(90 * 60_000)
    await rig.realign_wall_clock()
    account = (await rig.http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})).json()
    assert account["bill"]["price"] == 19000  # still 100 + 90: the rental kept its tariff
    assert account["bill"]["due"] == 9000

    broken = tmp_path / "not-a-profile.json"
    broken.write_text('{"name": "x"}')
    out = await _console(config, "publish-config", "--locker", locker, str(broken))
    assert out.returncode == 1, out.stdout + out.stderr
    refused = await rig.wait_event("config_rejected", reason="bad_profile")
    assert "version" in refused["data"]["detail"] or "currency" in refused["data"]["detail"]
    assert (await rig.http.get("/api/v1/offers")).json()["profile"]["version"] == 2


async def test_sms_relayed_through_the_console(
    storage_locker, mqtt_broker, console_setup  # noqa: F811
) -> None:
    """A locker without an SMS provider of its own: the console's ingest sends its SMS."""
    key, config, db = console_setup
    locker_id, rig = await _locker(storage_locker, mqtt_broker, key,
                                   profile_toml(mode="postpaid", auth="sms"),
                                   notifier={"sms": "mqtt"})
    with config.open("a") as f:  # the console's own SMS provider: the test's gateway
        f.write(f'[notifier]\nsms = "http"\n[notifier.http]\nurl = "{rig.sms.url}/send"\n'
                f"body_template = '{SMS_BODY}'\n")
    ingest = subprocess.Popen(
        [CONSOLE, "--config", str(config), "ingest", "--client-id", f"ingest-{locker_id}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert ingest.stderr is not None
        await asyncio.to_thread(_wait_subscribed, ingest)
        rental = (await rig.http.post("/api/v1/rentals", json={"size": "S"})).json()
        rid = rental["rental_id"]
        sent = await rig.http.post(f"/api/v1/rentals/{rid}/phone", json={"phone": "+79001234567"})
        assert sent.status_code == 200, sent.text
        sms = (await rig.sms.wait_async(1, timeout=10)).json()
        assert sms["to"] == "+79001234567"
        code = sms["text"].rsplit(" ", 1)[1]
        ok = await rig.http.post(f"/api/v1/rentals/{rid}/code", json={"code": code})
        assert ok.status_code == 200 and ok.json()["state"] == "payment"
        # The row is committed just after the gateway took the SMS: wait for it.
        deadline = time.monotonic() + 10
        while not (rows := _notification_rows(db)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rows and code not in str(rows)  # recorded, but never the text
    finally:
        ingest.terminate()
        ingest.wait(10)


def _notification_rows(db: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT * FROM notifications").fetchall()


def _wait_subscribed(ingest: subprocess.Popen) -> None:
    assert ingest.stderr is not None
    for line in ingest.stderr:  # its first session misses what was published before it
        if b"subscribed" in line:
            break
    threading.Thread(target=ingest.stderr.read, daemon=True).start()
