"""Issue 16, item 1, the locker's half: a hole in a locker's sequence is never acknowledged past
while the locker holds the events; the console's `events/resend` is answered from the outbox
(the events again, same seq and id), and `events/gone` only for seqs the outbox lacks.

All real but the daemon core: Mosquitto with the `broker/` configuration and a per-locker
account, the locker's `FleetLink` (over `FakePort`, an in-memory outbox), and the console's
`Ingest` on SQLite with a short gap timeout. The broker dropping an event on the way is
played by the outbox hiding it from the link's first read of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from tests.fixtures.console_ingest import IngestRunner, alarms, seqs
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker, MqttTestClient, unique_id
from tests.test_fleet_link import (
    FakePort,
    console,
    expect_json,
    make_link,
    running,
    until,
)

T = Topics()
_ = console  # the paho console client fixture


class LossyPort(FakePort):
    """An outbox whose events in `lost` are skipped on the link's first read of them: to the
    console they look dropped by the broker, though the outbox still holds them."""

    def __init__(self, locker_id: str) -> None:
        super().__init__(locker_id)
        self.lost: set[int] = set()

    def unacked_events(self, after_seq: int, limit: int) -> list[dict]:
        rows = super().unacked_events(after_seq, limit)
        hidden = {r["seq"] for r in rows} & self.lost
        self.lost -= hidden
        return [r for r in rows if r["seq"] not in hidden]


@pytest.fixture
async def ingest(console_mqtt: ConsoleMqtt, tmp_path: Path) -> AsyncIterator[IngestRunner]:
    r = IngestRunner(console_mqtt, f"sqlite:///{tmp_path}/var/console.db", gap_timeout_s=0.6)
    await r.start()
    yield r
    await r.stop()
    await r.forget_session()


async def test_a_hole_the_locker_still_holds_is_resent_never_acked_past(
    mqtt_broker: MqttBroker, ingest: IngestRunner
) -> None:
    port = LossyPort(unique_id())
    port.lost = {3, 4}
    # resend_after far beyond the test: only `events/resend` can fill the hole
    link, log = make_link(mqtt_broker, mqtt_broker.add_locker(port.locker_id), port,
                          resend_after=300.0)
    url = ingest.url
    async with running(link):
        port.add_events(6)
        await until(lambda: seqs(url, port.locker_id) == [1, 2, 3, 4, 5, 6], 10.0,
                    "the resent range fills the hole")
        await until(lambda: port.acks and port.acks[-1] == 6, 5.0, "ack past the filled hole")
    assert all(a <= 2 or a == 6 for a in port.acks), port.acks  # none inside the hole
    kinds = [k for k, _ in alarms(url, port.locker_id)]
    assert "seq_gap_permanent" not in kinds, kinds
    assert ("resent", {"from_seq": 3, "to_seq": 4, "events": 2, "gone": 0}) in log.lines


async def test_a_locker_that_lacks_the_seqs_says_gone_and_the_console_moves_past(
    mqtt_broker: MqttBroker, ingest: IngestRunner
) -> None:
    port = FakePort(unique_id())
    port.add_events(6, notify=False)
    port.outbox = [e for e in port.outbox if e["seq"] not in (3, 4)]  # really not there
    link, log = make_link(mqtt_broker, mqtt_broker.add_locker(port.locker_id), port,
                          resend_after=300.0)
    url = ingest.url
    async with running(link):
        await until(lambda: port.acks and port.acks[-1] == 6, 10.0, "ack past the gone seqs")
    assert seqs(url, port.locker_id) == [1, 2, 5, 6]
    assert ("seq_gap_permanent", {"missing_from": 3, "missing_to": 4}) in alarms(
        url, port.locker_id)
    assert ("resent", {"from_seq": 3, "to_seq": 4, "events": 0, "gone": 1}) in log.lines


async def test_bad_resend_requests_never_kill_the_link_nor_say_gone_for_the_unsent(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    link, log = make_link(mqtt_broker, locker_credentials, port, resend_after=300.0)
    async with running(link):
        await asyncio.to_thread(console.subscribe, T.events_gone(lid))
        await asyncio.to_thread(console.subscribe, T.events(lid))
        port.add_events(3)
        for _ in range(3):
            await expect_json(console, T.events(lid))
        for payload in (b"not json", b'{"from_seq": 5, "to_seq": 2}',
                        b'{"from_seq": 1, "to_seq": 5000}', b'{"from_seq": 0, "to_seq": 1}'):
            await asyncio.to_thread(console.publish, T.events_resend(lid), payload, 1)
        # 2 is held, 4..9 were never sent: 2 again, nothing gone
        await asyncio.to_thread(console.publish, T.events_resend(lid),
                                b'{"from_seq": 2, "to_seq": 9}', 1)
        assert (await expect_json(console, T.events(lid)))["seq"] == 2
        await until(lambda: "resent" in log.kinds())
        assert log.kinds().count("resend_malformed") == 4
        port.outbox = [e for e in port.outbox if e["seq"] != 1]  # retention dropped 1
        await asyncio.to_thread(console.publish, T.events_resend(lid),
                                b'{"from_seq": 1, "to_seq": 1}', 1)
        assert await expect_json(console, T.events_gone(lid)) == {"from_seq": 1, "to_seq": 1}
        assert link.connected
        # counted once the broker acknowledged the publish, which may be after the console got it
        await until(lambda: link.stats.gone_said == 1, 5.0, "the gone counted")
