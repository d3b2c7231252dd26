"""A locker whose MQTT login the broker refuses says so at level error, with what to check.

Real Mosquitto configured by broker/ code, a real lockerd process with a wrong password: the
refusal is logged at `error` naming the user and the fix (the locker's [mqtt] username/password,
the broker's accounts: `locker-broker add-locker`), at most once a minute while the retries go on.
"""

from __future__ import annotations

import time

from tests.fixtures.lockerd import LockerdProcess
from tests.fixtures.mqtt_broker import LockerCredentials
from tests.test_fleet_e2e import locker_extra

CELLS = [{"id": 1, "board": "b0", "lock": 1, "size": "M"}]


def test_a_refused_login_is_an_error_with_a_hint_once_a_minute(
    mqtt_broker, locker_credentials, board_sim, lockerd
) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    locker = locker_credentials.locker_id
    wrong = LockerCredentials(locker, locker_credentials.username, "not-the-password")
    d: LockerdProcess = lockerd([board], CELLS, locker_id=locker,
                                extra=locker_extra(mqtt_broker, wrong))
    first = d.wait_line(lambda r: r.get("kind") == "mqtt_connect_refused", timeout=10)
    assert first["level"] == "error", first
    assert first["username"] == locker
    assert "[mqtt] username/password" in first["hint"]
    assert f"locker-broker add-locker {locker}" in first["hint"]

    # The retries go on (backoff 0.5 s, 1 s, 2 s, ...), each one refused; one error a minute.
    deadline = time.monotonic() + 10
    while sum(r.get("kind") == "mqtt_connect_refused" for r in d.lines) < 3:
        assert time.monotonic() < deadline, d.lines[-10:]
        time.sleep(0.1)
    refused = [r for r in d.lines if r.get("kind") == "mqtt_connect_refused"]
    assert [r["level"] for r in refused] == ["error"] + ["info"] * (len(refused) - 1)
    assert not [r for r in d.lines if r.get("kind") == "mqtt_connected"]
    assert d.proc is not None and d.proc.poll() is None
