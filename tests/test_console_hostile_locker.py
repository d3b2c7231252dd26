"""A hostile locker against the console's ingest (issue 9, items 1, 6, 7, 12), on the real parts.

Locker A logs in with its own valid broker account and publishes what the contract's numbers,
strings and topics never meant to carry; locker B behaves. Against a real Mosquitto and a real
ingest on SQLite and PostgreSQL: B's messages must be stored, the ingest must keep running (and
start again after a restart, when the persistent session hands the bad messages over again), and
A's messages must end in the quarantine, acknowledged, with an alarm.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import open_database
from fleet_console.db.models import Alarm, Cell, Locker
from fleet_console.ingest import IngestSettings
from tests.fixtures.console_ingest import (
    IngestRunner,
    SimLocker,
    db_query,
    eventually,
    presence_barrier,
    seqs,
)

TOPICS = Topics()
CONSOLE = str(Path(sys.executable).with_name("locker-console"))
SINCE = 1_700_000_000_000


def quarantined(url: str, locker: str) -> list[tuple[str, str, int]]:
    """(topic, reason, excerpt length) of each quarantined message of `locker`."""
    rows = db_query(url, lambda c: c.execute(text(
        "SELECT topic, reason, excerpt FROM quarantine WHERE locker = :lk ORDER BY id"
    ), {"lk": locker}).all())
    return [(r.topic, r.reason, len(r.excerpt or b"")) for r in rows]


def alarm_kinds(url: str, locker: str) -> list[str]:
    return db_query(url, lambda c: list(c.scalars(
        select(Alarm.kind).where(Alarm.locker == locker).order_by(Alarm.id))))


def event_body(seq: Any, at: Any = None, **data: Any) -> bytes:
    at = int(time.time() * 1000) if at is None else at
    body = {"seq": seq, "id": str(uuid.uuid4()), "at": at, "type": "door_opened", "data": data}
    return json.dumps(body).encode()


def cell_body(cell: Any) -> bytes:
    return json.dumps({"cell": cell, "state": "free", "door": "closed", "size": "M",
                       "since": SINCE}).encode()


def status_body(**fields: Any) -> bytes:
    body = {"online": True, "version": "1.0", "boot_id": "b-1", "started_at": SINCE} | fields
    return json.dumps(body).encode()


async def behave(lk: SimLocker, first: int, last: int) -> None:
    """A good locker: status, two cells, events first..last, and the ack for them."""
    await asyncio.to_thread(lk.status)
    await asyncio.to_thread(lk.cell, 1)
    for seq in range(first, last + 1):
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, last, 10.0)


def console_alarms(tmp_path: Path, url: str, locker: str, *args: str) -> Any:
    """What an operator sees: `locker-console alarms --locker ID --json [--quarantine]`."""
    config = tmp_path / "console.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    proc = subprocess.run(
        [CONSOLE, "--config", str(config), "alarms", "--locker", locker, "--json", *args],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_hostile_numbers_are_quarantined_and_never_stop_the_fleet(
    runner: IngestRunner, make_locker: Any, db_url: str, tmp_path: Path
) -> None:
    a: SimLocker = make_locker()
    b: SimLocker = make_locker()
    huge_cell = 18446744073709551616
    bad: list[tuple[str, bytes, bool]] = [
        (TOPICS.events(a.id), event_body(2**63), False),
        (TOPICS.events(a.id), event_body(2, at=10**30), False),
        (f"lockers/{a.id}/cells/{huge_cell}", cell_body(huge_cell), True),
        (f"lockers/{a.id}/cells/{2**40}", cell_body(2**40), True),
        (TOPICS.status(a.id), status_body(started_at=2**64), True),
        (TOPICS.events(a.id), event_body(3, n=int("9" * 4000)).replace(b"9" * 4000, b"9" * 5000),
         False),
        (TOPICS.events(a.id), event_body(4).replace(b'"data": {}', b'"data": {"x": 1e400}'),
         False),
        (TOPICS.events(a.id), event_body(5).replace(b'"data": {}', b'"data": ' + b"[" * 5000
                                                    + b"]" * 5000), False),
        # Valid for the contract, but PostgreSQL's text columns cannot hold a NUL.
        (TOPICS.cmd_result(a.id), json.dumps({"cmd_id": str(uuid.uuid4()), "status": "failed",
                                              "reason": "lock\u0000fault"}).encode(), False),
    ]
    for topic, payload, retain in bad:
        await asyncio.to_thread(a.client.publish, topic, payload, 1, retain)
    try:
        await behave(b, 1, 20)
        ingest = runner.current
        assert ingest is not None and ingest.connected
        assert seqs(db_url, b.id) == list(range(1, 21))
        expected = len(bad) - (1 if db_url.startswith("sqlite") else 0)  # SQLite holds a NUL
        # The retained ones come on the ingest's presence connection, not behind B's events.
        await eventually(lambda: len(quarantined(db_url, a.id)) >= expected, "the quarantine")
        stored_cells = db_query(db_url, lambda c: list(c.scalars(
            select(Cell.cell).where(Cell.locker == a.id))))
        assert stored_cells == []
        started = db_query(db_url, lambda c: c.scalar(
            select(Locker.started_at).where(Locker.id == a.id)))
        assert started is None
        q = quarantined(db_url, a.id)
        assert len(q) == expected, q
        assert all(0 < n <= 512 for _, _, n in q), q
        assert "quarantined" in alarm_kinds(db_url, a.id)
        shown = await asyncio.to_thread(console_alarms, tmp_path, db_url, a.id, "--quarantine")
        assert len(shown["quarantine"]) == expected
        assert {r["reason"] for r in shown["quarantine"]} >= {"malformed", "unexpected_topic"}
        shown = await asyncio.to_thread(console_alarms, tmp_path, db_url, a.id)
        assert {r["kind"] for r in shown["alarms"]} >= {"quarantined"}

        # The ingest stops; A's bad message waits in the persistent session, B goes on.
        await runner.stop()
        await asyncio.to_thread(a.client.publish, TOPICS.events(a.id), event_body(2**63), 1)
        for seq in range(21, 31):
            await asyncio.to_thread(b.event, seq)
        await runner.start()
        await asyncio.to_thread(b.wait_ack, 30, 10.0)
        assert runner.current is not None and runner.current.connected
        assert seqs(db_url, b.id) == list(range(1, 31))
        # The new bad event, and A's retained bad messages again: a new subscription gets them.
        # (Retained messages come after the subscription, possibly after B's queued events.)
        retained = sum(1 for _, _, r in bad if r)
        deadline = time.monotonic() + 10.0
        while len(again := quarantined(db_url, a.id)[len(q):]) < 1 + retained:
            assert time.monotonic() < deadline, again
            await asyncio.sleep(0.05)
        assert len(again) == 1 + retained, again
        assert (TOPICS.events(a.id), "malformed", len(event_body(2**63))) in again
    finally:
        for topic, _, retain in bad:
            if retain:
                await asyncio.to_thread(a.client.publish, topic, b"", 1, True)
        await asyncio.to_thread(b.clear_retained, (1,))


async def test_undeclared_cells_and_a_huge_status_are_not_stored(
    console_mqtt: ConsoleMqtt, make_locker: Any, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the same rules on PostgreSQL; 20,000 retained messages once suffice")
    # The broker refuses packets over 512 KiB; the ingest holds lockers' messages to less.
    runner = IngestRunner(console_mqtt, db_url, gap_timeout_s=0.6, max_payload_bytes=16_384)
    await runner.start()
    a: SimLocker = make_locker()
    fake = range(3, 20_003)
    await asyncio.to_thread(a.client.publish, TOPICS.status(a.id), status_body(cells=[1, 2]), 1,
                            True)
    await asyncio.to_thread(a.cell, 1)

    def flood_cells(payload: bool) -> None:
        last = None
        for n in fake:
            last = a.client.paho.publish(f"lockers/{a.id}/cells/{n}",
                                         cell_body(n) if payload else b"", qos=1, retain=True)
        assert last is not None
        last.wait_for_publish(60)

    try:
        await asyncio.to_thread(flood_cells, True)
        await asyncio.to_thread(a.event, 1)
        await asyncio.to_thread(a.wait_ack, 1, 60.0)
        await presence_barrier(a, db_url, 2, timeout=60.0)  # the flood is behind us
        rows = db_query(db_url, lambda c: c.scalar(
            select(func.count()).select_from(Cell).where(Cell.locker == a.id)))
        assert rows == 2  # cells 1 and 2 only: 20,000 fake cells made no row
        kept = quarantined(db_url, a.id)
        assert 0 < len(kept) <= 200, len(kept)  # 100 per reason per minute
        assert {r for _, r, _ in kept} <= {"undeclared_cell", "unexpected_topic"}, kept[:3]
        assert "quarantined" in alarm_kinds(db_url, a.id)

        # A 60 KB retained status (the broker passes it): quarantined with an excerpt.
        huge = status_body(version="v" * 60_000)
        await asyncio.to_thread(a.client.publish, TOPICS.status(a.id), huge, 1, True)
        await asyncio.to_thread(a.event, 2)
        await asyncio.to_thread(a.wait_ack, 2)
        await presence_barrier(a, db_url, 2)
        version = db_query(db_url, lambda c: c.scalar(
            select(Locker.version).where(Locker.id == a.id)))
        assert version == "1.0"
        assert any(r == "too_large" and n == 512 for _, r, n in quarantined(db_url, a.id))
    finally:
        await asyncio.to_thread(flood_cells, False)
        await asyncio.to_thread(a.clear_retained, (1, 2))
        await runner.stop()
        await runner.forget_session()


async def test_a_flooding_locker_raises_an_alarm(
    console_mqtt: ConsoleMqtt, make_locker: Any, db_url: str
) -> None:
    r = IngestRunner(console_mqtt, db_url)
    r.settings = IngestSettings(client_id=r.settings.client_id, flood_rate_per_s=50,
                                flood_window_s=1.0)
    await r.start()
    try:
        a: SimLocker = make_locker()
        b: SimLocker = make_locker()
        await asyncio.to_thread(b.event, 1)

        def flood() -> None:
            last = None
            for seq in range(1, 401):
                last = a.client.paho.publish(TOPICS.events(a.id), event_body(seq), qos=1)
            assert last is not None
            last.wait_for_publish(20)

        await asyncio.to_thread(flood)
        await asyncio.to_thread(a.wait_ack, 400, 20.0)
        await asyncio.to_thread(b.event, 2)
        await asyncio.to_thread(b.wait_ack, 2)
        assert alarm_kinds(db_url, a.id).count("flood") == 1
        assert "flood" not in alarm_kinds(db_url, b.id)
    finally:
        await r.stop()
        await r.forget_session()


def test_sqlite_database_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = open_database(f"sqlite:///{tmp_path}/console/console.db")
        with db.transaction() as s:
            s.add(Locker(id="L1"))
            s.flush()
            wal_files = sorted(p.name for p in (tmp_path / "console").iterdir())
            modes = {name: stat.S_IMODE((tmp_path / "console" / name).stat().st_mode)
                     for name in wal_files}
        db.dispose()
    finally:
        os.umask(old)
    assert wal_files == ["console.db", "console.db-shm", "console.db-wal"]
    assert modes == dict.fromkeys(wal_files, 0o600)
