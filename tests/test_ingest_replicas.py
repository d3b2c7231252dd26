"""Issue 16, item 5: several ingest replicas share the work through a shared subscription, with
the watermark and the holes in the database.

All real: Mosquitto from the `broker/` configuration, a console account per replica, PostgreSQL
(and SQLite), lockers played by `FleetLink` over an in-memory outbox (durable-outbox semantics:
unacknowledged events are sent again after `resend_after`, on reconnect and on `events/resend`),
and for the crash test `locker-console ingest --replica NAME` processes as an operator runs
them, one of them killed with SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import make_engine, open_database
from fleet_console.db.models import EventRow, Locker
from fleet_console.ingest import Ingest, IngestSettings, subscriptions
from fleet_console.mqtt import make_client
from tests.fixtures.console_ingest import SimLocker, alarms, db_query
from tests.fixtures.mqtt_broker import MqttBroker, unique_id
from tests.fixtures.postgres import PrivatePostgres
from tests.test_fleet_link import FakePort, make_link, running, until

CONSOLE = str(Path(sys.executable).with_name("locker-console"))


class CheckedPort(FakePort):
    """A locker's outbox that checks, at each ack, that the database holds every event the ack
    covers (no ack ever covers a seq neither stored nor declared gone)."""

    def __init__(self, locker_id: str, url: str) -> None:
        super().__init__(locker_id)
        self.engine = make_engine(url)
        self.bad_acks: list[tuple[int, int]] = []

    def events_acknowledged(self, up_to_seq: int) -> None:
        with self.engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(EventRow).where(
                EventRow.locker == self.locker_id, EventRow.seq <= up_to_seq)) or 0
        if stored != up_to_seq:
            self.bad_acks.append((up_to_seq, stored))
        super().events_acknowledged(up_to_seq)


def fresh_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/var/console.db"
    cluster: PrivatePostgres = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"replicas_{uuid.uuid4().hex[:8]}")


def replica_mqtt(broker: MqttBroker, name: str) -> ConsoleMqtt:
    """A console account of its own for replica `name`."""
    user, password = broker.add_console(unique_id(f"ingest-{name}"))
    return ConsoleMqtt(host=broker.host, port=broker.console_port, username=user,
                       password=password)


async def forget_session(mqtt: ConsoleMqtt, client_id: str) -> None:
    """A clean start with the replica's client id ends its session (and its share)."""
    async with make_client(mqtt, identifier=client_id):
        pass


