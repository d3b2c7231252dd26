"""A stranger at the kiosk: parallel PIN guesses, huge bodies, slow clients, a squatted port.

Each test attacks a real lockerd process over real HTTP (its kiosk API on a real socket, its
control socket, simulated lock boards on a pseudo-terminal) and checks what the attack must not
achieve: a guess past the lockout, memory that grows with the body, a daemon that stops answering
or loses a door event, a port another user can take.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.lockerd import LockerdProcess
from tests.fixtures.storage_locker import CELLS, free_port, profile_toml


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _locker(board_sim, lockerd, tmp_path: Path, kiosk: dict[str, Any] | None = None,
            start: bool = True, port: int | None = None):
    """A storage locker (six cells on a simulated relay board) with its kiosk on a free port."""
    sim = board_sim("modbus-relay", boards=1, locks=6)
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_toml(mode="prepaid", auth="printed_pin"))
    port = port or free_port()
    receipts = tmp_path / "receipts.bin"
    keys = {"enabled": True, "port": port, **(kiosk or {})}
    extra = (
        f'profile = "{profile}"\n'
        "[kiosk]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items())
        + '[payment]\nadapter = "simulator"\nrecheck_s = 0.3\n'
        f'[printer]\nkind = "file"\npath = "{receipts}"\n'
    )
    board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, extra=extra, start=start)
    return sim, d, port, receipts


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.03)


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/api/v1/health").json()["ready"]
    except httpx.TransportError:
        return False


def _rent(sim, d: LockerdProcess, http: httpx.Client, receipts: Path) -> tuple[int, str]:
    """A whole prepaid rental: returns its cell and the PIN printed on the receipt."""
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    cell = rental["cell"]
    mark = d.mark
    assert http.post(f"/api/v1/rentals/{rental['rental_id']}/start").status_code == 200
    d.wait_event("door_opened", cell=cell, since=mark)
    sim.close_door(0, cell)
    d.wait_event("pin_issued", cell=cell, since=mark)
    pin = re.findall(rb"PIN: (\d{6})", receipts.read_bytes())[-1].decode()
    return cell, pin


def _pin_locked_events(d: LockerdProcess, cell: int, since: int) -> int:
    """`pin_locked` events the daemon committed for `cell`: one per evaluated wrong PIN that
    (re)locked the cell."""
    return sum(1 for r in d.lines[since:] if r.get("kind") == "event"
               and r.get("type") == "pin_locked" and r.get("cell") == cell)


# -- item 3: the PIN lockout under parallel guesses ---------------------------------------------
async def _guess_all_at_once(port: int, cell: int, wrong: list[str], right: str) -> tuple[
        list[int], httpx.Response]:
    limits = httpx.Limits(max_connections=len(wrong) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 limits=limits) as client:
        url = f"/api/v1/cells/{cell}/account"
        guesses = [asyncio.create_task(client.post(url, json={"pin": pin})) for pin in wrong]
        await asyncio.sleep(0.2)  # the wrong ones are on the wire; then the right one
        answer = await client.post(url, json={"pin": right})
        codes = [r.status_code for r in await asyncio.gather(*guesses)]
    return codes, answer


def test_parallel_pin_guesses_do_not_pass_the_lockout(board_sim, lockerd, tmp_path):
    # Every PIN answer is held back 1 s from the first failure on (the kiosk-wide slowdown):
    # the window in which parallel requests used to pass the lockout check together.
    sim, d, port, receipts = _locker(board_sim, lockerd, tmp_path, kiosk={
        "slow_after_failures": 1, "slow_step_ms": 1000, "slow_max_ms": 1000})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    cell, pin = _rent(sim, d, http, receipts)
    other = next(c["id"] for c in CELLS if c["id"] != cell)
    assert http.post(f"/api/v1/cells/{other}/account", json={"pin": "000000"}).status_code == 403

    wrong = [f"{n:06d}" for n in range(1, 400) if f"{n:06d}" != pin][:199]
    mark = d.mark
    codes, answer = asyncio.run(_guess_all_at_once(port, cell, wrong, pin))

    assert d.terminate() == 0
    evaluated = codes.count(403) + _pin_locked_events(d, cell, mark)
    print(f"guesses evaluated on cell {cell}: {evaluated} (403: {codes.count(403)}); "
          f"the right PIN after them: {answer.status_code}")
    assert answer.status_code == 423, answer.text  # the right PIN waits out the lockout
    assert answer.json()["error"]["code"] == "pin_locked"
    assert set(codes) <= {403, 423} and codes.count(403) <= 4, codes
    assert sim.unlock_count(0, cell) == 1  # only the deposit ever opened it
    assert evaluated <= 5


def test_a_wrong_pin_costs_the_same_to_record_after_hundreds(board_sim, lockerd, tmp_path):
    # No lockout and no slowdown get in the way: only what one failure writes is measured.
    _, d, port, _ = _locker(board_sim, lockerd, tmp_path, kiosk={
        "pin_attempts": 100_000, "slow_step_ms": 0})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    journal = d.socket.parent / "lockerd.journal"

    def one_failure_bytes() -> int:
        while True:
            before = journal.stat().st_size
            assert http.post("/api/v1/cells/2/account", json={"pin": "000000"}).status_code == 403
            after = journal.stat().st_size
            if after > before:  # else the journal was compacted in between: measure again
                return after - before

    early = one_failure_bytes()
    for _ in range(600):
        http.post("/api/v1/cells/3/account", json={"pin": "000000"})
    late = one_failure_bytes()
    print(f"bytes written for one wrong PIN: after 1 failure {early}, after 600 {late}")
    assert late <= early + 64, (early, late)

    # ... and the count is as durable as before: kill -9 does not forget it.
    d.kill9()
    d.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    reply = http.post("/api/v1/cells/2/account", json={"pin": "000000"})
    assert reply.json()["error"]["params"]["attempts"] == 100_000 - 3
