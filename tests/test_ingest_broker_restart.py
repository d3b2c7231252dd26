"""Issue 16: a broker restart under load must not stall the ingest.

A private Mosquitto (the generated configuration, persistence on) is stopped and started again
on the same port while 400 lockers (in a process of their own) publish a burst of 20,000 events
and then a steady load; the real ingest runs on SQLite. The lockers behave like lockerd's
FleetLink: a persistent session, an outbox window beyond the console's ack watermark, everything
unacknowledged sent again after a reconnect and after acks stalled for `RESEND_AFTER_S`. Every
event must end up stored once and acknowledged.

What stalled the ingest in bench/fleet_scale.py (1,000-3,000 lockers) before issue 16's fixes
was one ack per locker awaiting the broker's PUBACK, queued behind the session's redelivered
backlog, while the ingest took one message per few event-loop turns (docs/architecture.md, "A
broker restart under load"). At this test's scale that ingest got there too, only slower: the
collapse needs the bench's load; this test keeps the promise at the scale a test affords.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.bulk import add_lockers, ids_from_count
from broker.registry import Registry
from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import open_database
from fleet_console.db.models import EventRow
from fleet_console.ingest import Ingest, IngestSettings
from tests.fixtures.lean_mqtt import (
    PUBLISH,
    connack_accepted,
    connect_packet,
    puback_packet,
    publish_packet,
    read_packet,
    split_publish,
    subscribe_packet,
)
from tests.fixtures.mqtt_broker import MqttBroker

TOPICS = Topics()
LOCKERS = 400
WINDOW = 100
#: Events each locker has at the start (a full window: 30,000 at once, far more than the ingest
#: takes per second) and makes after the restart.
BURST = 50
AFTER_RESTART = 12
RATE_PER_S = 3.0  # per locker, from the restart on (1,200 events/s for the fleet)
#: How long the ingest may take to store and acknowledge everything once the load is over.
CATCH_UP_S = 30.0
RESEND_AFTER_S = 30.0  # FleetLink's default (resend_after_s)


class Locker:
    """A FleetLink-like locker on MQTT 3.1.1: outbox window, resend on reconnect and stall."""

    def __init__(self, locker: str, password: str, host: str, port: int) -> None:
        self.id, self.password, self.host, self.port = locker, password, host, port
        self.generated = self.acked = self.sent_up_to = 0
        self.last_progress = time.monotonic()
        self.writer: asyncio.StreamWriter | None = None
        self.pid = 0

    def new_event(self) -> None:
        self.generated += 1
        self.flush()

    def flush(self) -> None:
        if self.writer is None:
            return
        last = min(self.generated, self.acked + WINDOW)
        for seq in range(max(self.sent_up_to, self.acked) + 1, last + 1):
            payload = json.dumps({"seq": seq, "id": str(uuid.uuid4()), "at": 1_700_000_000_000,
                                  "type": "door_opened", "data": {"cell": 1}}).encode()
            self.pid = self.pid % 65535 + 1
            self.writer.write(publish_packet(TOPICS.events(self.id), payload, mid=self.pid))
        self.sent_up_to = max(self.sent_up_to, last)

    def stalled(self) -> None:
        """FleetLink's OutboxWindow: no ack progress for RESEND_AFTER_S: back to the watermark."""
        if self.acked < self.generated and time.monotonic() - self.last_progress > RESEND_AFTER_S:
            self.last_progress = time.monotonic()
            self.sent_up_to = self.acked
            self.flush()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, EOFError, asyncio.IncompleteReadError,
                                     TimeoutError):
                await self.session()
            self.writer = None
            await asyncio.sleep(0.2)

    async def session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 5)
        writer.write(connect_packet(self.id, self.id, self.password))
        first, data = await asyncio.wait_for(read_packet(reader), 5)
        if not connack_accepted(first, data):
            writer.close()
            raise OSError(f"CONNACK {data!r}")
        writer.write(subscribe_packet([TOPICS.events_ack(self.id)]))
        self.writer = writer
        self.sent_up_to = self.acked  # everything unacknowledged again
        self.flush()
        try:
            while True:
                first, data = await read_packet(reader)
                if first & 0xF0 != PUBLISH:
                    continue
                _, packet_id, payload = split_publish(first, data)
                if packet_id:
                    writer.write(puback_packet(packet_id))
                up_to = int(json.loads(payload)["up_to_seq"])
                if up_to > self.acked:
                    self.acked, self.last_progress = up_to, time.monotonic()
                    self.flush()
        finally:
            writer.close()


