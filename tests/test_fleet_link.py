"""The locker's MQTT link against a real Mosquitto: presence, cells, outbox, commands, outages.

The daemon core is replaced by `FakePort`, an in-memory `LockerPort` whose outbox is a list; the
console is a paho test client of the fixture. Blocking test-client calls run in a thread so that
the link keeps running on the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiomqtt import ProtocolVersion

from contract.topics import Topics
from daemon.config import MqttSettings
from daemon.io.fleet_link import Backoff, FleetLink, LockerPort, _stop_tasks
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker, MqttTestClient, unique_id

T = Topics()
ROOT = Path(__file__).resolve().parents[1]


class FakePort:
    """An in-memory daemon core: cells in a dict, the outbox in a list, inbound calls recorded."""

    def __init__(self, locker_id: str, cells: int = 2) -> None:
        self.locker_id = locker_id
        self.boot_id = uuid.uuid4().hex
        self.cells = {
            n: {"cell": n, "state": "free", "door": "closed", "size": "M", "since": 1000 + n}
            for n in range(1, cells + 1)
        }
        self.outbox: list[dict] = []
        self.next_seq = 1
        self.acks: list[int] = []
        self.inbound: list[tuple[str, bytes, str | None]] = []
        self.fail_on: bytes | None = None
        self.link: FleetLink | None = None

    # LockerPort
    def status(self) -> dict:
        return {
            "online": True,
            "version": "test",
            "boot_id": self.boot_id,
            "started_at": 1_700_000_000_000,
            "boards": [{"name": "b1", "online": True}],
        }

    def cell_snapshots(self) -> list[dict]:
        return [dict(c) for c in self.cells.values()]

    def unacked_events(self, after_seq: int, limit: int) -> list[dict]:
        return [dict(e) for e in self.outbox if e["seq"] > after_seq][:limit]

    def events_acknowledged(self, up_to_seq: int) -> None:
        self.acks.append(up_to_seq)
        self.outbox = [e for e in self.outbox if e["seq"] > up_to_seq]

    async def command_received(self, payload: bytes, topic_locker: str) -> None:
        self.inbound.append(("cmd", payload, topic_locker))
        if payload == self.fail_on:
            raise RuntimeError("the core choked")

    async def config_received(self, payload: bytes) -> None:
        self.inbound.append(("config", payload, None))

    # what the core does after a durable commit
    def add_events(self, n: int = 1, notify: bool = True) -> list[int]:
        seqs = []
        for _ in range(n):
            seq = self.next_seq
            self.next_seq += 1
            self.outbox.append(
                {"seq": seq, "id": str(uuid.uuid4()), "at": 1000 + seq, "type": "t", "data": {}}
            )
            seqs.append(seq)
        if notify and self.link is not None:
            self.link.notify(events=True)
        return seqs

    def set_cell(self, cell: int, **fields: Any) -> None:
        self.cells[cell] = {**self.cells[cell], **fields}
        if self.link is not None:
            self.link.notify([cell])


def _port_is_a_locker_port(port: FakePort) -> LockerPort:
    return port  # type-checks FakePort against the Protocol


class LogLines:
    """The link's log callback, kept for assertions."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.lines.append((kind, fields))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.lines]


def settings_for(broker: MqttBroker, creds: LockerCredentials, port: int | None = None) -> Any:
    return MqttSettings(
        host=broker.host,
        port=port or broker.port,
        username=creds.username,
        password=creds.password,
        keepalive=10,
    )


def make_link(
    broker: MqttBroker, creds: LockerCredentials, port: FakePort, **kwargs: Any
) -> tuple[FleetLink, LogLines]:
    log = LogLines()
    kwargs.setdefault("backoff_initial", 0.05)
    kwargs.setdefault("backoff_max", 0.2)
    kwargs.setdefault("reconnect_spread", 0.1)
    link = FleetLink(
        port, settings_for(broker, creds, kwargs.pop("broker_port", None)), log=log, **kwargs
    )
    port.link = link
    return link, log


@contextlib.asynccontextmanager
async def running(link: FleetLink, connect: bool = True) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(link.run())
    try:
        if connect:
            await link.wait_connected(5)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def expect(client: MqttTestClient, topic: str, timeout: float = 5.0) -> Any:
    return await asyncio.to_thread(client.expect, topic, timeout)


