"""The operator CLI (`locker-console`) as a real process against a real Mosquitto.

A scripted responder stands in for a locker: a plain MQTT client on the locker's own account that
subscribes to its `cmd` topic, verifies each command's signature with the console's public key
(contract.signing.verify) and answers as the test says (accepted+done, rejected, accepted+failed,
or nothing). Exit codes are the contract: 0 done, 1 failed/rejected, 2 unusable, 3 unknown.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from contract.signing import (
    config_hash,
    verify,
    verify_config,
)
from tests.fixtures.console_cli import (
    CONSOLE,
    KEY_ID,
    TOPICS,
    audit_row,
    config,
    signing_key,
    write_config,
)
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker, MqttTestClient

__all__ = ["config", "signing_key"]  # fixtures shared with the other console test modules


def console(
    config: Path | None, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    argv = [CONSOLE, *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class Responder:
    """A scripted locker: verifies every command and answers according to `mode`."""

    def __init__(self, broker: MqttBroker, creds: LockerCredentials, public_key: str,
                 mode: str) -> None:
        self.locker = creds.locker_id
        self.public_key = public_key
        self.mode = mode
        self.verdicts: list[tuple[str | None, dict[str, Any]]] = []
        self.client: MqttTestClient = broker.client(creds.username, creds.password)
        self.client.paho.on_message = self._on_message
        self.client.subscribe(TOPICS.cmd(self.locker))
        self.client.subscribe(TOPICS.config(self.locker))
        # Like lockerd: a retained status, so the console knows the locker exists.
        self.client.publish(TOPICS.status(self.locker), json.dumps({
            "online": True, "version": "test", "boot_id": "b1", "started_at": 1}), retain=True)

    def _answer(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        self.client.paho.publish(topic, json.dumps(body), qos=1, retain=retain)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if not msg.payload:  # a retained config being cleared
            return
        cmd = json.loads(msg.payload)
        keys = {KEY_ID: self.public_key}
        if msg.topic == TOPICS.config(self.locker):
            verdict = verify_config(msg.payload, trusted_keys=keys, locker_id=self.locker)
            self.verdicts.append((verdict, cmd))
            if self.mode == "reject-config":
                event = {"seq": 1, "id": "6f1d2c1e-0000-4000-8000-000000000001", "at": 1,
                         "type": "config_rejected",
                         "data": {"version": cmd["version"], "reason": "stale_version"}}
                self._answer(TOPICS.events(self.locker), event)
            elif verdict is None:
                applied = {"version": cmd["version"], "hash": config_hash(cmd["body"])}
                self._answer(TOPICS.config_applied(self.locker), applied, retain=True)
            return
        verdict = verify(msg.payload, trusted_keys=keys, locker_id=self.locker,
                         now_ms=int(time.time() * 1000), topic_locker=self.locker)
        self.verdicts.append((verdict, cmd))
        result = TOPICS.cmd_result(self.locker)
        if verdict is not None:
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "rejected",
                                  "reason": verdict})
        elif self.mode == "done":
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "accepted"})
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "done",
                                  "data": {"cell": cmd["args"]["cell"]}})
        elif self.mode == "failed":
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "accepted"})
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "failed",
                                  "reason": "lock_fault"})
        elif self.mode == "reject":
            self._answer(result, {"cmd_id": cmd["cmd_id"], "status": "rejected",
                                  "reason": "unknown_cell"})
        # mode "silent": no answer at all

    def close(self) -> None:
        self.client.publish(TOPICS.status(self.locker), b"", retain=True)
        self.client.close()


@pytest.fixture
def responder(mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
              signing_key: tuple[Path, str]) -> Any:
    made: list[Responder] = []

    def make(mode: str) -> Responder:
        made.append(Responder(mqtt_broker, locker_credentials, signing_key[1], mode))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_open_done_exits_0_and_is_audited(config: Path, responder: Any, tmp_path: Path) -> None:
    r = responder("done")
    out = console(config, "open", "--locker", r.locker, "--cell", "3", "--reason", "stuck parcel",
                  "--operator", "alice", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["accepted", "done"]
    [(verdict, cmd)] = r.verdicts
    assert verdict is None
    assert (cmd["type"], cmd["args"], cmd["operator"], cmd["reason"]) == (
        "open", {"cell": 3}, "alice", "stuck parcel")
    assert cmd["expires_at"] - cmd["issued_at"] == 30_000
    row = audit_row(tmp_path, cmd["cmd_id"])
    assert (row.locker, row.type, row.operator, row.reason, row.status, row.result_data) == (
        r.locker, "open", "alice", "stuck parcel", "done", {"cell": 3})


@pytest.mark.parametrize(("mode", "expected"), [("reject", "rejected: unknown_cell"),
                                                 ("failed", "failed: lock_fault")])
def test_open_rejected_or_failed_exits_1_with_the_reason(
    config: Path, responder: Any, mode: str, expected: str
) -> None:
    r = responder(mode)
    out = console(config, "open", "--locker", r.locker, "--cell", "99", "--reason", "test",
                  "--timeout", "5")
    assert out.returncode == 1, out.stderr
    assert expected in out.stdout


def test_open_without_answer_exits_3_outcome_unknown(config: Path, responder: Any) -> None:
    r = responder("silent")
    started = time.monotonic()
    out = console(config, "open", "--locker", r.locker, "--cell", "1", "--reason", "test",
                  "--timeout", "0.5")
    assert out.returncode == 3, out.stderr
    assert "unknown" in out.stdout
    assert "may still execute until it expires at" in out.stdout
    assert len(r.verdicts) == 1 and r.verdicts[0][0] is None
    assert time.monotonic() - started < 10


def test_block_json_prints_the_final_result(config: Path, responder: Any) -> None:
    r = responder("done")
    out = console(config, "block", "--locker", r.locker, "--cell", "2", "--reason", "repair",
                  "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["status"], result["locker"], result["data"]) == ("done", r.locker, {"cell": 2})
    assert r.verdicts[0][1]["type"] == "block"


def test_missing_signing_section_exits_2(
    tmp_path: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    cfg = write_config(tmp_path, mqtt_broker, None)
    out = console(cfg, "unblock", "--locker", locker_credentials.locker_id, "--cell", "1",
                  "--reason", "x")
    assert out.returncode == 2
    assert "[signing]" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = console(None, "open", "--locker", "L1", "--cell", "1", "--reason", "x")
    assert out.returncode == 2 and "--config" in out.stderr
    out = console(tmp_path / "nope.toml", "status")
    assert out.returncode == 2 and "no such configuration file" in out.stderr


def test_status_shows_retained_lockers_and_cells(
    config: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    lk = locker_credentials.locker_id
    with mqtt_broker.client(locker_credentials.username, locker_credentials.password) as c:
        c.publish(TOPICS.status(lk), json.dumps({
            "online": True, "version": "2.0.1", "boot_id": "boot-7",
            "started_at": 1_700_000_000_000,
            "boards": [{"name": "bus0", "online": False, "failures": 3}]}), retain=True)
        for cell, state, door in ((1, "occupied", "closed"), (2, "blocked", "unknown")):
            c.publish(TOPICS.cell(lk, cell), json.dumps({
                "cell": cell, "state": state, "door": door, "size": "L",
                "since": 1_700_000_000_000}), retain=True)
        out = console(config, "status", "--locker", lk)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith(f"{lk}  online  version 2.0.1  boot boot-7")
        assert "bus0 OFFLINE" in lines[0]
        assert lines[1].split() == ["cell", "1", "occupied", "door", "closed", "size", "L"]
        assert lines[2].split() == ["cell", "2", "blocked", "door", "unknown", "size", "L"]
        out = console(config, "status", "--json")
        assert out.returncode == 0, out.stderr
        [entry] = [e for e in json.loads(out.stdout)["lockers"] if e["id"] == lk]
        assert entry["online"] is True and [x["cell"] for x in entry["cells"]] == [1, 2]
        for topic in (TOPICS.status(lk), TOPICS.cell(lk, 1), TOPICS.cell(lk, 2)):
            c.publish(topic, b"", retain=True)


def test_publish_config_waits_for_applied(
    config: Path, responder: Any, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    r = responder("done")
    r.client.publish(TOPICS.config_applied(r.locker),
                     json.dumps({"version": 6, "hash": "0" * 64}), retain=True)
    body = tmp_path / "profile.toml"
    body.write_text('profile = "storage"\n[tariff]\nsteps = [[60, 100], [60, 90]]\n')
    out = console(config, "publish-config", "--locker", r.locker, str(body), "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "version 7" in out.stdout
    [(verdict, signed)] = r.verdicts
    assert verdict is None and signed["version"] == 7
    assert signed["body"] == {"profile": "storage", "tariff": {"steps": [[60, 100], [60, 90]]}}
    for topic in (TOPICS.config_applied(r.locker), TOPICS.config(r.locker)):
        with mqtt_broker.console_client() as c:
            c.publish(topic, b"", retain=True)


def test_publish_config_rejected_exits_1(
    config: Path, responder: Any, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    r = responder("reject-config")
    body = tmp_path / "profile.json"
    body.write_text('{"profile": "parcel"}')
    out = console(config, "publish-config", "--locker", r.locker, str(body), "--version", "3",
                  "--timeout", "5")
    assert out.returncode == 1, out.stderr + out.stdout
    assert "rejected: version 3: stale_version" in out.stdout
    with mqtt_broker.console_client() as c:
        c.publish(TOPICS.config(r.locker), b"", retain=True)


def test_watch_prints_one_line_per_event_until_ctrl_c(
    config: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    lk = locker_credentials.locker_id
    proc = subprocess.Popen([CONSOLE, "--config", str(config), "watch", "--locker", lk],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        with mqtt_broker.client(locker_credentials.username, locker_credentials.password) as c:
            assert proc.stdout is not None
            event = {"seq": 5, "id": "6f1d2c1e-0000-4000-8000-000000000005", "at": 1,
                     "type": "door_opened", "data": {"cell": 4}}
            deadline = time.monotonic() + 10
            line = ""
            # watch subscribes after start-up: repeat the event until it shows
            while "door_opened" not in line and time.monotonic() < deadline:
                c.publish(TOPICS.events(lk), json.dumps(event))
                line = proc.stdout.readline() if _readable(proc) else ""
            assert f"{lk} event #5 door_opened" in line and '"cell": 4' in line
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def _readable(proc: subprocess.Popen[str], timeout: float = 0.3) -> bool:
    import select as _select

    assert proc.stdout is not None
    ready, _, _ = _select.select([proc.stdout], [], [], timeout)
    return bool(ready)


def test_a_console_on_the_lockers_listener_is_told_where_to_log_in(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """An existing console configured for the lockers' port (as before consoles had a listener of
    their own) is refused by the broker: the message says which port consoles use."""
    mqtt_broker.ensure_running()
    config = write_config(tmp_path, mqtt_broker, None)
    config.write_text(config.read_text().replace(
        f"port = {mqtt_broker.console_port}", f"port = {mqtt_broker.port}"))
    result = console(config, "status")
    assert result.returncode == 2, result.stderr  # refused: the configuration is wrong
    assert "console listener" in result.stderr and "--console-port" in result.stderr, result.stderr
