"""The console's ingest against a real Mosquitto and real databases (SQLite and PostgreSQL).

Simulated lockers are plain MQTT clients logged in with their own broker accounts. Every
`events/ack` they receive is checked, at the moment it arrives, against the database from a
separate connection: an ack must never cover an event that is not committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import open_database
from fleet_console.db.models import Cell, CommandRow, Locker, QuarantineRow
from fleet_console.ingest import Ingest, IngestSettings
from tests.fixtures.console_ingest import (
    IngestRunner,
    SimLocker,
    alarms,
    db_query,
    eventually,
    presence_barrier,
    seqs,
)
from tests.fixtures.mqtt_broker import unique_id

TOPICS = Topics()


async def test_status_cells_and_events_land_and_acks_follow_commits(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lk: SimLocker = make_locker()
    await asyncio.to_thread(lk.status)
    await asyncio.to_thread(lk.cell, 1, "occupied", "closed")
    await asyncio.to_thread(lk.cell, 2, "free", "open")
    for seq in range(1, 21):
        await asyncio.to_thread(lk.event, seq, cell=seq % 3 + 1)
    await asyncio.to_thread(lk.wait_ack, 20)
    assert seqs(db_url, lk.id) == list(range(1, 21))
    lk.check_acks_were_committed()
    await presence_barrier(lk, db_url, 2, "free", "open")  # status and cells: their own connection
    locker = db_query(db_url, lambda c: c.execute(select(Locker).where(Locker.id == lk.id)).one())
    assert (locker.online, locker.version, locker.boot_id, locker.acked_seq) == (
        True, "1.2.3", "b-1", 20)
    assert locker.boards == [{"name": "bus0", "online": True, "last_ok_at": None, "failures": 0}]
    cells = db_query(db_url, lambda c: c.execute(
        select(Cell.cell, Cell.state, Cell.door).where(Cell.locker == lk.id).order_by(Cell.cell)
    ).all())
    assert [tuple(r) for r in cells] == [(1, "occupied", "closed"), (2, "free", "open")]
    await asyncio.to_thread(lk.status, False)  # the last will
    await asyncio.to_thread(lk.event, 21)
    await asyncio.to_thread(lk.wait_ack, 21)
    await eventually(lambda: db_query(db_url, lambda c: c.scalar(
        select(Locker.online).where(Locker.id == lk.id))) is False, "the last will stored")
    await asyncio.to_thread(lk.clear_retained, (1, 2))


async def test_duplicates_are_stored_once_and_still_acknowledged(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lk: SimLocker = make_locker()
    for seq in (1, 2, 3):
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, 3)
    before = len(lk.acks)
    for seq in (2, 3, 3):
        await asyncio.to_thread(lk.event, seq)
    deadline = time.monotonic() + 5
    while len(lk.acks_since(before)) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert lk.acks_since(before) and set(lk.acks_since(before)) == {3}
    assert seqs(db_url, lk.id) == [1, 2, 3]
    assert alarms(db_url, lk.id) == []
    lk.check_acks_were_committed()


async def test_gap_alarm_acks_the_prefix_asks_again_and_moves_only_on_the_lockers_word(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lk: SimLocker = make_locker()
    for seq in (1, 2, 5):
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, 2)
    await asyncio.sleep(0.1)
    assert max(a for a, _ in lk.acks) == 2, "an ack must not cover the hole at 3..4"
    assert alarms(db_url, lk.id) == [("seq_gap", {"expected": 3, "got": 5})]
    assert seqs(db_url, lk.id) == [1, 2, 5]
    for seq in (3, 4):  # the locker sends the hole again from its outbox
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, 5)
    # a hole that is never filled: after gap_timeout_s the console asks for it again, and
    # moves past it only on the locker's word that its outbox no longer holds it
    for seq in (6, 8, 9):
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, 6)
    started = time.monotonic()
    assert await asyncio.to_thread(lk.wait_resend, 5.0) == (7, 7)
    assert time.monotonic() - started >= 0.3
    await asyncio.sleep(0.2)
    assert max(a for a, _ in lk.acks) == 6, "an ack must not cover 7 while the locker has it"
    await asyncio.to_thread(lk.gone, 7, 7)
    await asyncio.to_thread(lk.wait_ack, 9, 5.0)
    assert alarms(db_url, lk.id) == [
        ("seq_gap", {"expected": 3, "got": 5}),
        ("seq_gap", {"expected": 7, "got": 8}),
        ("seq_gap_permanent", {"missing_from": 7, "missing_to": 7}),
    ]
    await asyncio.to_thread(lk.event, 7)  # a late straggler is still stored
    await asyncio.to_thread(lk.event, 10)
    await asyncio.to_thread(lk.wait_ack, 10)
    assert seqs(db_url, lk.id) == list(range(1, 11))
    lk.check_acks_were_committed(given_up=(7,))


async def test_first_event_sets_the_baseline(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lk: SimLocker = make_locker()
    for seq in (41, 42):
        await asyncio.to_thread(lk.event, seq)
    await asyncio.to_thread(lk.wait_ack, 42)
    assert alarms(db_url, lk.id) == []
    assert seqs(db_url, lk.id) == [41, 42]


async def test_malformed_payloads_are_skipped_and_ingest_keeps_going(
    runner: IngestRunner, make_locker: Any, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    lk: SimLocker = make_locker()
    ingest = runner.current
    assert ingest is not None
    bad = [
        (TOPICS.events(lk.id), b"not json"),
        (TOPICS.events(lk.id), b'{"seq": "1", "id": "x", "at": 1, "type": "t"}'),
        (TOPICS.events(lk.id), b"\xff\xfe"),
        (TOPICS.status(lk.id), b'{"online": true}'),
        (TOPICS.cell(lk.id, 3), b'{"cell": 4, "state": "free", "door": "closed", "size": "M", '
                                b'"since": 1}'),
        (TOPICS.cmd_result(lk.id), b'{"cmd_id": "nope", "status": "done"}'),
        (TOPICS.config_applied(lk.id), b"[]"),
    ]
    with caplog.at_level("WARNING", logger="fleet_console.ingest"):
        for topic, payload in bad:
            retain = "/status" in topic or "/cells/" in topic
            await asyncio.to_thread(lk.client.publish, topic, payload, 1, retain)
        await asyncio.to_thread(lk.event, 1)
        await asyncio.to_thread(lk.wait_ack, 1)

        def skipped() -> list[str]:
            # Other tests' lockers share the session broker: only this locker's payloads.
            return [m for m in (r.getMessage() for r in caplog.records)
                    if "malformed" in m and f"/{lk.id}/" in m]

        # Status and cells come on the ingest's presence connection, beside the events.
        async with asyncio.timeout(10):
            while len(skipped()) < len(bad):
                await asyncio.sleep(0.05)
    assert ingest.connected
    assert len(skipped()) == len(bad), skipped()
    assert ingest.stats.malformed >= len(bad)
    assert any(TOPICS.cell(lk.id, 3) in m and "cell 4" in m for m in skipped()), skipped()
    assert any(TOPICS.status(lk.id) in m and "version" in m for m in skipped()), skipped()
    assert seqs(db_url, lk.id) == [1]
    await asyncio.to_thread(lk.clear_retained, (3,))


async def test_command_results_and_applied_config_are_recorded(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lk: SimLocker = make_locker()
    cmd_id = str(uuid.uuid4())
    for body in ({"cmd_id": cmd_id, "status": "accepted"},
                 {"cmd_id": cmd_id, "status": "failed", "reason": "lock_fault",
                  "data": {"cell": 2}}):
        await asyncio.to_thread(lk.client.publish, TOPICS.cmd_result(lk.id), json.dumps(body))
    applied = {"version": 4, "hash": "ab" * 32}
    await asyncio.to_thread(
        lk.client.publish, TOPICS.config_applied(lk.id), json.dumps(applied), 1, True)
    await asyncio.to_thread(lk.event, 1)
    await asyncio.to_thread(lk.wait_ack, 1)
    row = db_query(db_url, lambda c: c.execute(
        select(CommandRow).where(CommandRow.cmd_id == cmd_id)).one())
    assert (row.locker, row.status, row.result_reason, row.result_data) == (
        lk.id, "failed", "lock_fault", {"cell": 2})
    # config/applied is presence: it comes on the ingest's other connection, beside the events
    # (not before them), so it is waited for on its own.
    async with asyncio.timeout(10):
        while True:
            cfg = db_query(db_url, lambda c: c.execute(
                select(Locker.config_version, Locker.config_hash)
                .where(Locker.id == lk.id)).one())
            if tuple(cfg) == (4, "ab" * 32):
                break
            await asyncio.sleep(0.05)
    await asyncio.to_thread(lk.client.publish, TOPICS.config_applied(lk.id), b"", 1, True)


async def test_restart_mid_stream_loses_nothing_and_doubles_nothing(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    lockers: list[SimLocker] = [make_locker() for _ in range(3)]
    total = 300
    stop_publishing = threading.Event()

    def publish_all(lk: SimLocker) -> None:
        for seq in range(1, total + 1):
            if stop_publishing.is_set():
                return
            lk.event(seq)
            time.sleep(0.004)

    threads = [threading.Thread(target=publish_all, args=(lk,)) for lk in lockers]
    for t in threads:
        t.start()
    try:
        await asyncio.to_thread(lockers[0].wait_ack, 30)
        await runner.stop()  # mid-stream: the lockers keep publishing
        await asyncio.sleep(0.3)
        assert all(t.is_alive() for t in threads), "publishing should still be going on"
        await runner.start()
        for lk in lockers:
            await asyncio.to_thread(lk.wait_ack, total, 20.0)
    finally:
        stop_publishing.set()
        for t in threads:
            t.join()
    for lk in lockers:
        assert seqs(db_url, lk.id) == list(range(1, total + 1))
        assert alarms(db_url, lk.id) == []
        lk.check_acks_were_committed()


async def test_a_refused_login_is_an_error_with_the_hint(
    console_mqtt: ConsoleMqtt, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password will not pass by itself: the ingest says so at error, with what to check,
    and keeps trying (an operator may fix the broker's accounts while it runs)."""
    wrong = ConsoleMqtt(host=console_mqtt.host, port=console_mqtt.port,
                        username=console_mqtt.username, password="not-the-password")
    ingest = Ingest(wrong, open_database("sqlite://"), IngestSettings(
        client_id=unique_id("ingest"), reconnect_min_s=0.05, reconnect_max_s=0.1))
    with caplog.at_level(logging.WARNING, logger="fleet_console.ingest"):
        with pytest.raises(TimeoutError):
            await ingest.start(timeout=1.0)
        await ingest.stop()
    refused = [r for r in caplog.records if "broker connection lost" in r.getMessage()]
    assert len(refused) >= 2, caplog.text  # it went on trying
    assert all(r.levelno == logging.ERROR for r in refused), caplog.text
    assert "username and password" in refused[0].getMessage()