async def expect_json(client: MqttTestClient, topic: str, timeout: float = 5.0) -> dict:
    return json.loads((await expect(client, topic, timeout)).payload)


async def event_seqs(client: MqttTestClient, locker: str, wanted: set[int]) -> list[int]:
    """Event seqs received until every wanted one came (duplicates kept, in arrival order)."""
    got: list[int] = []
    while not wanted <= set(got):
        got.append((await expect_json(client, T.events(locker)))["seq"])
    return got


async def collect(
    client: MqttTestClient, done: Callable[[defaultdict[str, list[dict]]], bool]
) -> defaultdict[str, list[dict]]:
    """Every message (JSON payloads by topic, in arrival order) until `done` says enough."""
    seen: defaultdict[str, list[dict]] = defaultdict(list)
    while not done(seen):
        msg = await expect(client, None)
        seen[msg.topic].append(json.loads(msg.payload))
    return seen


def first_occurrences(seqs: list[int]) -> list[int]:
    seen: list[int] = []
    for s in seqs:
        if s not in seen:
            seen.append(s)
    return seen


def sever(link: FleetLink) -> None:
    """Cut the link's TCP connection under its feet (no DISCONNECT: the broker sends the will)."""
    assert link._client is not None
    sock = link._client._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def console(mqtt_broker: MqttBroker) -> Any:
    client = mqtt_broker.console_client()
    yield client
    client.close()


# --- connecting ------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [None, ProtocolVersion.V311], ids=["v5", "v311"])
async def test_connect_publishes_status_cells_and_delivers_commands_in_order(
    mqtt_broker: MqttBroker,
    locker_credentials: LockerCredentials,
    console: MqttTestClient,
    protocol: ProtocolVersion | None,
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid, cells=3)
    link, log = make_link(mqtt_broker, locker_credentials, port, protocol=protocol)
    async with running(link):
        assert link.connected
        (_, fields) = next(line for line in log.lines if line[0] == "connected")
        assert fields["protocol"] == ("3.1.1" if protocol else "5")
        await asyncio.to_thread(console.subscribe, T.status(lid))
        status = await expect(console, T.status(lid))
        assert status.retain
        assert json.loads(status.payload)["online"] is True
        assert json.loads(status.payload)["boot_id"] == port.boot_id
        await until(lambda: link.stats.cells_published == 3)  # so all three come retained
        await asyncio.to_thread(console.subscribe, f"lockers/{lid}/cells/+")
        cells = {}
        for _ in range(3):
            msg = await expect(console, None)
            assert msg.retain
            cells[msg.topic] = json.loads(msg.payload)
        assert cells == {T.cell(lid, n): port.cells[n] for n in (1, 2, 3)}

        await asyncio.to_thread(console.publish, T.cmd(lid), b"cmd-1", 1)
        await asyncio.to_thread(console.publish, T.config(lid), b"config-1", 1)
        await asyncio.to_thread(console.publish, T.cmd(lid), b"cmd-2", 1)
        await until(lambda: len(port.inbound) == 3)
        assert port.inbound == [
            ("cmd", b"cmd-1", lid),
            ("config", b"config-1", None),
            ("cmd", b"cmd-2", lid),
        ]

        port.set_cell(2, state="occupied", since=5000)
        msg = await expect(console, T.cell(lid, 2))
        assert json.loads(msg.payload)["state"] == "occupied"

        link.send_config_applied({"version": 3, "hash": "a" * 64})
        await asyncio.to_thread(console.subscribe, T.config_applied(lid))
        msg = await expect(console, T.config_applied(lid))
        assert json.loads(msg.payload) == {"version": 3, "hash": "a" * 64}


