"""`locker-console` as a new operator meets it (issue 10): what it says sends them the right way.

Real processes against the session's real Mosquitto and a real console database: output into a
closed pipe, a refused login, a command to a locker never seen, `status` read from what the ingest
stored (and, `--live`, from the broker, saying when it may be incomplete).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.topics import Topics
from fleet_console.db.engine import open_database
from fleet_console.db.models import Cell, Locker
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker

CONSOLE = str(Path(sys.executable).with_name("locker-console"))
BROKER = str(Path(sys.executable).with_name("locker-broker"))
TOPICS = Topics()


def write_config(tmp_path: Path, broker: MqttBroker, *, password: str | None = None,
                 signing: bool = False) -> Path:
    user, real = broker.console_credentials
    text = (f'[mqtt]\nhost = "{broker.host}"\nport = {broker.console_port}\n'
            f'username = "{user}"\npassword = "{password or real}"\n'
            f'[database]\nurl = "sqlite:///{tmp_path}/console.db"\n')
    if signing:
        from contract.signing import generate_private_key
        from fleet_console.keys import write_private_key

        key = write_private_key(tmp_path / "console.pem", generate_private_key())
        text += f'[signing]\nkey_file = "{key}"\nkey_id = "k1"\n'
    path = tmp_path / "console.toml"
    path.write_text(text)
    return path


def console(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONSOLE, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def into_closed_pipe(*argv: str) -> tuple[int, str]:
    """Run with stdout into a pipe whose reader is already gone (`... | head` after head left)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(list(argv), stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, mqtt_broker: MqttBroker) -> None:
    config = write_config(tmp_path, mqtt_broker)
    for argv in ([CONSOLE, "--config", str(config), "alarms"],
                 [CONSOLE, "--help"],
                 [BROKER, "--registry", str(tmp_path / "registry.json"), "list"]):
        code, stderr = into_closed_pipe(*argv)
        assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, (argv, stderr)
        assert code in (0, 141), (argv, code, stderr)


