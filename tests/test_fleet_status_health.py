"""The retained `status` follows board health: what the fleet sees is what the boards do.

A real lockerd on the fleet's Mosquitto over a simulated bus. The board is silent when the
daemon connects (so the first status names it offline), answers a moment later (ready), goes
silent, and answers again: each change must reach the retained status within a poll cycle or
two, not only at the next reconnect.
"""

from __future__ import annotations

import json
import time

from contract.topics import Topics
from tests.test_fleet_e2e import locker_extra

TOPICS = Topics()
CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 5)]
POLL_MS = 30
TIMEOUT_MS = 50
OFFLINE_AFTER = 20  # about 1.6 s of silence: time enough to connect before the board is judged


def _board_online(console, topic: str, want: bool, timeout: float) -> tuple[dict, float]:
    """The next status on `topic` whose board b0 is `want`; with how long it took."""
    started = time.monotonic()
    deadline = started + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no status with b0 online={want} within {timeout} s: {seen}")
        try:
            msg = console.expect(topic, timeout=left)
        except AssertionError:
            continue
        status = json.loads(msg.payload)
        seen.append(status)
        boards = {b["name"]: b["online"] for b in status.get("boards", [])}
        if boards.get("b0") is want:
            return status, time.monotonic() - started


def test_the_retained_status_follows_board_health(
    mqtt_broker, locker_credentials, board_sim, lockerd
) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    sim.set_silent(True)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path,
             "poll_interval_ms": POLL_MS, "timeout_ms": TIMEOUT_MS}
    locker = locker_credentials.locker_id
    d = lockerd([board], CELLS, locker_id=locker, start=False,
                timing={"offline_after_polls": OFFLINE_AFTER},
                extra=locker_extra(mqtt_broker, locker_credentials))
    d.start(wait_ready=False)
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected")
    sim.set_silent(False)  # the board answers after the daemon said hello to the fleet
    d.wait_line(lambda r: r.get("kind") == "ready")
    assert not [r for r in d.lines if r.get("kind") == "event" and r.get("type") == "board_offline"]

    topic = TOPICS.status(locker)
    with mqtt_broker.console_client() as console:
        console.subscribe(topic)
        # A retained status that still says "offline" is the fault: wait for one that is true.
        status, took = _board_online(console, topic, True, timeout=2.0)
        assert status["online"] is True
        print(f"status online after ready: {took:.2f} s")

        sim.set_silent(True)
        _, took = _board_online(console, topic, False, timeout=10.0)
        print(f"status offline after silence: {took:.2f} s")
        sim.set_silent(False)
        _, took = _board_online(console, topic, True, timeout=5.0)
        print(f"status online after the board answered again: {took:.2f} s")

    # What a console subscribing now gets (the retained message) is the truth too.
    with mqtt_broker.console_client() as late:
        late.subscribe(topic)
        retained = json.loads(late.expect(topic, timeout=5).payload)
        assert {b["name"]: b["online"] for b in retained["boards"]} == {"b0": True}