async def test_port_errors_and_bad_acks_do_not_kill_the_link(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    port.fail_on = b"boom"
    link, log = make_link(mqtt_broker, locker_credentials, port)
    async with running(link):
        await asyncio.to_thread(console.subscribe, T.events(lid))
        port.add_events(2)
        assert [s for s in await event_seqs(console, lid, {1, 2})] == [1, 2]
        for payload in (b"not json", b'{"up_to_seq": -1}', b'{"up_to_seq": 99}'):
            await asyncio.to_thread(console.publish, T.events_ack(lid), payload, 1)
        await asyncio.to_thread(console.publish, T.cmd(lid), b"boom", 1)
        await asyncio.to_thread(console.publish, T.cmd(lid), b"after", 1)
        await until(lambda: len(port.inbound) == 2)
        assert port.acks == []
        assert [e["seq"] for e in port.outbox] == [1, 2]
        assert log.kinds().count("ack_malformed") == 2
        assert "ack_ignored" in log.kinds()  # 99 was never sent
        assert "cmd_failed" in log.kinds()
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 2}', 1)
        await until(lambda: port.outbox == [])
        assert link.connected


# --- the outbox ------------------------------------------------------------------------------
async def test_outbox_in_order_acked_and_resent_after_reconnect(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    link, log = make_link(mqtt_broker, locker_credentials, port)
    async with running(link):
        await asyncio.to_thread(console.subscribe, T.events(lid))
        await asyncio.to_thread(console.subscribe, T.status(lid))
        assert (await expect_json(console, T.status(lid)))["online"] is True
        for _ in range(30):  # thirty commits in a row: one publish pass
            port.add_events(1)
        assert await event_seqs(console, lid, set(range(1, 31))) == list(range(1, 31))
        published = [f for k, f in log.lines if k == "published"]
        assert published == [{"events": 30, "up_to_seq": 30, "acked": 0}]
        events = [e for e in port.outbox]

        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 25}', 1)
        await until(lambda: [e["seq"] for e in port.outbox] == [26, 27, 28, 29, 30])
        assert port.acks == [25]

        sever(link)  # an abrupt loss: the will, then a reconnect that re-sends 26..30
        assert (await expect_json(console, T.status(lid)))["online"] is False
        assert (await expect_json(console, T.status(lid)))["online"] is True
        port.add_events(2)
        got = await event_seqs(console, lid, set(range(26, 33)))
        assert first_occurrences(got) == list(range(26, 33))
        resent = {e["seq"]: e for e in events if e["seq"] >= 26}
        assert all(e == resent[e["seq"]] for e in port.outbox if e["seq"] in resent)
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 32}', 1)
        await until(lambda: port.outbox == [])
        assert link.stats.connects == 2


async def test_at_most_max_in_flight_unacked_and_resent_when_acks_stall(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    link, _ = make_link(mqtt_broker, locker_credentials, port, max_in_flight=3, resend_after=0.4)
    async with running(link):
        await asyncio.to_thread(console.subscribe, T.events(lid))
        port.add_events(7)
        assert await event_seqs(console, lid, {1, 2, 3}) == [1, 2, 3]
        # No ack: after resend_after the same three come again, and no fourth.
        assert await event_seqs(console, lid, {1, 2, 3}) == [1, 2, 3]
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 3}', 1)
        got = await event_seqs(console, lid, {4, 5, 6})
        assert got == [4, 5, 6]
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 6}', 1)
        assert (await event_seqs(console, lid, {7}))[-1] == 7