def test_a_wrong_password_exits_2_and_says_the_broker_refused_the_login(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    mqtt_broker.ensure_running()
    config = write_config(tmp_path, mqtt_broker, password="wrong-password")
    started = time.monotonic()
    result = console(config, "status", "--live")
    assert result.returncode == 2, result.stderr
    user = mqtt_broker.console_credentials.username
    assert f"the broker refused the login for user {user!r}" in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr
    assert time.monotonic() - started < 10


def _store(url: str, lockers: dict[str, tuple[list[int], list[int]]]) -> None:
    """Rows as the ingest writes them: each locker online, declaring cells, with stored cells."""
    db = open_database(url)
    now = int(time.time() * 1000)
    with db.transaction() as s:
        s.add_all(Locker(id=lk, online=True, version="2.1.0", boot_id="b1", started_at=now,
                         last_status_at=now, boards=[{"name": "b1", "online": True,
                                                      "failures": 0}],
                         declared_cells=declared) for lk, (declared, _) in lockers.items())
        s.add_all(Cell(locker=lk, cell=c, state="free", door="closed", size="M", since=now,
                       updated_at=now) for lk, (_, cells) in lockers.items() for c in cells)
    db.dispose()


def test_status_reads_the_database_and_says_what_is_missing(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    config = write_config(tmp_path, mqtt_broker)
    _store(f"sqlite:///{tmp_path}/console.db",
           {"L-db-1": ([1, 2, 3], [1, 2, 3]), "L-db-2": ([1, 2, 3, 4], [1, 4])})
    result = console(config, "status")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if not ln.startswith(("fleet:", "ingest"))]
    assert lines[0].startswith("L-db-1  online  version 2.1.0"), lines
    assert "cells 3/3" in lines[0] and "heard never" in lines[0], lines
    assert [ln.split()[1] for ln in lines if ln.startswith("  cell")] == ["1", "2", "3", "1", "4"]
    assert "L-db-2: 2 of 4 declared cells stored (missing 2, 3)" in result.stderr, result.stderr
    data = json.loads(console(config, "status", "--json", "--locker", "L-db-2").stdout)
    assert data["source"] == "database" and data["complete"] is False
    [entry] = data["lockers"]
    assert entry["missing_cells"] == [2, 3] and [c["cell"] for c in entry["cells"]] == [1, 4]


def test_status_of_1000_lockers_from_the_database_is_complete(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """1,000 lockers x 16 cells (17,000 rows: what made the broker's retained read run out of
    time at about 1,500 lockers) are all printed, and quickly."""
    config = write_config(tmp_path, mqtt_broker)
    cells = list(range(1, 17))
    _store(f"sqlite:///{tmp_path}/console.db", {f"L{n:04d}": (cells, cells) for n in range(1000)})
    started = time.monotonic()
    result = console(config, "status", "--limit", "0")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(1 for ln in lines if ln.startswith("L")) == 1000
    assert sum(1 for ln in lines if ln.startswith("  cell")) == 16_000
    assert "missing" not in result.stderr
    print(f"status of 1000 lockers x 16 cells from SQLite: {elapsed:.2f} s")
    assert elapsed < 10


def test_live_status_says_when_declared_cells_did_not_arrive(
    tmp_path: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    config = write_config(tmp_path, mqtt_broker)
    lk = locker_credentials.locker_id
    with mqtt_broker.client(locker_credentials.username, locker_credentials.password) as c:
        c.publish(TOPICS.status(lk), json.dumps({
            "online": True, "version": "2.0.1", "boot_id": "boot-7",
            "started_at": 1_700_000_000_000, "cells": [1, 2, 3]}), retain=True)
        for cell in (1, 2):
            c.publish(TOPICS.cell(lk, cell), json.dumps({
                "cell": cell, "state": "free", "door": "closed", "size": "S",
                "since": 1_700_000_000_000}), retain=True)
        try:
            result = console(config, "status", "--live", "--locker", lk)
            data = json.loads(console(config, "status", "--live", "--json",
                                      "--locker", lk).stdout)
        finally:
            for topic in (TOPICS.status(lk), TOPICS.cell(lk, 1), TOPICS.cell(lk, 2)):
                c.publish(topic, b"", retain=True)
    assert result.returncode == 3, result.stderr
    assert f"{lk}: 2 of 3 declared cells received (missing 3)" in result.stderr
    assert "may be incomplete" in result.stderr
    assert data["source"] == "broker" and data["complete"] is False


def test_a_command_to_a_locker_never_seen_is_refused_at_once_unless_forced(
    tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    mqtt_broker.ensure_running()
    config = write_config(tmp_path, mqtt_broker, signing=True)
    started = time.monotonic()
    result = console(config, "open", "--locker", "L9", "--cell", "1", "--reason", "t",
                     "--timeout", "5")
    assert result.returncode == 2, result.stderr
    assert "unknown locker 'L9'" in result.stderr and "--force" in result.stderr
    assert time.monotonic() - started < 4
    forced = console(config, "open", "--locker", "L9", "--cell", "1", "--reason", "t",
                     "--timeout", "0.5", "--force")
    assert forced.returncode == 3, forced.stderr  # sent; nobody answers: outcome unknown


@pytest.mark.parametrize("source", ["database", "retained"])
def test_a_command_to_a_known_locker_is_sent(
    tmp_path: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, source: str
) -> None:
    """A locker the database knows, or one with a retained status, is not 'unknown'."""
    config = write_config(tmp_path, mqtt_broker, signing=True)
    lk = locker_credentials.locker_id
    with mqtt_broker.client(locker_credentials.username, locker_credentials.password) as c:
        if source == "database":
            _store(f"sqlite:///{tmp_path}/console.db", {lk: ([1], [1])})
        else:
            c.publish(TOPICS.status(lk), json.dumps({"online": False}), retain=True)
        try:
            result = console(config, "open", "--locker", lk, "--cell", "1", "--reason", "t",
                             "--timeout", "0.5")
        finally:
            c.publish(TOPICS.status(lk), b"", retain=True)
    assert result.returncode == 3, result.stderr  # sent and not answered (no lockerd here)
    assert "unknown locker" not in result.stderr


def test_a_profile_is_published_as_its_own_version(
    tmp_path: Path, mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    """config/profile.example.toml as it is (TOML, read as lockerd reads its profile file), with
    `version = 2`: the locker is told, and the operator reads, version 2; one number."""
    from contract.signing import config_hash

    config = write_config(tmp_path, mqtt_broker, signing=True)
    lk = locker_credentials.locker_id
    profile = tmp_path / "profile.toml"
    example = (Path(__file__).resolve().parent.parent / "config" / "profile.example.toml")
    profile.write_text(example.read_text().replace("version = 1 ", "version = 2 ", 1))
    signed: list[dict] = []
    with mqtt_broker.client(locker_credentials.username, locker_credentials.password) as c:
        c.publish(TOPICS.status(lk), json.dumps({"online": True, "version": "t", "boot_id": "b",
                                                 "started_at": 1}), retain=True)

        def on_config(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
            if msg.payload:
                cfg = json.loads(msg.payload)
                signed.append(cfg)
                client.publish(TOPICS.config_applied(lk), json.dumps(
                    {"version": cfg["version"], "hash": config_hash(cfg["body"])}), qos=1,
                    retain=True)

        c.paho.on_message = on_config
        c.subscribe(TOPICS.config(lk))
        try:
            result = console(config, "publish-config", "--locker", lk, str(profile),
                             "--timeout", "5")
            older = console(config, "publish-config", "--locker", lk, str(example),
                            "--timeout", "5")
        finally:
            for topic in (TOPICS.status(lk), TOPICS.config(lk), TOPICS.config_applied(lk)):
                c.publish(topic, b"", retain=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"applied: {lk} runs configuration version 2"
    assert signed[0]["version"] == 2 and signed[0]["body"]["version"] == 2
    assert signed[0]["body"]["name"] == "mall-standard"
    assert older.returncode == 1, older.stdout + older.stderr
    assert "raise `version`" in older.stdout and len(signed) == 1
