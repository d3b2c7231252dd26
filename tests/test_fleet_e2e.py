"""Remote commands end to end: console -> real Mosquitto -> lockerd -> pty board simulator.

No stale, forged or replayed command moves a lock: each is rejected with its reason and the
simulator never sees an unlock frame for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from contract.signing import (
    b64url_decode,
    b64url_encode,
    generate_private_key,
    make_command,
    public_key_b64,
    sign,
)
from contract.topics import Topics

TOPICS = Topics()
KEY = generate_private_key()
OTHER_KEY = generate_private_key()
CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 5)]


def now_ms() -> int:
    return int(time.time() * 1000)


def locker_extra(mqtt_broker, creds) -> str:
    return "\n".join(
        [
            "[mqtt]",
            f'host = "{mqtt_broker.host}"',
            f"port = {mqtt_broker.port}",
            f'username = "{creds.username}"',
            f'password = "{creds.password}"',
            "[trust]",
            f'keys = {{ "console-1" = "{public_key_b64(KEY)}" }}',
        ]
    )


@pytest.fixture
def fleet(mqtt_broker, locker_credentials, board_sim, lockerd):
    """A locker on the fleet, and a console client listening to its results and events."""
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    locker_id = locker_credentials.locker_id
    d = lockerd(
        [board], CELLS, locker_id=locker_id, extra=locker_extra(mqtt_broker, locker_credentials)
    )
    console = mqtt_broker.console_client()
    console.subscribe(TOPICS.cmd_result(locker_id))
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected")
    return sim, d, console, locker_id


def command(locker: str, type_: str = "open", cell: int = 1, **kw: Any) -> dict:
    fields = dict(operator="alice", reason="customer on the phone", key_id="console-1",
                  private_key=KEY, now_ms=now_ms())
    fields.update(kw)
    return make_command(locker, type_, {"cell": cell}, **fields)


def results_for(console, cmd_id: str, n: int, timeout: float = 10) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = console.expect(timeout=max(0.01, deadline - time.monotonic()))
        body = json.loads(msg.payload)
        if msg.topic.endswith("/cmd/result") and body["cmd_id"] == cmd_id:
            out.append(body)
    return out


def test_remote_open_end_to_end(fleet) -> None:
    sim, d, console, locker = fleet
    cmd = command(locker, cell=2)
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    accepted, done = results_for(console, cmd["cmd_id"], 2)
    assert accepted["status"] == "accepted"
    assert done["status"] == "done" and done["data"]["door"] == "open"
    assert sim.unlock_count(0, 2) == 1 and sim.door_open(0, 2)
    sim.close_door(0, 2)
    d.wait_event("open_completed", cell=2, ref=cmd["cmd_id"])
    assert d.cell(2)["state"] == "free"


def test_remote_block_and_unblock(fleet) -> None:
    sim, d, console, locker = fleet
    cmd = command(locker, "block", cell=3, reason="cleaning")
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    assert [r["status"] for r in results_for(console, cmd["cmd_id"], 2)] == ["accepted", "done"]
    assert d.cell(3)["state"] == "blocked"
    cmd = command(locker, "unblock", cell=3)
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    assert results_for(console, cmd["cmd_id"], 2)[1]["data"]["state"] == "free"
    assert sim.unlock_count(0, 3) == 0


def _tampered(locker: str) -> dict:
    cmd = command(locker)
    cmd["args"] = {"cell": 2}
    return cmd


def _forged(locker: str) -> dict:
    return command(locker, private_key=OTHER_KEY)


def _unknown_key(locker: str) -> dict:
    return command(locker, key_id="console-9")


def _wrong_locker(locker: str) -> dict:
    # Signed for another locker, published on this one's topic.
    return command("SOMEONE-ELSE")


def _expired(locker: str) -> dict:
    return command(locker, now_ms=now_ms() - 120_000, ttl_ms=30_000)


def _bad_sig_bytes(locker: str) -> dict:
    cmd = command(locker)
    raw = bytearray(b64url_decode(cmd["sig"]))
    raw[0] ^= 1
    return {**cmd, "sig": b64url_encode(bytes(raw))}


def _unknown_cell(locker: str) -> dict:
    return command(locker, cell=42)


def _unsupported(locker: str) -> dict:
    fields = {k: v for k, v in command(locker).items() if k != "sig"}
    fields["type"] = "self_destruct"
    return sign(fields, KEY)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_forged, "bad_signature"),
        (_tampered, "bad_signature"),
        (_bad_sig_bytes, "bad_signature"),
        (_unknown_key, "unknown_key"),
        (_wrong_locker, "wrong_locker"),
        (_expired, "expired"),
        (_unknown_cell, "unknown_cell"),
        (_unsupported, "unsupported"),
    ],
)
def test_bad_commands_are_rejected_and_move_no_lock(fleet, make, reason: str) -> None:
    sim, d, console, locker = fleet
    cmd = make(locker)
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    (answer,) = results_for(console, cmd["cmd_id"], 1)
    assert answer["status"] == "rejected" and answer["reason"] == reason
    d.wait_event("command_rejected", cmd_id=cmd["cmd_id"], reason=reason)
    console.assert_silent(0.3)
    assert sum(sim.unlock_count(0, c["id"]) for c in CELLS) == 0


def test_malformed_payload_is_logged_and_changes_nothing(fleet) -> None:
    sim, d, console, locker = fleet
    console.publish(TOPICS.cmd(locker), b"\xff not json")
    d.wait_event("command_rejected", reason="malformed")
    assert d.proc.poll() is None
    assert sum(sim.unlock_count(0, c["id"]) for c in CELLS) == 0


def test_replayed_command_is_never_executed_twice(fleet) -> None:
    sim, d, console, locker = fleet
    cmd = command(locker, cell=4)
    payload = json.dumps(cmd)
    console.publish(TOPICS.cmd(locker), payload)
    assert [r["status"] for r in results_for(console, cmd["cmd_id"], 2)] == ["accepted", "done"]
    sim.close_door(0, 4)
    d.wait_event("open_completed", cell=4)
    # The same message again (a QoS 1 duplicate or an attacker's replay): the stored results
    # come back, and the lock does not move.
    console.publish(TOPICS.cmd(locker), payload)
    again = results_for(console, cmd["cmd_id"], 2)
    assert [r["status"] for r in again] == ["accepted", "done"]
    time.sleep(0.2)
    assert sim.unlock_count(0, 4) == 1
    # And after a restart of the daemon too: the replay cache is durable.
    d.terminate()
    mark = d.mark
    d.start()
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected", since=mark)
    console.publish(TOPICS.cmd(locker), payload)
    assert [r["status"] for r in results_for(console, cmd["cmd_id"], 2)] == ["accepted", "done"]
    assert sim.unlock_count(0, 4) == 1


def test_command_expired_while_locker_offline_is_rejected(fleet) -> None:
    sim, d, console, locker = fleet
    assert d.terminate() == 0
    # Still valid when published (expires_at + the locker's 5 s skew allowance is 1 s away)...
    cmd = command(locker, cell=1, now_ms=now_ms() - 34_000, ttl_ms=30_000)
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))  # queued by the broker for the locker
    time.sleep(1.3)  # ...and expired by the time the locker is back
    mark = d.mark
    d.start()
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected", since=mark)
    (answer,) = results_for(console, cmd["cmd_id"], 1)
    assert answer["status"] == "rejected" and answer["reason"] == "expired"
    assert sim.unlock_count(0, 1) == 0 and not sim.door_open(0, 1)


def test_lockerd_answers_resync_with_its_retained_state(fleet) -> None:
    """The console lost this locker's status and cells on the way (a connect storm): asked on
    `resync`, lockerd publishes them again, once however often it is asked."""
    _, d, console, locker = fleet
    console.subscribe(TOPICS.status(locker))
    console.subscribe(f"lockers/{locker}/cells/+")
    retained = {console.expect(timeout=5).topic for _ in range(1 + len(CELLS))}
    assert TOPICS.status(locker) in retained
    for _ in range(5):
        console.publish(TOPICS.resync(locker), json.dumps({"at": now_ms(), "spread_ms": 200}))
    again = [console.expect(timeout=5) for _ in range(1 + len(CELLS))]
    assert {m.topic for m in again} == retained and not any(m.retain for m in again)
    assert json.loads(again[0].payload)["online"] is True
    console.assert_silent(0.5)  # five requests, one answer
    d.wait_line(lambda r: r.get("kind") == "mqtt_resynced")