async def test_outbox_left_from_a_past_run_starts_at_its_first_seq(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    port.add_events(40, notify=False)
    port.events_acknowledged(36)  # acked in a previous run
    link, _ = make_link(mqtt_broker, locker_credentials, port, max_in_flight=5)
    await asyncio.to_thread(console.subscribe, T.events(lid))
    async with running(link):
        assert await event_seqs(console, lid, {37, 38, 39, 40}) == [37, 38, 39, 40]
        await asyncio.to_thread(console.publish, T.events_ack(lid), b'{"up_to_seq": 40}', 1)
        await until(lambda: port.outbox == [])


# --- outages ---------------------------------------------------------------------------------
async def test_broker_outage_reconnects_and_delivers_everything(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    link, log = make_link(mqtt_broker, locker_credentials, port)
    console_id = unique_id("console")
    first = mqtt_broker.console_client(client_id=console_id, clean_session=False)
    try:
        for topic in (T.events(lid), T.status(lid), f"lockers/{lid}/cells/+"):
            await asyncio.to_thread(first.subscribe, topic)
        async with running(link):
            port.add_events(3)
            assert await event_seqs(first, lid, {1, 2, 3}) == [1, 2, 3]
            await asyncio.to_thread(first.publish, T.events_ack(lid), b'{"up_to_seq": 2}', 1)
            await until(lambda: port.acks == [2])
            first.close()

            await asyncio.to_thread(mqtt_broker.stop)
            await until(lambda: not link.connected)
            port.add_events(3)  # committed while the broker is away
            port.set_cell(1, state="blocked", since=9000)
            await until(lambda: log.kinds().count("reconnect") >= 3)  # retrying, backing off
            await asyncio.to_thread(mqtt_broker.start)
            await link.wait_connected(10)

            second = mqtt_broker.console_client(client_id=console_id, clean_session=False)
            try:
                # What the link published since the restart, queued in the console's session.
                seen = await collect(
                    second,
                    lambda m: (
                        {3, 4, 5, 6} <= {e["seq"] for e in m[T.events(lid)]}
                        and any(c["state"] == "blocked" for c in m[T.cell(lid, 1)])
                        and any(st["online"] for st in m[T.status(lid)])
                    ),
                )
                seqs = [e["seq"] for e in seen[T.events(lid)]]
                assert first_occurrences(seqs) == [3, 4, 5, 6]
                await asyncio.to_thread(second.publish, T.events_ack(lid), b'{"up_to_seq": 6}', 1)
                await until(lambda: port.outbox == [])
            finally:
                second.close()
    finally:
        first.close()
        mqtt_broker.ensure_running()


# --- presence --------------------------------------------------------------------------------
LINK_SCRIPT = """
import asyncio, sys
from daemon.config import MqttSettings
from daemon.io.fleet_link import FleetLink

class Port:
    locker_id = sys.argv[1]
    def status(self):
        return {"online": True, "version": "t", "boot_id": "b", "started_at": 1}
    def cell_snapshots(self): return []
    def unacked_events(self, after_seq, limit): return []
    def events_acknowledged(self, up_to_seq): pass
    async def command_received(self, payload, topic_locker): pass
    async def config_received(self, payload): pass

async def main():
    lid, host, port, user, password = sys.argv[1:6]
    settings = MqttSettings(host=host, port=int(port), username=user, password=password)
    link = FleetLink(Port(), settings)
    task = asyncio.create_task(link.run())
    await link.wait_connected(10)
    print("connected", flush=True)
    await task

asyncio.run(main())
"""


async def test_last_will_when_the_process_is_killed(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid, user, password = locker_credentials
    args = [sys.executable, "-c", LINK_SCRIPT, lid, mqtt_broker.host, str(mqtt_broker.port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [*args, user, password], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)  # type: ignore[union-attr]
        assert line.strip() == "connected"
        await asyncio.to_thread(console.subscribe, T.status(lid))
        assert (await expect_json(console, T.status(lid)))["online"] is True
        proc.send_signal(signal.SIGKILL)
        msg = await expect(console, T.status(lid))
        assert json.loads(msg.payload) == {"online": False}
    finally:
        proc.kill()
        proc.wait()
    late = mqtt_broker.console_client()  # and it is retained
    try:
        await asyncio.to_thread(late.subscribe, T.status(lid))
        msg = await expect(late, T.status(lid))
        assert msg.retain and json.loads(msg.payload) == {"online": False}
    finally:
        late.close()


async def test_clean_stop_leaves_offline_status(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    link, log = make_link(mqtt_broker, locker_credentials, FakePort(lid))
    async with running(link):
        await asyncio.to_thread(console.subscribe, T.status(lid))
        assert (await expect_json(console, T.status(lid)))["online"] is True
    assert not link.connected
    assert ("stopped", {"status": "offline"}) in log.lines
    msg = await expect(console, T.status(lid))
    assert json.loads(msg.payload) == {"online": False}
    late = mqtt_broker.console_client()
    try:
        await asyncio.to_thread(late.subscribe, T.status(lid))
        msg = await expect(late, T.status(lid))
        assert msg.retain and json.loads(msg.payload) == {"online": False}
    finally:
        late.close()


async def test_a_stop_at_the_instant_the_broker_accepts_still_ends_the_link(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    """A stop (lockerd's SIGTERM cancels `run()`) that lands as the CONNACK arrives: on 3.11
    `asyncio.wait_for` inside aiomqtt's connect returns the CONNACK and drops the cancellation.
    Before: the session went on as if nothing had been asked, `run()` never returned and lockerd
    hung on its way out (1 clean stop in 5 right after start in tests/test_store_full.py)."""
    lid = locker_credentials.locker_id
    stopping: list[asyncio.Task] = []

    class StoppedAtConnack(FleetLink):
        def _make_client(self) -> Any:
            client = super()._make_client()
            # Runs before aiomqtt's own wake-up of its waiter: the cancel and the CONNACK race.
            client._connected.add_done_callback(lambda _: stopping[0].cancel())
            return client

    link = StoppedAtConnack(FakePort(lid), settings_for(mqtt_broker, locker_credentials),
                            log=LogLines())
    await asyncio.to_thread(console.subscribe, T.status(lid))
    stopping.append(asyncio.create_task(link.run()))
    done, _ = await asyncio.wait(stopping, timeout=5)
    if not done:  # leave no task behind on a failure
        await _stop_tasks(set(stopping))
    assert done, "the link went on after a stop that came with the CONNACK"
    assert stopping[0].cancelled() and not link.connected
    assert json.loads((await expect(console, T.status(lid))).payload) == {"online": False}


# --- persistent session and queued results ---------------------------------------------------
@pytest.mark.parametrize("protocol", [None, ProtocolVersion.V311], ids=["v5", "v311"])
async def test_command_published_while_offline_is_delivered_on_reconnect(
    mqtt_broker: MqttBroker,
    locker_credentials: LockerCredentials,
    console: MqttTestClient,
    protocol: ProtocolVersion | None,
) -> None:
    lid = locker_credentials.locker_id
    port = FakePort(lid)
    link, _ = make_link(mqtt_broker, locker_credentials, port, protocol=protocol)
    async with running(link):
        pass  # the broker now holds the session with its subscriptions
    await asyncio.to_thread(console.publish, T.cmd(lid), b"while-away", 1)
    await asyncio.to_thread(console.publish, T.config(lid), b"cfg", 1, True)
    async with running(link):
        await until(lambda: len(port.inbound) == 2)
    assert port.inbound == [("cmd", b"while-away", lid), ("config", b"cfg", None)]


async def test_results_sent_while_disconnected_are_delivered_after_reconnect(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    link, _ = make_link(mqtt_broker, locker_credentials, FakePort(lid))
    await asyncio.to_thread(console.subscribe, T.cmd_result(lid))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with running(link):
        link.send_result({"cmd_id": ids[0], "status": "accepted"})
        assert (await expect_json(console, T.cmd_result(lid)))["cmd_id"] == ids[0]
        await until(lambda: link.stats.results_published == 1)
        # The console confirms it on `delivered` (a PUBACK alone proves nothing): not sent again.
        await asyncio.to_thread(console.publish, T.delivered(lid), json.dumps(
            {"results": [{"cmd_id": ids[0], "status": "accepted"}]}))
        await until(lambda: link.undelivered == 0)
    assert not link.connected
    link.send_result({"cmd_id": ids[1], "status": "done", "data": {"cell": 1}})
    link.send_result({"cmd_id": ids[2], "status": "rejected", "reason": "expired"})
    with pytest.raises(ValueError):
        link.send_result({"cmd_id": "nope", "status": "done"})
    async with running(link):
        got = [await expect_json(console, T.cmd_result(lid)) for _ in range(2)]
    assert got == [
        {"cmd_id": ids[1], "status": "done", "data": {"cell": 1}},
        {"cmd_id": ids[2], "status": "rejected", "reason": "expired", "data": {}},
    ]


async def test_a_result_never_confirmed_is_given_up_and_the_link_stays_up(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    """A console that never confirms: after `deliver_for_s` the result is dropped and said in
    the log, and the publish pass goes on (that log call once raised a TypeError, which the
    pass caught as `publish_failed`, losing the log line and the rest of the pass)."""
    lid = locker_credentials.locker_id
    link, log = make_link(mqtt_broker, locker_credentials, FakePort(lid),
                          resend_after=0.1, deliver_for_s=0.3)
    await asyncio.to_thread(console.subscribe, T.cmd_result(lid))
    cmd_id = str(uuid.uuid4())
    async with running(link) as task:
        link.send_result({"cmd_id": cmd_id, "status": "accepted"})
        assert (await expect_json(console, T.cmd_result(lid)))["cmd_id"] == cmd_id
        await until(lambda: {"undelivered_given_up", "publish_failed"} & set(log.kinds()))
        assert "publish_failed" not in log.kinds(), log.lines
        assert not task.done() and link.undelivered == 0 and link.connected
        given_up = [f for k, f in log.lines if k == "undelivered_given_up"]
        assert given_up == [{"item": "result", "key": f"{cmd_id}/accepted"}]


# --- MQTT 5 refused: 3.1.1 -------------------------------------------------------------------
class V311OnlyProxy:
    """A TCP proxy to Mosquitto that plays a 3.1.1-only broker: a v5 CONNECT gets CONNACK 1."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.refused = 0
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)  # CONNECT type and first length byte
        while head[-1] & 0x80:  # remaining length is a varint
            head += await reader.readexactly(1)
        name_len = await reader.readexactly(2)
        rest = await reader.readexactly(int.from_bytes(name_len, "big") + 1)
        if rest[-1] == 5:
            self.refused += 1
            writer.write(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        up_writer.write(head + name_len + rest)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._pipes.add(task)


async def test_falls_back_to_311_when_the_broker_refuses_5(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    lid = locker_credentials.locker_id
    proxy = V311OnlyProxy(mqtt_broker.port)
    proxy_port = await proxy.start()
    port = FakePort(lid)
    link, log = make_link(mqtt_broker, locker_credentials, port, broker_port=proxy_port)
    try:
        async with running(link):
            assert proxy.refused == 1
            assert ("protocol_fallback" in log.kinds()) and "reconnect" not in log.kinds()
            assert dict(log.lines)["connected"]["protocol"] == "3.1.1"
            await asyncio.to_thread(console.subscribe, T.status(lid))
            assert (await expect_json(console, T.status(lid)))["online"] is True
            await asyncio.to_thread(console.publish, T.cmd(lid), b"over-311", 1)
            await until(lambda: port.inbound == [("cmd", b"over-311", lid)])
    finally:
        await proxy.close()


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_resync_republishes_retained_state_once_per_interval(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, console: MqttTestClient
) -> None:
    """A console that lost a locker's retained messages asks on `resync`: status, every cell
    and config/applied come again, retained; a flood of requests costs one republish and a
    bad payload is logged and dropped."""
    lid = locker_credentials.locker_id
    port = FakePort(lid, cells=3)
    link, log = make_link(mqtt_broker, locker_credentials, port, resync_min_interval=30.0)
    async with running(link):
        link.send_config_applied({"version": 7, "hash": "b" * 64})
        await until(lambda: link.stats.cells_published == 3)
        await asyncio.to_thread(console.subscribe, f"lockers/{lid}/#")
        await collect(console, lambda seen: len(seen) >= 5)  # the retained copies
        await asyncio.sleep(0.2)
        assert link.stats.resyncs_done == 0

        await asyncio.to_thread(console.publish, T.resync(lid), b'{"at": 1, "spread_ms": "x"}', 1)
        await until(lambda: "resync_malformed" in log.kinds())
        request = json.dumps({"at": 1, "spread_ms": 300}).encode()
        for _ in range(20):
            await asyncio.to_thread(console.publish, T.resync(lid), request, 1)
        wanted = {T.status(lid), T.config_applied(lid), *(T.cell(lid, n) for n in (1, 2, 3))}
        seen = await collect(console, lambda seen: wanted <= set(seen))
        assert seen[T.status(lid)][0]["boot_id"] == port.boot_id
        assert seen[T.config_applied(lid)] == [{"version": 7, "hash": "b" * 64}]
        await until(lambda: link.stats.resyncs_asked == 20)
        await asyncio.sleep(0.5)  # more than the spread: a second answer would show by now
        assert link.stats.resyncs_done == 1
        assert link.stats.cells_published == 6
        assert log.kinds().count("resync_scheduled") == 1
