"""Issue 9, item 11: a signed command never runs twice, whatever the wall clock does.

The attack: a command with a 1 h TTL runs; the wall clock is stepped forward 2 h, so the replay
cache's entry (kept until expiry + 10 min) is pruned; the clock is stepped back and the very same
signed payload runs again. And a command signed with a 10-year TTL was accepted, so its cache
entry would have to be kept for ten years. The pure tests drive the core and the store with time
as an argument; the last ones run a real LockerDaemon (kiosk over HTTP, boards over a pty) on the
session's real Mosquitto, with the wall clock stepped under it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from contract.messages import Reason
from contract.signing import generate_private_key, make_command, public_key_b64, verify
from contract.topics import Topics
from daemon import app
from daemon.io.store import LockerStore
from daemon.remote_commands import Answer, Execute, RemoteCommands, result
from tests.fixtures.storage_locker import HOUR, profile_toml

KEY = generate_private_key()
TRUST = {"console-1": public_key_b64(KEY)}
T0 = 1_800_000_000_000
YEAR = 365 * 24 * HOUR
TOPICS = Topics()


def signed(locker: str, now_ms: int, ttl_ms: int, cell: int = 1, type_: str = "block") -> bytes:
    cmd = make_command(locker, type_, {"cell": cell}, operator="alice", reason="test",
                       key_id="console-1", private_key=KEY, now_ms=now_ms, ttl_ms=ttl_ms)
    return json.dumps(cmd).encode()


# -- the core, time as an argument ------------------------------------------------------------
def test_a_ttl_longer_than_the_cap_is_rejected() -> None:
    ten_years = signed("L1", T0, 10 * YEAR)
    assert verify(ten_years, trusted_keys=TRUST, locker_id="L1", now_ms=T0,
                  max_ttl_ms=HOUR) == Reason.TTL_TOO_LONG
    hour = signed("L1", T0, HOUR)
    assert verify(hour, trusted_keys=TRUST, locker_id="L1", now_ms=T0, max_ttl_ms=HOUR) is None
    remote = RemoteCommands("L1", TRUST, [1], max_ttl_ms=HOUR)
    answer = remote.check(ten_years, "L1", T0, lambda cmd_id: None)
    assert isinstance(answer, Answer)
    assert answer.results[0]["status"] == "rejected"
    assert answer.results[0]["reason"] == "ttl_too_long"


def test_the_replay_cache_survives_clock_steps(tmp_path) -> None:
    """Forward 2 h, prune, back 2 h: the same payload is answered from the cache, not run."""
    store = LockerStore(tmp_path)
    remote = RemoteCommands("L1", TRUST, [1], max_ttl_ms=HOUR)
    payload = signed("L1", T0, HOUR)
    first = remote.check(payload, "L1", T0, store.command_record)
    assert isinstance(first, Execute)
    first.record["results"] = [result(first.command.cmd_id, "accepted", cell=1)]
    store.commit(commands=[first.record], now_ms=T0)

    # What lockerd does when its tick sees the wall clock step (app._clock_jumped), then prunes.
    store.commit(commands=store.commands_shifted(2 * HOUR), now_ms=T0 + 2 * HOUR)
    store.prune_commands(T0 + 2 * HOUR + 1000)
    store.commit(commands=store.commands_shifted(-2 * HOUR), now_ms=T0 + 1000)
    store.prune_commands(T0 + 1000)

    again = remote.check(payload, "L1", T0 + 2000, store.command_record)
    assert isinstance(again, Answer), "the replayed command would run a second time"
    assert again.results == first.record["results"]
    store.close()
    reopened = LockerStore(tmp_path)  # the shift was committed, not only made in memory
    assert reopened.command_record(first.command.cmd_id)["keep_until"] == \
        first.record["keep_until"]
    reopened.close()


# -- a real lockerd on the real broker, its wall clock stepped ------------------------------
async def _fleet_locker(storage_locker, mqtt_broker):
    locker_id = f"R-{uuid.uuid4().hex[:8]}"
    creds = mqtt_broker.add_locker(locker_id)
    rig = await storage_locker(
        profile_toml(mode="prepaid"), locker_id=locker_id,
        mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port,
              "username": creds.username, "password": creds.password},
        trust=TRUST,
    )
    await rig.wait_log("mqtt_connected")
    console = mqtt_broker.console_client()
    console.subscribe(TOPICS.cmd_result(locker_id))
    return locker_id, rig, console


async def _results(console, cmd_id: str, n: int, timeout: float = 10.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await asyncio.to_thread(console.expect, None, max(0.01, deadline - time.monotonic()))
        body = json.loads(msg.payload)
        if body.get("cmd_id") == cmd_id:
            out.append(body)
    return out


async def test_a_command_does_not_run_again_after_the_clock_steps_forward_and_back(
    storage_locker, mqtt_broker, monkeypatch
) -> None:
    monkeypatch.setattr(app, "PRUNE_S", 0.05)  # prune at every tick instead of every 30 s
    locker_id, rig, console = await _fleet_locker(storage_locker, mqtt_broker)
    try:
        cell = 2
        payload = signed(locker_id, rig.daemon.clock(), HOUR, cell=cell)
        cmd_id = json.loads(payload)["cmd_id"]
        console.publish(TOPICS.cmd(locker_id), payload)
        first = await _results(console, cmd_id, 2)
        assert [r["status"] for r in first] == ["accepted", "done"]
        await rig.wait_cell(cell, state="blocked")
        rig.daemon.command(cell, "unblock", reason="technician")  # the cell is back in service
        await rig.wait_cell(cell, state="free")

        for step in (2 * HOUR, -2 * HOUR):
            mark = rig.mark
            rig.jump(step)
            await rig.wait_event("clock_jumped", since=mark)
            await asyncio.sleep(0.3)  # a few ticks: each one prunes the replay cache

        console.publish(TOPICS.cmd(locker_id), payload)  # the attacker's replay
        again = await _results(console, cmd_id, 2)
        assert [r["status"] for r in again] == ["accepted", "done"]
        await asyncio.sleep(0.3)
        assert rig.daemon.machine.cell_view(cell)["state"] == "free", "the command ran twice"
        assert sum(e["type"] == "blocked" and e["data"].get("ref") == cmd_id
                   for e in rig.events) <= 1
    finally:
        console.close()


async def test_a_ten_year_ttl_is_rejected_by_the_locker(storage_locker, mqtt_broker) -> None:
    locker_id, rig, console = await _fleet_locker(storage_locker, mqtt_broker)
    try:
        payload = signed(locker_id, rig.daemon.clock(), 10 * YEAR, cell=3)
        cmd_id = json.loads(payload)["cmd_id"]
        console.publish(TOPICS.cmd(locker_id), payload)
        (answer,) = await _results(console, cmd_id, 1)
        assert answer["status"] == "rejected" and answer["reason"] == "ttl_too_long"
        await rig.wait_event("command_rejected", cmd_id=cmd_id, reason="ttl_too_long")
        assert rig.daemon.machine.cell_view(3)["state"] == "free"
    finally:
        console.close()


def test_the_cap_is_a_key_with_a_sane_default() -> None:
    from daemon.config import TrustSettings

    assert TrustSettings().max_command_ttl_s == 3600
    assert TrustSettings.model_validate({"max_command_ttl_s": 600}).max_command_ttl_s == 600
    for wrong in (0, -1, 86_401):
        with pytest.raises(ValueError):
            TrustSettings.model_validate({"max_command_ttl_s": wrong})
