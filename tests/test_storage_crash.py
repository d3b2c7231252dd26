"""kill -9 of lockerd between the card payment and the door: no double charge, no lost money.

A real lockerd process, its kiosk API over HTTP, the simulated card terminal inside it (its
journal on disk is the bank's truth, surviving the kill like a real bank would).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx

from daemon.control import request
from tests.fixtures.lockerd import LOCKERD
from tests.fixtures.storage_locker import CELLS, free_port, profile_toml


def _start(board_sim, lockerd, tmp_path: Path):
    sim = board_sim("modbus-relay", boards=1, locks=6)
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_toml(mode="prepaid", auth="printed_pin"))
    port, control = free_port(), tmp_path / "payment.sock"
    receipts = tmp_path / "receipts.bin"
    extra = (
        f'profile = "{profile}"\n'
        f"[kiosk]\nenabled = true\nport = {port}\n"
        f'[payment]\nadapter = "simulator"\ncontrol_socket = "{control}"\nrecheck_s = 0.3\n'
        f'[printer]\nkind = "file"\npath = "{receipts}"\n'
    )
    board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, extra=extra)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait(lambda: _ready(http))
    journal = Path(d.socket).parent / "payment-sim.json"
    return sim, d, http, control, journal, receipts, port


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/api/v1/health").json()["ready"]
    except httpx.TransportError:
        return False


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.03)


def _operations(journal: Path) -> list[dict]:
    return json.loads(journal.read_text())["operations"] if journal.exists() else []


def test_crash_after_the_bank_approved_before_the_door_opened(board_sim, lockerd, tmp_path):
    sim, d, http, control, journal, _, port = _start(board_sim, lockerd, tmp_path)
    rental = http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600}).json()
    cell = rental["cell"]
    # The bank takes the money, then the reply takes 30 s: the daemon dies while it waits.
    assert request(control, {"op": "hold_after_approve", "s": 30})["ok"]
    threading.Thread(
        target=lambda: _swallow(lambda: http.post(f"/api/v1/rentals/{rental['rental_id']}/start",
                                                  timeout=40)),
        daemon=True,
    ).start()
    _wait(lambda: any(o["status"] == "approved" for o in _operations(journal)))
    d.kill9()
    assert sim.unlock_count(0, cell) == 0  # the door never opened

    mark = d.mark
    d.start()
    voided = d.wait_event("payment_voided", since=mark, timeout=15)
    assert voided["amount"] == 15000 and voided["cell"] == cell
    [op] = _operations(journal)
    assert (op["charges"], op["voids"], op["status"]) == (1, 1, "voided")
    assert d.cell(cell)["state"] == "free"

    # The locker goes on renting: a new rental is a new operation, charged once.
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    again = http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600}).json()
    started = http.post(f"/api/v1/rentals/{again['rental_id']}/start")
    assert started.status_code == 200, started.text
    ops = _operations(journal)
    assert [(o["charges"], o["status"]) for o in ops] == [(1, "voided"), (1, "approved")]

    # The client closes the door on the second rental; a technician at the locker then sees
    # the ledger with nothing left open.
    mark = d.mark
    d.wait_event("door_opened", cell=cell)
    sim.close_door(0, cell)
    d.wait_event("deposit_completed", cell=cell, since=mark)
    ctl = subprocess.run([LOCKERD, "ctl", "--config", str(d.config_path), "payments"],
                         capture_output=True, text=True, timeout=15)
    assert ctl.returncode == 0, ctl.stderr
    assert "voided" in ctl.stdout and "captured" in ctl.stdout and "150.00 RUB" in ctl.stdout
    assert " NO" not in ctl.stdout


def test_crash_while_the_door_is_open_keeps_the_paid_rental(board_sim, lockerd, tmp_path):
    sim, d, http, _, journal, receipts, port = _start(board_sim, lockerd, tmp_path)
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    cell = rental["cell"]
    assert http.post(f"/api/v1/rentals/{rental['rental_id']}/start").status_code == 200
    d.wait_event("door_opened", cell=cell)
    pin = re.search(rb"PIN: (\d{6})", receipts.read_bytes()).group(1).decode()
    d.kill9()  # the client is putting a bag in when the daemon dies

    mark = d.mark
    d.start()
    # The screen polls on: its rental is still there, waiting for the door.
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    view = http.get(f"/api/v1/rentals/{rental['rental_id']}")
    assert view.status_code == 200, view.text
    assert (view.json()["state"], view.json()["cell"]) == ("opening", cell)
    sim.close_door(0, cell)
    d.wait_event("deposit_completed", cell=cell, since=mark)
    d.wait_event("pin_issued", cell=cell, since=mark)
    view = http.get(f"/api/v1/rentals/{rental['rental_id']}").json()
    assert (view["state"], view["pin"], view["amount"]["amount"]) == ("occupied", pin, 10000)
    assert http.get(f"/api/v1/rentals/{'0' * 32}").status_code == 404
    time.sleep(0.8)  # a few reconcile rounds: nothing may be voided
    [op] = _operations(journal)
    assert (op["charges"], op["voids"], op["status"]) == (1, 0, "approved")
    assert not [r for r in d.lines if r.get("type") == "payment_voided"]

    account = http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})
    assert account.status_code == 200, account.text
    assert account.json()["bill"]["paid"] == 10000 and account.json()["state"] == "occupied"


def _swallow(call) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the daemon is killed mid-request
        call()


def test_a_pin_lockout_survives_kill_9(board_sim, lockerd, tmp_path):
    sim, d, http, _, _, receipts, port = _start(board_sim, lockerd, tmp_path)
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    cell = rental["cell"]
    mark = d.mark
    assert http.post(f"/api/v1/rentals/{rental['rental_id']}/start").status_code == 200
    d.wait_event("door_opened", cell=cell, since=mark)
    sim.close_door(0, cell)
    d.wait_event("deposit_completed", cell=cell, since=mark)
    pin = re.search(rb"PIN: (\d{6})", receipts.read_bytes()).group(1).decode()
    wrong = "0" * 6 if pin != "0" * 6 else "1" * 6
    codes = [http.post(f"/api/v1/cells/{cell}/account", json={"pin": wrong}).status_code
             for _ in range(5)]
    assert codes == [403, 403, 403, 403, 423]
    d.kill9()  # pulling the plug does not lift the lockout

    d.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait(lambda: _ready(http))
    still = http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin})
    assert still.status_code == 423 and still.json()["error"]["code"] == "pin_locked"