async def test_acks_are_paced_one_per_locker_per_interval(
    console_mqtt: ConsoleMqtt, make_locker: Any, db_url: str
) -> None:
    """Events arriving in many small batches get one ack per locker per `ack_interval_s`, each
    after the commit of what it covers, and none waits much longer than the interval."""
    r = IngestRunner(console_mqtt, db_url, batch_window_s=0.0, ack_interval_s=0.4)
    await r.start()
    try:
        lk: SimLocker = make_locker()
        await asyncio.to_thread(lk.event, 1)
        await asyncio.to_thread(lk.wait_ack, 1)
        started = time.monotonic()
        for seq in range(2, 11):  # each its own batch (no batch window)
            await asyncio.to_thread(lk.event, seq)
        await asyncio.to_thread(lk.wait_ack, 10)
        assert time.monotonic() - started < 0.4 + 1.0
        assert len(lk.acks) <= 3, lk.acks  # without pacing: about one per batch
        assert seqs(db_url, lk.id) == list(range(1, 11))
        lk.check_acks_were_committed()
    finally:
        await r.stop()
        await r.forget_session()


async def test_an_event_the_database_refuses_is_quarantined_and_acknowledged_past(
    runner: IngestRunner, make_locker: Any, db_url: str
) -> None:
    """An event the contract accepts but the database cannot hold (PostgreSQL refuses a NUL in
    a text column) is kept in quarantine and counts as stored: the locker's outbox must not
    stall behind it for ever, re-sending it to a console that refuses it each time."""
    lk: SimLocker = make_locker()
    await asyncio.to_thread(lk.event, 1)
    await asyncio.to_thread(lk.event, 2, type="door\u0000opened")
    await asyncio.to_thread(lk.event, 3)
    await asyncio.to_thread(lk.wait_ack, 3, 10.0)
    stored = seqs(db_url, lk.id)
    quarantined = db_query(db_url, lambda c: c.execute(
        select(QuarantineRow.reason).where(QuarantineRow.locker == lk.id)).scalars().all())
    if db_url.startswith("sqlite"):
        assert (stored, quarantined) == ([1, 2, 3], [])  # SQLite holds a NUL
    else:
        assert (stored, quarantined) == ([1, 3], ["store_failed"])
    await asyncio.to_thread(lk.event, 4)
    await asyncio.to_thread(lk.wait_ack, 4)
    lk.check_acks_were_committed(given_up=(2,) if not db_url.startswith("sqlite") else ())
