"""Issue 9, item 6: command results and relayed notifications reach the console even when the
broker drops them on the way to the ingest.

The attack: a flood fills Mosquitto's queue for the ingest (`max_queued_messages`), so messages
the broker already acknowledged to a locker (PUBACK) never reach the ingest: 39 of 40 command
results were lost. Here the queue is made tiny in a dedicated Mosquitto (the configuration the
real `broker/` code writes, with `max_queued_messages = 2`) and the ingest is away, so that
everything a locker publishes meanwhile overflows it. All parts are real: Mosquitto, a
LockerDaemon (kiosk over HTTP, boards over a pty), `locker-console ingest` as a process on
SQLite, an HTTP SMS gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.signing import generate_private_key, make_command, public_key_b64
from contract.topics import Topics
from tests.fixtures.mqtt_broker import MqttBroker
from tests.fixtures.storage_locker import SMS_BODY, profile_toml
from tests.test_fleet_console_e2e import CONSOLE

KEY = generate_private_key()
TOPICS = Topics()
COMMANDS = 10


@pytest.fixture
def tiny_queue_broker(tmp_path: Path) -> Iterator[MqttBroker]:
    """A Mosquitto of its own whose queue for an offline client holds two messages."""
    broker = MqttBroker(tmp_path / "tiny-broker")
    fleet = broker.fleet
    fleet.settings = dataclasses.replace(fleet.settings, max_queued_messages=2)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Ingest:
    """`locker-console ingest` on SQLite, started and stopped by the test."""

    def __init__(self, config: Path, client_id: str) -> None:
        self.args = [CONSOLE, "--config", str(config), "ingest", "--client-id", client_id]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if b"subscribed" in line:
                break
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


def _rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


async def _until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_results_and_notifications_dropped_by_the_broker_arrive_once_the_ingest_is_back(
    storage_locker, tiny_queue_broker, tmp_path
) -> None:
    broker = tiny_queue_broker
    locker_id = f"D-{uuid.uuid4().hex[:8]}"
    creds = broker.add_locker(locker_id)
    db = tmp_path / "console.db"
    config = tmp_path / "console.toml"
    user, password = broker.console_credentials
    ingest = None
    rig = await storage_locker(
        profile_toml(mode="postpaid", auth="sms"), locker_id=locker_id,
        mqtt={"host": broker.host, "port": broker.port, "username": creds.username,
              "password": creds.password, "resend_after_s": 1},
        trust={"console-1": public_key_b64(KEY)},
        notifier={"sms": "mqtt"},
    )
    config.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.console_port}\n'
        f'username = "{user}"\npassword = "{password}"\n'
        f'[database]\nurl = "sqlite:///{db}"\n'
        f'[notifier]\nsms = "http"\n[notifier.http]\nurl = "{rig.sms.url}/send"\n'
        f"body_template = '{SMS_BODY}'\n"
    )
    ingest = Ingest(config, f"ingest-{locker_id}")
    watcher = broker.console_client()
    try:
        await rig.wait_log("mqtt_connected")
        await asyncio.to_thread(ingest.start)  # its persistent session subscribes ...
        await asyncio.to_thread(ingest.stop)  # ... and it goes away: the broker queues for it
        watcher.subscribe(TOPICS.cmd_result(locker_id))
        watcher.subscribe(TOPICS.notify(locker_id))

        cmd_ids = []
        for i in range(COMMANDS):
            cmd = make_command(locker_id, "block" if i % 2 == 0 else "unblock", {"cell": 1},
                               operator="alice", reason="test", key_id="console-1",
                               private_key=KEY, now_ms=rig.daemon.clock())
            cmd_ids.append(cmd["cmd_id"])
            watcher.publish(TOPICS.cmd(locker_id), json.dumps(cmd))
            done = []
            while not done:  # the locker answered, and the broker took the answer
                msg = await asyncio.to_thread(watcher.expect, TOPICS.cmd_result(locker_id))
                body = json.loads(msg.payload)
                done = [body] if body["cmd_id"] == cmd["cmd_id"] and \
                    body["status"] in ("done", "rejected") else []
        rental = (await rig.http.post("/api/v1/rentals", json={"size": "S"})).json()
        sent = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/phone",
                                   json={"phone": "+79001234567"})
        assert sent.status_code == 200, sent.text
        await asyncio.to_thread(watcher.expect, TOPICS.notify(locker_id))  # on the broker

        await asyncio.to_thread(ingest.start)  # the ingest is back; its queue overflowed

        def stored() -> int:
            got = _rows(db, "SELECT cmd_id, status FROM commands")
            return sum(1 for cmd_id, status in got
                       if cmd_id in cmd_ids and status in ("done", "rejected"))

        try:
            await _until(lambda: stored() == COMMANDS, "every command result in the database")
            await _until(lambda: _rows(db, "SELECT status FROM notifications"),
                         "the relayed SMS recorded")
        except AssertionError:
            raise AssertionError(
                f"results stored: {stored()} of {COMMANDS}; notifications recorded: "
                f"{len(_rows(db, 'SELECT id FROM notifications'))} of 1"
            ) from None
        assert [r[0] for r in _rows(db, "SELECT status FROM notifications")] == ["sent"]
        # Acknowledged, so dropped from the locker's store; and the SMS went out once although
        # the locker offered it again every second until the ingest acknowledged it.
        await _until(lambda: not rig.daemon.fleet.undelivered(), "the locker's store emptied")
        await asyncio.sleep(1.5)
        assert len(rig.sms.requests) == 1
    finally:
        watcher.close()
        ingest.stop()


def test_one_batch_stores_the_results_of_several_commands(tmp_path) -> None:
    """Re-sent results arrive together: a batch with two commands' results must be stored
    (it failed with "expanding parameters can't be used with executemany" and was retried for
    ever), and a late `accepted` still never replaces a final status."""
    from fleet_console.db.engine import open_database
    from fleet_console.db.models import CommandRow
    from fleet_console.db.writes import record_command_results

    db = open_database(f"sqlite:///{tmp_path}/console.db")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    rows = [{"cmd_id": i, "locker": "L1", "status": "done", "result_reason": None,
             "result_data": {}, "updated_at": 1} for i in ids]
    with db.transaction() as s:
        record_command_results(s, rows)
    with db.transaction() as s:
        record_command_results(s, [{**rows[0], "status": "accepted"}, rows[1]])
    with db.transaction() as s:
        got = {r.cmd_id: r.status for r in s.query(CommandRow)}
    assert got == dict.fromkeys(ids, "done")
    db.dispose()
