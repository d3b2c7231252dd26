"""The whole fleet path: lockerd <-> real Mosquitto <-> locker-console (CLI and ingest processes).

- a remote open through the operator CLI, with its exit codes;
- the broker stopped for a while during activity: the locker keeps working, and afterwards every
  event reaches the console's database exactly once;
- one locker's credentials can neither command nor impersonate another locker.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from contract.signing import (
    generate_private_key,
    make_command,
    make_config,
    private_key_to_pem,
    public_key_b64,
)
from contract.topics import Topics

CONSOLE = str(Path(sys.executable).with_name("locker-console"))
TOPICS = Topics()
EXAMPLE_PROFILE = Path(__file__).parent.parent / "config" / "profile.example.toml"
CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 5)]


@pytest.fixture
def console_setup(mqtt_broker, tmp_path):
    """A console key, its configuration file and database."""
    key = generate_private_key()
    key_file = tmp_path / "console-1.pem"
    key_file.write_bytes(private_key_to_pem(key))
    db = tmp_path / "console.db"
    user, password = mqtt_broker.console_credentials
    config = tmp_path / "console.toml"
    config.write_text(
        f'[mqtt]\nhost = "{mqtt_broker.host}"\nport = {mqtt_broker.console_port}\n'
        f'username = "{user}"\npassword = "{password}"\n'
        f'[signing]\nkey_file = "{key_file}"\nkey_id = "console-1"\n'
        f'[database]\nurl = "sqlite:///{db}"\n'
    )
    return key, config, db


def start_locker(mqtt_broker, board_sim, lockerd, key, locker_id: str | None = None):
    locker_id = locker_id or f"L-{uuid.uuid4().hex[:8]}"
    creds = mqtt_broker.add_locker(locker_id)
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    extra = (
        f'[mqtt]\nhost = "{mqtt_broker.host}"\nport = {mqtt_broker.port}\n'
        f'username = "{creds.username}"\npassword = "{creds.password}"\n'
        f'[trust]\nkeys = {{ "console-1" = "{public_key_b64(key)}" }}\n'
    )
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, locker_id=locker_id, extra=extra)
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected")
    return locker_id, creds, sim, d


def console(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE, "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_operator_cli_remote_open(mqtt_broker, board_sim, lockerd, console_setup) -> None:
    key, config, _ = console_setup
    locker, _, sim, d = start_locker(mqtt_broker, board_sim, lockerd, key)

    done = console(config, "open", "--locker", locker, "--cell", "3", "--reason", "client call")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done" in done.stdout
    assert sim.unlock_count(0, 3) == 1 and sim.door_open(0, 3)

    busy = console(config, "open", "--locker", locker, "--cell", "3", "--reason", "again",
                   "--json")
    assert busy.returncode == 1  # the door is still open: refused, with the reason
    assert json.loads(busy.stdout)["status"] == "rejected"
    sim.close_door(0, 3)

    unknown = console(config, "open", "--locker", locker, "--cell", "99", "--reason", "typo")
    assert unknown.returncode == 1 and "unknown_cell" in unknown.stdout + unknown.stderr

    status = console(config, "status", "--locker", locker, "--json")
    assert status.returncode == 0, status.stderr
    assert locker in status.stdout

    d.terminate()
    offline = console(config, "open", "--locker", locker, "--cell", "1", "--reason", "x",
                      "--timeout", "1")
    assert offline.returncode == 3
    assert "unknown" in (offline.stdout + offline.stderr).lower()
    assert sim.unlock_count(0, 1) == 0


def db_seqs(db: Path, locker: str) -> list[int]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT seq FROM events WHERE locker = ? ORDER BY seq", (locker,)
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [r[0] for r in rows]


def wait_until(predicate, timeout: float, what: str, detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail()}"
        time.sleep(0.05)


def deposit_and_pickup(d, sim, cell: int) -> None:
    assert d.ctl("deposit", cell)["ok"]
    d.wait_cell(cell, door="open")
    sim.close_door(0, cell)
    d.wait_cell(cell, state="occupied", door="closed")
    assert d.ctl("pickup", cell)["ok"]
    d.wait_cell(cell, door="open")
    sim.close_door(0, cell)
    d.wait_cell(cell, state="free", door="closed")


def test_broker_outage_loses_and_doubles_nothing(
    mqtt_broker, board_sim, lockerd, console_setup
) -> None:
    key, config, db = console_setup
    locker, _, sim, d = start_locker(mqtt_broker, board_sim, lockerd, key)
    ingest = subprocess.Popen(
        [CONSOLE, "--config", str(config), "ingest", "--client-id", f"ingest-{locker}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert ingest.stderr is not None
        for line in ingest.stderr:  # its first session misses what was published before it
            if b"subscribed" in line:
                break
        threading.Thread(target=ingest.stderr.read, daemon=True).start()  # keep the pipe drained
        deposit_and_pickup(d, sim, 1)
        wait_until(lambda: len(db_seqs(db, locker)) >= 8, 20, "first events in the database")
        assert ingest.poll() is None

        mqtt_broker.stop()
        try:
            for cell in (2, 3, 4):  # the locker goes on serving people while offline
                deposit_and_pickup(d, sim, cell)
            assert d.ctl("cells")["events"]["unacknowledged"] >= 3 * 8
        finally:
            mqtt_broker.start()

        def settled() -> bool:
            events = d.ctl("cells")["events"]
            return events["unacknowledged"] == 0 and db_seqs(db, locker)[-1:] == [
                events["last_seq"]
            ]

        wait_until(settled, 40, "every event stored and acknowledged after the outage",
                   lambda: f"locker {d.ctl('cells')['events']}, database {db_seqs(db, locker)}")
        last_seq = d.ctl("cells")["events"]["last_seq"]
        assert db_seqs(db, locker) == list(range(1, last_seq + 1))  # each exactly once
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(15)


def test_one_locker_cannot_command_or_impersonate_another(
    mqtt_broker, board_sim, lockerd, console_setup
) -> None:
    key, _, _ = console_setup
    _, a_creds, _, _ = start_locker(mqtt_broker, board_sim, lockerd, key)
    b, _, b_sim, b_d = start_locker(mqtt_broker, board_sim, lockerd, key)
    watcher = mqtt_broker.console_client()
    watcher.subscribe(f"lockers/{b}/#")
    attacker = mqtt_broker.client(a_creds.username, a_creds.password)
    # A valid console-signed command for B (say, captured earlier), pushed by locker A's login:
    cmd = make_command(b, "open", {"cell": 1}, operator="x", reason="x", key_id="console-1",
                       private_key=key, now_ms=int(time.time() * 1000))
    mark = b_d.mark
    attacker.publish(TOPICS.cmd(b), json.dumps(cmd))
    attacker.publish(TOPICS.events(b), json.dumps(
        {"seq": 999, "id": str(uuid.uuid4()), "at": 1, "type": "pickup_completed", "data": {}}))
    attacker.publish(TOPICS.status(b), json.dumps({"online": False}), retain=True)
    # Positive control: a message the watcher must see proves the subscription works.
    watcher.publish(TOPICS.events_ack(b), json.dumps({"up_to_seq": 0}))
    seen = watcher.expect(TOPICS.events_ack(b))
    assert seen is not None
    watcher.assert_silent(0.5)  # none of A's publications reached B's topics
    time.sleep(0.3)
    assert b_sim.total_unlocks() == 0
    assert not [r for r in b_d.lines[mark:] if r.get("type") == "command_rejected"]
    attacker.close()
    watcher.close()


def test_signed_configuration_applied_never_downgraded(
    mqtt_broker, board_sim, lockerd, console_setup, tmp_path
) -> None:
    key, config, _ = console_setup
    locker, _, _, d = start_locker(mqtt_broker, board_sim, lockerd, key)
    body = tmp_path / "profile.json"
    profile = tomllib.loads(EXAMPLE_PROFILE.read_text())
    body.write_text(json.dumps({**profile, "name": "standard"}))

    first = console(config, "publish-config", "--locker", locker, str(body), "--version", "5")
    assert first.returncode == 0, first.stdout + first.stderr
    d.wait_event("config_applied", version=5)

    body.write_text(json.dumps({**profile, "name": "older"}))
    older = console(config, "publish-config", "--locker", locker, str(body), "--version", "4")
    assert older.returncode == 1, older.stdout + older.stderr
    assert "stale_version" in older.stdout + older.stderr  # refused before publishing

    # Signed and published anyway (another console, a replay): the locker refuses it itself.
    raw = mqtt_broker.console_client()
    stale = make_config(locker, 4, {"name": "older"}, key_id="console-1", private_key=key,
                        now_ms=int(time.time() * 1000))
    raw.publish(TOPICS.config(locker), json.dumps(stale), retain=True)
    d.wait_event("config_rejected", reason="stale_version", version=4)
    # A newer version whose body is no storage profile for this locker changes nothing.
    broken = make_config(locker, 6, {**profile, "cell_groups": []}, key_id="console-1",
                         private_key=key, now_ms=int(time.time() * 1000))
    raw.publish(TOPICS.config(locker), json.dumps(broken), retain=True)
    refused = d.wait_event("config_rejected", reason="bad_profile", version=6)
    assert "cell_groups" in refused["detail"]
    raw.close()

    # The applied configuration is durable: after a restart the locker still runs version 5
    # and confirms it again (retained config/applied), the older one never replaces it.
    d.terminate()
    mark = d.mark
    d.start()
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected", since=mark)
    watcher = mqtt_broker.console_client()
    watcher.subscribe(TOPICS.config_applied(locker))
    applied = json.loads(watcher.expect(TOPICS.config_applied(locker)).payload)
    assert applied["version"] == 5
    watcher.close()
