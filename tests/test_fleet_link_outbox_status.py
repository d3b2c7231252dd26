"""The locker's status reports its outbox, so the console sees a backlog (issue 16, item 3).

Against the session's real Mosquitto with the link's `FakePort` (tests/test_fleet_link.py) given
an outbox summary: the status says how many events wait and since when, is published again while
events wait (at most every `status_refresh_s`), once more when the outbox has emptied, and then
no more.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from daemon.io.store import LockerStore
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker, MqttTestClient
from tests.test_fleet_link import FakePort, T, expect_json, make_link, running, until


class PortWithOutbox(FakePort):
    """A port that knows its outbox's depth and oldest event, as lockerd's store does."""

    def outbox_summary(self) -> dict:
        oldest = min(self.outbox, key=lambda e: e["seq"]) if self.outbox else None
        return {"depth": len(self.outbox), "oldest_at": oldest["at"] if oldest else None}


@pytest.fixture
def console(mqtt_broker: MqttBroker) -> MqttTestClient:
    client = mqtt_broker.console_client()
    yield client
    client.close()


async def test_status_reports_the_outbox_and_is_refreshed_while_events_wait(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = PortWithOutbox(lid)
    port.add_events(3)
    link, _ = make_link(mqtt_broker, locker_credentials, port, status_refresh_s=0.3)
    await asyncio.to_thread(console.subscribe, T.status(lid))
    async with running(link):
        first = await expect_json(console, T.status(lid))
        assert first["online"] is True and first["outbox"] == {"depth": 3, "oldest_at": 1001}
        started = time.monotonic()
        again = await expect_json(console, T.status(lid))  # nobody acks: refreshed
        assert again["outbox"] == {"depth": 3, "oldest_at": 1001}
        assert time.monotonic() - started >= 0.2
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 3}', 1)
        await until(lambda: port.outbox == [])
        while (status := await expect_json(console, T.status(lid)))["outbox"]["depth"]:
            pass  # a refresh that went out before the ack
        assert status["outbox"] == {"depth": 0, "oldest_at": None}
        with pytest.raises(AssertionError, match="no message"):  # empty: no more refreshes
            await asyncio.to_thread(console.expect, T.status(lid), 1.0)


def test_lockerd_store_summarises_its_outbox_across_acks_and_restarts(tmp_path: Path) -> None:
    """What lockerd's status reports: the real store's depth and oldest unacknowledged `at`."""
    store = LockerStore(tmp_path)
    assert store.outbox_summary() == {"depth": 0, "oldest_at": None}
    store.commit(None, [("a", {})], now_ms=1000)
    store.commit(None, [("b", {}), ("c", {})], now_ms=2000)
    assert store.outbox_summary() == {"depth": 3, "oldest_at": 1000}
    store.acknowledge(1)
    store.close()
    store = LockerStore(tmp_path)
    assert store.outbox_summary() == {"depth": 2, "oldest_at": 2000}
    store.close()