def _fleet(accounts: list[tuple[str, str]], host: str, port: int, restarted: Any,
           load_done: Any, stop: Any, acked: Any) -> None:
    """The lockers, in a process of their own (as they are other machines): a burst each,
    more once the broker is back, then FleetLink's stall timer until told to stop."""
    lockers = [Locker(lk, pw, host, port) for lk, pw in accounts]

    async def main() -> None:
        never = asyncio.Event()
        runs = [asyncio.create_task(lk.run(never)) for lk in lockers]
        for lk in lockers:  # sent as soon as connected
            for _ in range(BURST):
                lk.new_event()
        while not restarted.is_set():
            await asyncio.sleep(0.05)
        start = time.monotonic()  # then a steady load from the restart on
        while (due := int((time.monotonic() - start) * RATE_PER_S)) < AFTER_RESTART:
            for lk in lockers:
                while lk.generated < BURST + due:
                    lk.new_event()
            await asyncio.sleep(0.05)
        for lk in lockers:
            while lk.generated < BURST + AFTER_RESTART:
                lk.new_event()
        load_done.set()
        while not stop.is_set():
            for lk in lockers:
                lk.stalled()
            acked.value = sum(lk.acked for lk in lockers)
            await asyncio.sleep(0.1)
        for lk in lockers:
            if lk.writer is not None:
                lk.writer.write(b"\xe0\x00")
                lk.writer.close()
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    asyncio.run(main())


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = MqttBroker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


async def test_every_event_is_stored_and_acknowledged_after_a_broker_restart_under_load(
    broker: MqttBroker, tmp_path: Path
) -> None:
    with Registry.edit(broker.registry_path) as reg:
        accounts = add_lockers(reg, ids_from_count("R", LOCKERS, digits=4))
    broker.fleet.write_files()
    broker.process.reload()
    assert broker.process.wait_login(*accounts[-1], timeout=5)
    user, password = broker.console_credentials
    mqtt = ConsoleMqtt(host=broker.host, port=broker.console_port, username=user,
                       password=password)
    url = f"sqlite:///{tmp_path}/console.db"
    ingest = Ingest(mqtt, open_database(url), IngestSettings(client_id="ingest-restart"))
    await ingest.start()
    ctx = mp.get_context("spawn")
    restarted, load_done, stop, acked = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    fleet = ctx.Process(target=_fleet, daemon=True, args=(
        accounts, broker.host, broker.port, restarted, load_done, stop, acked))
    fleet.start()
    try:
        deadline = time.monotonic() + 15
        while stored_now(url) < LOCKERS * BURST // 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the ingest is into the burst: restart mid-stream
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        restarted.set()
        assert await asyncio.to_thread(load_done.wait, 20)
        expected = LOCKERS * (BURST + AFTER_RESTART)
        back = time.monotonic()
        deadline = back + CATCH_UP_S
        while acked.value < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stored = await asyncio.to_thread(_count_events, url)
        assert (stored, acked.value) == (expected, expected), (
            f"{expected} events published: {stored} stored, {acked.value} acknowledged "
            f"{time.monotonic() - back:.1f} s after the restart; ingest {ingest.stats}")
    finally:
        stop.set()
        fleet.join(10)
        if fleet.is_alive():
            fleet.kill()
        await ingest.stop()
        ingest.db.dispose()


def stored_now(url: str) -> int:
    return _count_events(url)


def _count_events(url: str) -> int:
    db = open_database(url)
    try:
        with db.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
    finally:
        db.dispose()