def event_counts(url: str, lockers: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per locker: (rows, distinct seqs, highest seq) stored."""
    return db_query(url, lambda c: {
        r.locker: (r.n, r.distinct, r.top) for r in c.execute(
            select(EventRow.locker, func.count().label("n"),
                   func.count(EventRow.seq.distinct()).label("distinct"),
                   func.max(EventRow.seq).label("top"))
            .where(EventRow.locker.in_(lockers)).group_by(EventRow.locker))
    })


@pytest.fixture
async def lockers_factory(mqtt_broker: MqttBroker) -> AsyncIterator[Any]:
    """Start n lockers (FleetLink + CheckedPort) on `url`; stopped after the test."""
    async with AsyncExitStack() as stack:
        async def start(n: int, url: str, resend_after: float) -> list[CheckedPort]:
            ports = []
            for _ in range(n):
                port = CheckedPort(unique_id(), url)
                stack.callback(port.engine.dispose)
                link, _ = make_link(mqtt_broker, mqtt_broker.add_locker(port.locker_id), port,
                                    resend_after=resend_after)
                await stack.enter_async_context(running(link))
                ports.append(port)
            return ports

        yield start


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_two_replicas_split_the_load_and_store_each_event_once(
    mqtt_broker: MqttBroker, lockers_factory: Any, request: pytest.FixtureRequest,
    tmp_path: Path, kind: str,
) -> None:
    url = fresh_database(request, kind, tmp_path)
    replicas = []
    for name in ("a", "b"):
        settings = IngestSettings(client_id=unique_id(f"ingest-{name}"), replica=name,
                                  gap_timeout_s=3.0)
        replicas.append(Ingest(replica_mqtt(mqtt_broker, name), open_database(url), settings))
    try:
        for r in replicas:
            await r.start()
        assert all(t.startswith("$share/ingest/") for t in replicas[0].subscriptions()
                   if t.endswith("/events"))
        ports = await lockers_factory(4, url, resend_after=1.0)
        for _ in range(10):
            for port in ports:
                port.add_events(5)
            await asyncio.sleep(0.01)
        await until(lambda: all(p.acks and p.acks[-1] == 50 for p in ports), 20.0,
                    "every locker acknowledged up to its last event")
    finally:
        for r in replicas:
            await r.stop()
            r.db.dispose()
            await forget_session(r.mqtt, r.settings.client_id)
    counts = event_counts(url, [p.locker_id for p in ports])
    assert counts == {p.locker_id: (50, 50, 50) for p in ports}
    assert all(p.bad_acks == [] for p in ports), [p.bad_acks for p in ports]
    stored = [r.stats.events_new for r in replicas]
    assert all(n > 0 for n in stored), f"one replica did all the work: {stored}"
    assert sum(stored) == 200, stored  # counted once: no event stored by both
    watermarks = db_query(url, lambda c: {r.id: r.acked_seq for r in c.execute(
        select(Locker.id, Locker.acked_seq).where(Locker.id.in_([p.locker_id for p in ports])))})
    assert watermarks == {p.locker_id: 50 for p in ports}
    # Out of order between replicas all the time, yet no hole outlived the gap timeout:
    # no alarm for it.
    assert [a for p in ports for a in alarms(url, p.locker_id)] == []


class ReplicaProcess:
    """`locker-console --config FILE ingest` as an operator runs it, its log read in a thread."""

    def __init__(self, config: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.connected = threading.Event()
        self.proc = subprocess.Popen(
            [CONSOLE, "--config", str(config), "ingest", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "connected to" in line and "as replica" in line:
                self.connected.set()

    def wait_connected(self, timeout: float = 15.0) -> None:
        if not self.connected.wait(timeout):
            raise AssertionError("replica not subscribed:\n" + "\n".join(self.lines[-20:]))

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def replica_processes() -> Iterator[Any]:
    with ExitStack() as stack:
        def spawn(config: Path, *args: str) -> ReplicaProcess:
            replica = ReplicaProcess(config, *args)
            stack.callback(replica.stop)
            return replica

        yield spawn


def write_config(path: Path, mqtt: ConsoleMqtt, url: str, replica: str | None) -> Path:
    path.write_text(
        f'[mqtt]\nhost = "{mqtt.host}"\nport = {mqtt.port}\nusername = "{mqtt.username}"\n'
        f'password = "{mqtt.password}"\n\n[database]\nurl = "{url}"\n'
        + (f'\n[ingest]\nreplica = "{replica}"\n' if replica else "")
    )
    return path


async def test_a_replica_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    mqtt_broker: MqttBroker, lockers_factory: Any, replica_processes: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    url = fresh_database(request, "postgresql", tmp_path)
    open_database(url).dispose()  # migrated once, before the replicas race for it
    run = uuid.uuid4().hex[:6]
    names = [f"a{run}", f"b{run}"]
    mqtts = [replica_mqtt(mqtt_broker, n) for n in names]
    # one from [ingest] replica, one from --replica: both ways an operator names a replica
    a = replica_processes(write_config(tmp_path / "a.toml", mqtts[0], url, names[0]),
                          "--gap-timeout", "0.5")
    b = replica_processes(write_config(tmp_path / "b.toml", mqtts[1], url, None),
                          "--replica", names[1], "--gap-timeout", "0.5")
    try:
        await asyncio.to_thread(a.wait_connected)
        await asyncio.to_thread(b.wait_connected)
        ports = await lockers_factory(5, url, resend_after=0.5)
        total = 60
        for burst in range(12):
            if burst == 5:
                await until(lambda: sum(len(p.acks) for p in ports) > 0, 10.0, "some acks")
                a.kill()  # mid-stream: messages in its hands and queued for it
                stored_at_kill = sum(n for n, _, _ in event_counts(
                    url, [p.locker_id for p in ports]).values())
            for port in ports:
                port.add_events(total // 12)
            await asyncio.sleep(0.02)
        await until(lambda: all(p.acks and p.acks[-1] == total for p in ports), 60.0,
                    "every locker acknowledged up to its last event by the survivor")
        assert b.proc.poll() is None, "\n".join(b.lines[-20:])
        assert 0 < stored_at_kill < len(ports) * total
    finally:
        a.stop()
        b.stop()
        for name, mqtt in zip(names, mqtts, strict=True):
            await forget_session(mqtt, f"ingest-{name}")
    counts = event_counts(url, [p.locker_id for p in ports])
    assert counts == {p.locker_id: (total, total, total) for p in ports}
    assert all(p.bad_acks == [] for p in ports), [p.bad_acks for p in ports]


def test_a_locker_that_joins_a_shared_group_takes_nothing_from_the_replicas_group(
    mqtt_broker: MqttBroker,
) -> None:
    """Mosquitto's ACL file does not check subscriptions, and a share that the read ACL then
    denies is dropped for the whole group; so a locker joining the replicas' group would take
    a share of every locker's events. Under another group name (`[ingest] share_group`, a
    secret on Mosquitto) its guess takes nothing: every event reaches the replicas."""
    thief_id, victim_id = unique_id(), unique_id()
    group = f"ingest-{uuid.uuid4().hex}"
    settings = IngestSettings(replica="a", share_group=group)
    topics = subscriptions(Topics(), settings)
    assert f"$share/{group}/lockers/+/events" in topics
    assert "lockers/+/status" in topics  # retained kinds: every replica, not shared
    with mqtt_broker.client(*mqtt_broker.add_locker(thief_id)) as thief, \
            mqtt_broker.client(*mqtt_broker.add_locker(victim_id)) as victim, \
            mqtt_broker.console_client() as console:
        console.subscribe(f"$share/{group}/lockers/+/events")
        thief.subscribe("$share/ingest/lockers/+/events")
        for i in range(10):
            victim.publish(f"lockers/{victim_id}/events", str(i).encode(), qos=1)
        got = [console.expect(f"lockers/{victim_id}/events", 5.0).payload for _ in range(10)]
        assert sorted(got) == [str(i).encode() for i in range(10)]
        thief.assert_silent(0.2)


async def test_a_replica_that_dies_leaves_the_group_at_once(
    mqtt_broker: MqttBroker, lockers_factory: Any, replica_processes: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """kill -9 of one replica: Mosquitto hands an offline member with a session its share of
    the group's messages, so with persistent sessions half of every locker's new events waited
    for a replica that was gone (bench/fleet_scale.py: 5,366 still unacknowledged after a
    120 s drain). A replica's session ends with its connection: the survivor gets every event
    published after the kill at once, with no resend from the lockers."""
    url = fresh_database(request, "sqlite", tmp_path)
    open_database(url).dispose()
    run = uuid.uuid4().hex[:6]
    a_name, b_name = f"a{run}", f"b{run}"
    a_mqtt, b_mqtt = replica_mqtt(mqtt_broker, a_name), replica_mqtt(mqtt_broker, b_name)
    a = replica_processes(write_config(tmp_path / "a.toml", a_mqtt, url, a_name))
    b = Ingest(b_mqtt, open_database(url), IngestSettings(
        client_id=f"ingest-{b_name}", replica=b_name, gap_timeout_s=300.0))
    try:
        await asyncio.to_thread(a.wait_connected)
        await b.start()
        a.kill()
        await asyncio.sleep(0.5)  # the broker sees the connection reset
        # resend_after and gap timeout far beyond the test: only b can store them, at once
        ports = await lockers_factory(2, url, resend_after=300.0)
        for port in ports:
            port.add_events(20)
        await until(lambda: all(p.acks and p.acks[-1] == 20 for p in ports), 10.0,
                    "every event stored and acknowledged by the surviving replica")
        assert b.stats.events_new == 40
    finally:
        await b.stop()
        b.db.dispose()
        for name, mqtt in ((a_name, a_mqtt), (b_name, b_mqtt)):
            await forget_session(mqtt, f"ingest-{name}")


async def test_a_replica_taken_out_for_good_ends_its_session_and_its_share_goes_to_the_others(
    mqtt_broker: MqttBroker, lockers_factory: Any, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """A replica given a persistent session (`replica_session_expiry_s`) keeps its turn in
    the shared group when stopped (Mosquitto queues its share); `ingest --end-session` releases
    it: the other replica gets every event at once, with no resend from the lockers."""
    url = fresh_database(request, "sqlite", tmp_path)
    run = uuid.uuid4().hex[:6]
    mqtts = {name: replica_mqtt(mqtt_broker, name) for name in (f"a{run}", f"b{run}")}
    replicas = {
        name: Ingest(mqtt, open_database(url), IngestSettings(
            client_id=f"ingest-{name}", replica=name, gap_timeout_s=300.0,
            replica_session_expiry_s=3600))
        for name, mqtt in mqtts.items()
    }
    (a_name, a), (_, b) = replicas.items()
    try:
        await a.start()
        await b.start()
        await a.stop()  # its session and its place in the group stay on the broker
        config = write_config(tmp_path / "a.toml", mqtts[a_name], url, a_name)
        ended = await asyncio.to_thread(subprocess.run, [
            CONSOLE, "--config", str(config), "ingest", "--end-session"],
            capture_output=True, text=True, timeout=30)
        assert ended.returncode == 0, ended.stderr
        assert f"ingest-{a_name}" in ended.stdout
        # resend_after and gap timeout far beyond the test: only b can store them, at once
        ports = await lockers_factory(2, url, resend_after=300.0)
        for port in ports:
            port.add_events(20)
        await until(lambda: all(p.acks and p.acks[-1] == 20 for p in ports), 10.0,
                    "every event stored and acknowledged by the remaining replica")
        assert b.stats.events_new == 40
    finally:
        for r in replicas.values():
            await r.stop()
            r.db.dispose()
        for name, mqtt in mqtts.items():
            await forget_session(mqtt, f"ingest-{name}")


async def test_replicas_ask_for_a_hole_once_per_timeout_and_move_past_it_on_the_lockers_word(
    mqtt_broker: MqttBroker, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """The hole's timer is in the database: one `events/resend` per gap timeout for both
    replicas together, one `seq_gap` alarm (when first asked), and the watermark moves past the
    hole only on the locker's `events/gone`, whichever replica receives it."""
    url = fresh_database(request, "postgresql", tmp_path)
    replicas = [
        Ingest(replica_mqtt(mqtt_broker, name), open_database(url), IngestSettings(
            client_id=unique_id(f"ingest-{name}"), replica=name, gap_timeout_s=0.6))
        for name in ("a", "b")
    ]
    locker = SimLocker(mqtt_broker, url)
    try:
        for r in replicas:
            await r.start()
        for seq in (1, 2, 4, 5):  # 3 never comes
            locker.event(seq)
        await asyncio.to_thread(locker.wait_ack, 2)
        asked_at: list[float] = []  # when each request arrived
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(15):
            while len(asked_at) < 4:
                if len(locker.resends) > len(asked_at):
                    asked_at.append(loop.time())
                await asyncio.sleep(0.005)
        assert set(locker.resends[:4]) == {(3, 3)}
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(asked_at)]
        assert min(gaps) >= 0.5, f"asked again before the gap timeout (0.6 s): {gaps}"
        assert max(a for a, _ in locker.acks) == 2  # never past the hole meanwhile
        locker.gone(3, 3)
        await asyncio.to_thread(locker.wait_ack, 5)
    finally:
        for r in replicas:
            await r.stop()
            r.db.dispose()
            await forget_session(r.mqtt, r.settings.client_id)
        locker.close()
    kinds = [k for k, _ in alarms(url, locker.id)]
    assert kinds == ["seq_gap", "seq_gap_permanent"], alarms(url, locker.id)
    locker.check_acks_were_committed(given_up=(3,))
