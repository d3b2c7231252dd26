"""Issue 16 item 2: every locker's retained state reaches the console, even when the broker
dropped it from the ingest's queue.

A real Mosquitto whose generated configuration queues only a few messages per client; real
`FleetLink` lockers connect while the ingest is away, so their status and cell snapshots
overflow the ingest's queue and are dropped. An ingest without resync never gets them (the
broker does not send retained messages again to a persistent subscription); the real ingest
with resync (on SQLite and on PostgreSQL) asks the lockers and ends with every status and
every declared cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.fleet import FleetBroker
from broker.mosquitto_conf import PER_LOCKER_BURST, queue_limits
from daemon.config import MqttSettings
from daemon.io.fleet_link import FleetLink
from fleet_console.config import ConsoleMqtt
from fleet_console.db.models import Cell, Locker
from tests.fixtures.console_ingest import IngestRunner, db_query
from tests.fixtures.mqtt_broker import unique_id
from tests.fixtures.quiet_locker import QuietLockerPort

CELLS = 8
LOCKERS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of this test's own: the planner looks at every locker in it, and the
    session's PostgreSQL database holds other tests' lockers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/var/console.db"
    cluster: Any = request.getfixturevalue("postgres_cluster")
    return str(cluster.create_database(f"resync_{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def tiny_broker(tmp_path: Path) -> Iterator[FleetBroker]:
    """A Mosquitto that queues at most 5 messages for a client that is away."""
    broker = FleetBroker(tmp_path / "registry.json", tmp_path / "data")
    if broker.kind != "mosquitto":
        pytest.skip("needs Mosquitto")
    broker.settings = replace(broker.settings, max_queued_messages=5, fleet_size=0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def stored(url: str, ids: list[str]) -> tuple[int, int]:
    """(these lockers with a status, their cell snapshots) in the console database; the
    PostgreSQL database is the session's, shared with other tests' lockers."""
    def read(conn: Any) -> tuple[int, int]:
        statuses = conn.scalar(select(func.count()).select_from(Locker)
                               .where(Locker.id.in_(ids), Locker.last_status_at.is_not(None)))
        cells = conn.scalar(select(func.count()).select_from(Cell).where(Cell.locker.in_(ids)))
        return int(statuses), int(cells)
    return db_query(url, read)


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def lockers(broker: FleetBroker) -> AsyncIterator[list[FleetLink]]:
    links = []
    for _ in range(LOCKERS):
        lid = unique_id()
        password = broker.add_locker(lid)
        settings = MqttSettings(host=broker.host, port=broker.port, username=lid,
                                password=password, keepalive=10)
        links.append(FleetLink(QuietLockerPort(lid, CELLS), settings, log=lambda *a, **k: None,
                               backoff_initial=0.05, backoff_max=0.2, reconnect_spread=0.1,
                               resync_min_interval=1.0))
    tasks = [asyncio.create_task(link.run()) for link in links]
    try:
        yield links
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_state_dropped_by_the_broker_is_resynced(
    tiny_broker: FleetBroker, db_url: str
) -> None:
    password = tiny_broker.add_console("ops")
    mqtt = ConsoleMqtt(host=tiny_broker.host, port=tiny_broker.console_port, username="ops",
                       password=password)
    url = db_url
    # Receive Maximum 8: the broker keeps about 8 in flight + 5 queued of the 54 retained
    # messages it sends when the ingest subscribes again, and drops the rest
    fast = {"resync_check_s": 0.2, "resync_grace_s": 0.5, "resync_retry_s": 1.0, "batch_max": 2,
            "resync_rate_per_s": 10, "receive_maximum": 8, "presence_receive_maximum": 8,
            "batch_max_backlog": 2}
    without = IngestRunner(mqtt, url, resync_check_s=0, batch_max=2, receive_maximum=8,
                           presence_receive_maximum=8, batch_max_backlog=2)
    await without.start()  # the persistent session and its subscriptions exist from now on
    await without.stop()   # ... and the ingest is away while the fleet connects

    async with lockers(tiny_broker) as links:
        ids = [lk.locker_id for lk in links]
        await until(lambda: all(lk.stats.cells_published == CELLS for lk in links), 10,
                    "the lockers to publish their state")
        # The ingest comes back without resync: it gets what the broker kept, and no more.
        ingest = await without.start()
        await until(lambda: ingest.stats.messages > 0, 5, "the queued messages")
        await asyncio.sleep(0.5)  # nothing more is coming: the rest was dropped
        statuses, cells = stored(url, ids)
        assert statuses + cells < LOCKERS * (1 + CELLS), "the broker dropped nothing"
        await without.stop()

        # With resync: it notices what it lacks and the lockers publish it again.
        runner = IngestRunner(mqtt, url, **fast)
        runner.settings = replace(runner.settings, client_id=without.settings.client_id)
        ingest = await runner.start()
        try:
            await until(lambda: stored(url, ids) == (LOCKERS, LOCKERS * CELLS), 30,
                        "every status and every declared cell in the database")
            assert ingest.stats.resyncs_asked >= 1
            assert sum(lk.stats.resyncs_done for lk in links) >= 1
        finally:
            await runner.stop()


def test_queue_limits_hold_a_whole_fleet_connecting_at_once() -> None:
    assert queue_limits(0) == queue_limits(100)  # today's defaults are the floor
    messages, size = queue_limits(10_000)
    assert messages == 10_000 * PER_LOCKER_BURST >= 10_000 * (17 + 100)
    assert size >= messages * 200
    assert queue_limits(10_000, 0, 0) == (0, 0)  # "no limit" stays no limit
