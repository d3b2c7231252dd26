"""Benchmark (not a test): a whole fleet reconnecting at once, as an operator runs it (issue 16).

Run:  .venv/bin/python bench/fleet_scale.py [--lockers 100,1000,3000] [--with-10000]
      [--seconds 60] [--drain 120] [--restart-broker] [--replicas 2 --kill-one] [--postgres]
      [--workers 2] [--out bench/results/fleet_scale.json]

Per fleet size N, everything fresh in a temporary folder: a private Mosquitto with the
configuration `locker-broker` generates (broker.fleet.FleetBroker, its default limits) and one
account per locker (made in bulk, broker.bulk); one `locker-console ingest` process with a console
configuration file on SQLite (or `--postgres`: a private cluster); N simulated lockers of 16 cells
in `--workers` processes (at least one per 2,500 lockers), each its own MQTT 3.1.1 connection
(asyncio streams, client id = locker id, its own credentials, a persistent session and an offline
last will; one event timer per process, so that the generator stays a small share of the CPU it
shares with what it measures: its CPU is reported). All lockers connect at once. On every
connection a locker publishes its retained QoS 1 `status` (declaring cells 1..16)
and 16 retained `cells/N`, subscribes to `events/ack`, `events/resend` and `resync`, and resends
its unacknowledged events. It makes one event a second (QoS 1) into a durable outbox (at most 100
in flight beyond the console's ack watermark), answers `events/resend` from the outbox and with
`events/gone` for what it no longer holds, sends everything unacknowledged again when acks
stalled for 30 s (lockerd's `resend_after_s`), answers `resync` after random(0, spread_ms) by
republishing status and cells, and reconnects with full-jitter exponential backoff.

Baseline in the same run: a plain aiomqtt subscriber (console account) on `<prefix>/+/events`.

Figures per N: time until every status and every cell is in the database (or "never: x/N
statuses, y/16N cells"); events stored per second over the load window beside the plain
subscriber's; publish -> covering `events/ack` p50/p99; events lost (published by a locker, not
in the database after the drain) and (locker, seq) stored twice; what `locker-console status
--json` lists and its wall time; the ingest's and Mosquitto's CPU ms per event.

Scenarios: `--restart-broker` adds a run of `--scenario-lockers` (1,000) lockers in which
Mosquitto is stopped half-way through the load and started again on the same port with its
persistence; `--replicas 2 --kill-one` adds a run with two `locker-console ingest --replica a|b`
(shared subscription) of which one gets kill -9 half-way (skipped while the ingest has no
`--replica`). Progress lines go to stderr; the table to stdout; results to `--out`.
Bounded: `--seconds` of load, then a drain that ends when every event is acknowledged and every
status and cell stored, when nothing moved for 15 s, or after `--drain` seconds; every subprocess
is stopped at the end, whatever happens. "Events lost" are events a locker published that are not
in the database after the drain and no longer in its outbox (it will never send them again);
those not stored yet but still held by their locker are counted apart; "unacked at end" is
everything the lockers still hold in their outboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import heapq
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from broker.bulk import add_lockers, ids_from_count  # noqa: E402
from broker.fleet import FleetBroker  # noqa: E402
from broker.registry import Registry  # noqa: E402
from contract.messages import BoardHealth, CellSnapshot, EventsGone, Status  # noqa: E402
from contract.topics import TopicKind, Topics  # noqa: E402
from fleet_console.db.engine import make_engine  # noqa: E402
from fleet_console.db.models import Cell, EventRow, Locker  # noqa: E402
from fleet_io.mqtt_client import NODELAY  # noqa: E402
from tests.fixtures.lean_mqtt import (  # noqa: E402
    connack_accepted,
    connect_packet,
    puback_packet,
    publish_packet,
    read_packet,
    split_publish,
    subscribe_packet,
)

LOCKER_CONSOLE = str(Path(sys.executable).with_name("locker-console"))
RESULTS = ROOT / "bench" / "results" / "fleet_scale.json"
TOPICS = Topics()
CELLS = 16
WINDOW = 100  # events in flight beyond the ack watermark (a locker's outbox window)
#: lockerd's `[mqtt] resend_after_s` (FleetLink's OutboxWindow): acks stalled this long, the
#: locker sends everything unacknowledged again.
RESEND_AFTER_S = 30.0
KEEPALIVE_S = 60
BACKOFF_FIRST_S = 3.0  # full jitter: the first reconnect waits random(0, 3 s)
BACKOFF_CAP_S = 30.0
CONNECT_TIMEOUT_S = 15.0
POLL_S = 0.5
PROGRESS_S = 5.0
INGEST_READY_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The drain ends early when neither stored events nor acks moved for this long.
DRAIN_STALL_S = 15.0
#: Lockers one load process takes at most (10,000 lockers: 4 processes, whatever --workers).
BIG_FLEET_PER_WORKER = 2500


def say(line: str) -> None:
    """A progress line on stderr (stdout is the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class Refused(RuntimeError):
    """The broker answered CONNECT with a non-zero return code."""


@dataclasses.dataclass
class Shared:
    """What the main process sees of the lockers while they run (multiprocessing primitives)."""

    go: Any  # Event: connect and start the load
    stop_load: Any  # Event: no more new events
    finish: Any  # Event: disconnect and report
    counters: Any  # Array('q', 5 per worker): generated, acked, connected, published, connects


class SimLocker:
    """One locker: a durable outbox of events, its retained status and cells, reconnects."""

    def __init__(self, locker: str, password: str, host: str, port: int,
                 finish: asyncio.Event) -> None:
        self.id, self.password, self.host, self.port = locker, password, host, port
        self.finish = finish
        self.generated = 0
        self.acked = 0
        self.outbox: dict[int, tuple[bytes, float | None]] = {}  # seq -> (payload, 1st publish)
        self.never_published: set[int] = set()
        self.published_up_to = 0  # highest seq published on this connection
        self.last_progress = time.monotonic()  # the ack watermark last moved (or resent)
        self.stall_resends = 0
        self.latencies_ms: list[tuple[float, float]] = []  # (first publish, ms to its ack)
        self.writer: asyncio.StreamWriter | None = None
        self.pid = 0
        self.connects = self.disconnects = self.refusals = 0
        self.first_connected_at: float | None = None
        self.resyncs = self.resend_asks = self.gone_sent = self.resent = 0
        self.sub_codes: list[int] = []
        self.boot_id = uuid.uuid4().hex[:12]
        self.started_at = int(time.time() * 1000)
        self.tasks: set[asyncio.Task[None]] = set()

    # -- the outbox ----------------------------------------------------------------------------
    def new_event(self) -> None:
        self.generated += 1
        seq = self.generated
        payload = json.dumps({"seq": seq, "id": str(uuid.uuid4()), "at": int(time.time() * 1000),
                              "type": "door_opened", "data": {"cell": seq % CELLS + 1}}).encode()
        self.outbox[seq] = (payload, None)
        self.never_published.add(seq)
        self.flush()

    def flush(self) -> None:
        """Publish what the window allows past what this connection already sent."""
        if self.writer is None:
            return
        last = min(self.generated, self.acked + WINDOW)
        for seq in range(max(self.published_up_to, self.acked) + 1, last + 1):
            self.publish_event(seq)
        self.published_up_to = max(self.published_up_to, last)

    def publish_event(self, seq: int) -> None:
        payload, first = self.outbox[seq]
        if first is None:
            self.outbox[seq] = (payload, time.time())
            self.never_published.discard(seq)
        self.publish(TOPICS.events(self.id), payload, retain=False)

    def on_ack(self, up_to: int) -> None:
        now = time.time()
        for seq in range(self.acked + 1, min(up_to, self.generated) + 1):
            _, first = self.outbox.pop(seq, (b"", None))
            if first is not None:
                self.latencies_ms.append((first, (now - first) * 1000))
        if up_to > self.acked:
            self.last_progress = time.monotonic()
        self.acked = max(self.acked, up_to)
        self.flush()

    def check_stall(self, now: float) -> None:
        """FleetLink's OutboxWindow: no ack progress for RESEND_AFTER_S while events are in
        flight: back to the watermark, everything unacknowledged again."""
        if (self.writer is None or self.published_up_to <= self.acked
                or now - self.last_progress < RESEND_AFTER_S):
            return
        self.last_progress = now
        self.stall_resends += 1
        self.published_up_to = self.acked
        self.flush()

    def on_resend(self, from_seq: int, to_seq: int) -> None:
        """Send the held part of the range again; say `events/gone` for the rest."""
        self.resend_asks += 1
        missing: list[tuple[int, int]] = []
        for seq in range(from_seq, to_seq + 1):
            if seq in self.outbox:
                self.publish_event(seq)
                self.resent += 1
            elif missing and missing[-1][1] == seq - 1:
                missing[-1] = (missing[-1][0], seq)
            else:
                missing.append((seq, seq))
        for lo, hi in missing:
            self.publish(TOPICS.events_gone(self.id),
                         EventsGone(from_seq=lo, to_seq=hi).to_payload(), retain=False)
            self.gone_sent += 1

    # -- retained presence ---------------------------------------------------------------------
    def publish_presence(self, what: list[str] | None = None) -> None:
        """Retained status and cells (those of them `what` names, when given)."""
        if what is None or "status" in what:
            self._publish_status()
        if what is None or "cells" in what:
            for cell in range(1, CELLS + 1):
                snap = CellSnapshot(cell=cell, state="free", door="closed", size="M",
                                    since=self.started_at)
                self.publish(TOPICS.cell(self.id, cell), snap.to_payload(), retain=True)

    def _publish_status(self) -> None:
        status = Status(online=True, version="bench", boot_id=self.boot_id,
                        started_at=self.started_at, cells=list(range(1, CELLS + 1)),
                        boards=[BoardHealth(name="bus0", online=True)])
        self.publish(TOPICS.status(self.id), status.to_payload(), retain=True)

    async def resync(self, spread_ms: int, what: list[str] | None) -> None:
        """Answer `resync` (`{"at", "spread_ms", "what"}`) after random(0, spread_ms)."""
        await asyncio.sleep(random.uniform(0, max(0, spread_ms) / 1000))
        if self.writer is not None:
            self.publish_presence(what)

    # -- MQTT ----------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        assert self.writer is not None
        self.pid = self.pid % 65535 + 1
        self.writer.write(publish_packet(topic, payload, mid=self.pid, retain=retain))

    async def run(self) -> None:
        attempt = 0
        while not self.finish.is_set():
            connects = self.connects
            with contextlib.suppress(OSError, EOFError, asyncio.IncompleteReadError,
                                     TimeoutError, Refused, ValueError):
                await self.session()
            if self.writer is not None:
                self.disconnects += 1
                self.writer.close()
                self.writer = None
            if self.finish.is_set():
                return
            attempt = 0 if self.connects > connects else min(attempt + 1, 10)
            delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** attempt))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finish.wait(), delay)

    async def session(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                CONNECT_TIMEOUT_S)
        writer.get_extra_info("socket").setsockopt(*NODELAY[0])
        # a persistent session; the retained offline status as the last will
        writer.write(connect_packet(self.id, self.id, self.password, keepalive_s=KEEPALIVE_S,
                                    clean=False,
                                    will=(TOPICS.status(self.id), Status.offline().to_payload())))
        try:
            first, data = await asyncio.wait_for(read_packet(reader), CONNECT_TIMEOUT_S)
        except BaseException:
            writer.close()
            raise
        if not connack_accepted(first, data):
            writer.close()
            self.refusals += 1
            raise Refused(f"{self.id}: CONNACK {first:#x} {data!r}")
        self.writer = writer
        self.connects += 1
        if self.first_connected_at is None:
            self.first_connected_at = time.time()
        self.published_up_to = self.acked  # resend every unacknowledged event
        self.publish_presence()
        writer.write(subscribe_packet([TOPICS.events_ack(self.id), TOPICS.events_resend(self.id),
                                       f"{TOPICS.prefix}/{self.id}/resync"]))
        self.flush()
        while True:  # until the broker or hang_up() closes the connection (EOF)
            self.on_packet(*await read_packet(reader))

    def hang_up(self) -> None:
        """End the connection cleanly (DISCONNECT: no last will); the reader then sees EOF."""
        if self.writer is not None:
            self.writer.write(b"\xe0\x00")
            self.writer.close()
            self.writer = None

    def on_packet(self, first: int, data: bytes) -> None:
        kind = first & 0xF0
        if kind == 0x90:  # SUBACK: 0x80 = refused (the ACL has no such topic for lockers)
            self.sub_codes = list(data[2:])
        elif kind == 0x30:
            raw_topic, packet_id, payload = split_publish(first, data)
            topic = raw_topic.decode()
            if packet_id and self.writer is not None:
                self.writer.write(puback_packet(packet_id))
            body = json.loads(payload) if payload else {}
            if topic.endswith("/events/ack"):
                self.on_ack(int(body["up_to_seq"]))
            elif topic.endswith("/events/resend"):
                self.on_resend(int(body["from_seq"]), int(body["to_seq"]))
            elif topic.endswith("/resync"):
                self.resyncs += 1
                task = asyncio.create_task(self.resync(int(body.get("spread_ms", 0)),
                                                       body.get("what")))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "generated": self.generated, "acked": self.acked,
                "never_published": sorted(self.never_published),
                "unacked": len(self.outbox), "held": sorted(self.outbox), "connects": self.connects,
                "disconnects": self.disconnects, "refusals": self.refusals,
                "first_connected_at": self.first_connected_at, "resyncs": self.resyncs,
                "resend_asks": self.resend_asks, "resent": self.resent,
                "gone_sent": self.gone_sent, "sub_codes": self.sub_codes,
                "stall_resends": self.stall_resends}


async def _load(lockers: list[SimLocker], stop_load: asyncio.Event) -> None:
    """One event a second per locker, each from its own random phase, until the load ends:
    one timer for the whole process (a timer per locker costs more than the lockers)."""
    start = time.monotonic()
    due = [(start + random.random(), i) for i in range(len(lockers))]
    heapq.heapify(due)
    while not stop_load.is_set():
        now = time.monotonic()
        while due and due[0][0] <= now:
            at, i = heapq.heappop(due)
            lockers[i].new_event()
            heapq.heappush(due, (at + 1.0, i))
        await asyncio.sleep(0.02)


async def _ping(lockers: list[SimLocker]) -> None:
    """PINGREQ on every open connection each half keepalive; every second, FleetLink's stall
    timer (acks stalled for RESEND_AFTER_S: send again)."""
    last_ping = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        ping = now - last_ping >= KEEPALIVE_S / 2
        if ping:
            last_ping = now
        for lk in lockers:
            if ping and lk.writer is not None:
                lk.writer.write(b"\xc0\x00")
            lk.check_stall(now)


def _worker(index: int, host: str, port: int, accounts: list[tuple[str, str]], shared: Shared,
            out_q: Any, ready_q: Any) -> None:
    async def main() -> None:
        finish, stop_load = asyncio.Event(), asyncio.Event()
        lockers = [SimLocker(lk, pw, host, port, finish) for lk, pw in accounts]
        ready_q.put(index)
        await asyncio.to_thread(shared.go.wait)
        runs = [asyncio.create_task(lk.run()) for lk in lockers]
        helpers = [asyncio.create_task(_load(lockers, stop_load)),
                   asyncio.create_task(_ping(lockers))]
        base = index * 5
        while not shared.finish.is_set():
            if shared.stop_load.is_set():
                stop_load.set()
            shared.counters[base:base + 5] = [
                sum(lk.generated for lk in lockers), sum(lk.acked for lk in lockers),
                sum(lk.writer is not None for lk in lockers),
                sum(lk.generated - len(lk.never_published) for lk in lockers),
                sum(lk.connects for lk in lockers)]
            await asyncio.sleep(0.5)
        finish.set()
        stop_load.set()
        for lk in lockers:
            lk.hang_up()
        _, pending = await asyncio.wait(runs, timeout=CONNECT_TIMEOUT_S + 5)
        for task in (*pending, *helpers):
            task.cancel()
        latencies = [x for lk in lockers for x in lk.latencies_ms]
        out_q.put({"lockers": [lk.report() for lk in lockers], "latencies_ms": latencies,
                   "cpu_ms": _cpu_ms(os.getpid())})

    asyncio.run(main())


# -- the plain subscriber (baseline) ----------------------------------------------------------
def _subscriber(host: str, port: int, username: str, password: str, ready: Any, finish: Any,
                out_q: Any) -> None:
    """Counts messages on `<prefix>/+/events` in 0.1 s bins of wall-clock time."""
    bins: dict[int, int] = {}

    async def main() -> None:
        first = True
        while not finish.is_set():
            try:
                async with aiomqtt.Client(host, port, username=username, password=password,
                                          identifier="bench-plain-subscriber",
                                          clean_session=False, keepalive=30) as client:
                    if first:
                        await client.subscribe(TOPICS.wildcard(TopicKind.EVENTS), qos=1)
                        first = False
                        ready.set()

                    async def count() -> None:
                        async for _ in client.messages:
                            b = int(time.time() * 10)
                            bins[b] = bins.get(b, 0) + 1

                    counter = asyncio.create_task(count())
                    while not finish.is_set() and not counter.done():
                        await asyncio.sleep(0.2)
                    counter.cancel()
                    if finish.is_set():
                        return
            except aiomqtt.MqttError:
                await asyncio.sleep(random.uniform(0.5, 2))

    asyncio.run(main())
    out_q.put(bins)


# -- the console processes --------------------------------------------------------------------
def _cpu_ms(pid: int | None) -> float:
    """utime + stime of a live process, in ms (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def ingest_has_replica() -> bool:
    done = subprocess.run([LOCKER_CONSOLE, "ingest", "--help"], capture_output=True, text=True,
                          timeout=60)
    return "--replica" in done.stdout


class IngestProcess:
    """`locker-console --config FILE ingest [--replica NAME]`, its log in a file."""

    def __init__(self, config: Path, log: Path, replica: str | None = None) -> None:
        self.log = log
        argv = [LOCKER_CONSOLE, "--config", str(config), "ingest"]
        if replica is not None:
            argv += ["--replica", replica]
        self.fh = log.open("w")
        self.proc = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT,
                                     cwd=config.parent, start_new_session=True)
        self.cpu_gone = 0.0  # CPU of a killed process, as last read

    def wait_subscribed(self, timeout: float = INGEST_READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "subscribed" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log.read_text()[-2000:]
        raise RuntimeError(f"the ingest did not subscribe; its log:\n{tail}")

    def cpu_ms(self) -> float:
        return _cpu_ms(self.proc.pid) if self.proc.poll() is None else self.cpu_gone

    def describe(self) -> dict[str, Any]:
        """Alive or not, and the last lines of its log (what it said when it stalled)."""
        lines = self.log.read_text(errors="replace").splitlines()
        kinds = collections.Counter(
            re.sub(r"\d+", "N", ln.split(" ", 2)[-1])[:160] for ln in lines
            if " WARNING " in ln or " ERROR " in ln)
        return {"alive": self.proc.poll() is None, "log_lines": len(lines),
                "subscribed_times": sum("subscribed to" in ln for ln in lines),
                "warnings": sum(kinds.values()), "warning_kinds": dict(kinds.most_common(6)),
                "log_tail": lines[-5:]}

    def kill9(self) -> None:
        self.cpu_gone = self.cpu_ms()
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.fh.close()


# -- one run ----------------------------------------------------------------------------------
@dataclasses.dataclass
class RunSpec:
    lockers: int
    label: str
    restart_broker: bool = False
    replicas: int = 1
    kill_one: bool = False


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class DbProbe:
    """Counts in the console's database, read the way `status` reads it."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def counts(self) -> tuple[int, int, int]:
        """(lockers with an online status stored, cell rows, event rows)."""
        with self.engine.connect() as conn:
            statuses = conn.scalar(select(func.count()).select_from(Locker)
                                   .where(Locker.version.is_not(None))) or 0
            cells = conn.scalar(select(func.count()).select_from(Cell)) or 0
            events = conn.scalar(select(func.count()).select_from(EventRow)) or 0
        return int(statuses), int(cells), int(events)

    def seqs(self) -> tuple[dict[str, set[int]], int]:
        """Every locker's stored seqs, and how many (locker, seq) are stored more than once."""
        out: dict[str, set[int]] = {}
        with self.engine.connect() as conn:
            for locker, seq in conn.execute(select(EventRow.locker, EventRow.seq)):
                out.setdefault(locker, set()).add(seq)
            dups = conn.scalar(select(func.count()).select_from(
                select(EventRow.locker, EventRow.seq).group_by(EventRow.locker, EventRow.seq)
                .having(func.count() > 1).subquery())) or 0
        return out, int(dups)

    def dispose(self) -> None:
        self.engine.dispose()


def _status_listing(config: Path) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        done = subprocess.run([LOCKER_CONSOLE, "--config", str(config), "status", "--json"],
                              capture_output=True, text=True, timeout=120, cwd=config.parent)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 120 s"}
    wall = time.perf_counter() - started
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}",
                "wall_s": round(wall, 2)}
    lockers = doc.get("lockers", [])
    return {"lockers": len(lockers), "online": sum(bool(e.get("online")) for e in lockers),
            "cells": sum(len(e.get("cells", [])) for e in lockers), "source": doc.get("source"),
            "complete": doc.get("complete"), "wall_s": round(wall, 2), "exit": done.returncode}


def run_one(spec: RunSpec, args: argparse.Namespace, pg_url: str | None) -> dict[str, Any]:
    n = spec.lockers
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    say(f"== {spec.label}: {n} lockers x {CELLS} cells, {args.seconds} s of load, "
        f"folder {root}")
    fleet = FleetBroker(root / "registry.json", root / "broker")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    reg = Registry.load(fleet.registry_path)
    console_pw = reg.add_console("bench-console")
    started = time.perf_counter()
    accounts = add_lockers(reg, [i for i in ids_from_count("L", n, digits=5)])
    reg.save()
    say(f"{n} locker accounts in {time.perf_counter() - started:.1f} s")
    url = pg_url or f"sqlite:///{root}/console/console.db"
    (root / "console").mkdir()
    config = root / "console" / "console.toml"
    config.write_text(
        f'[mqtt]\nhost = "{fleet.host}"\nport = {fleet.console_port}\n'
        f'username = "bench-console"\npassword = "{console_pw}"\n\n'
        f'[database]\nurl = "{url}"\n')
    ctx = mp.get_context("spawn")
    workers = min(max(args.workers, n // BIG_FLEET_PER_WORKER), n)
    shared = Shared(go=ctx.Event(), stop_load=ctx.Event(), finish=ctx.Event(),
                    counters=ctx.Array("q", 5 * workers, lock=False))
    out_q, ready_q, sub_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    sub_ready, sub_finish = ctx.Event(), ctx.Event()
    procs: list[Any] = []
    ingests: list[IngestProcess] = []
    probe: DbProbe | None = None
    result: dict[str, Any] = {"label": spec.label, "lockers": n, "cells": n * CELLS,
                              "database": "postgresql" if pg_url else "sqlite"}
    try:
        fleet.start()
        replicas = [None] if spec.replicas == 1 else [chr(ord("a") + i)
                                                      for i in range(spec.replicas)]
        for name in replicas:
            log = root / "console" / f"ingest{'-' + name if name else ''}.log"
            ingests.append(IngestProcess(config, log, name))
        for ingest in ingests:
            ingest.wait_subscribed()
        result["load_processes"] = workers
        say(f"Mosquitto on {fleet.host}:{fleet.port} (console {fleet.console_port}); "
            f"{len(ingests)} ingest process(es) subscribed; {workers} load processes")
        sub = ctx.Process(target=_subscriber, daemon=True, args=(
            fleet.host, fleet.console_port, "bench-console", console_pw, sub_ready, sub_finish,
            sub_q))
        sub.start()
        procs.append(sub)
        if not sub_ready.wait(30):
            raise RuntimeError("the plain subscriber did not subscribe")
        for i in range(workers):
            p = ctx.Process(target=_worker, daemon=True, args=(
                i, fleet.host, fleet.port, accounts[i::workers], shared, out_q, ready_q))
            p.start()
            procs.append(p)
        for _ in range(workers):
            ready_q.get(timeout=60)
        probe = DbProbe(url)
        result |= measure(spec, args, fleet, shared, workers, probe, ingests, config)
        shared.finish.set()
        reports = [out_q.get(timeout=60) for _ in range(workers)]
        sub_finish.set()
        bins: dict[int, int] = sub_q.get(timeout=30)
        result |= tally(result, reports, bins, probe, n)
        result["ingests"] = [i.describe() for i in ingests]
    finally:
        shared.finish.set()
        sub_finish.set()
        for ingest in ingests:
            ingest.stop()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        if probe is not None:
            probe.dispose()
        fleet.stop()
        if os.environ.get("BENCH_KEEP"):  # the broker's and the ingest's logs, for a post-mortem
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    show(result)
    return result


def measure(spec: RunSpec, args: argparse.Namespace, fleet: FleetBroker, shared: Shared,
            workers: int, probe: DbProbe, ingests: list[IngestProcess],
            config: Path) -> dict[str, Any]:
    """Drive one run's clock: go, load window (with the scenario half-way), drain."""
    n = spec.lockers

    def counters() -> dict[str, int]:
        c = list(shared.counters)
        names = ("generated", "acked", "connected", "published", "connects")
        return {k: sum(c[i * 5 + j] for i in range(workers)) for j, k in enumerate(names)}

    cpu0 = sum(i.cpu_ms() for i in ingests)
    broker_cpu0 = _cpu_ms(fleet.mosquitto.pid if fleet.mosquitto else None)
    broker_cpu_before_restart = 0.0
    _, _, events0 = probe.counts()
    go = time.time()
    shared.go.set()
    all_connected_s = retained_s = None
    events_at_end_of_load = None
    said = 0.0
    acted = False
    restarted_at: float | None = None
    connects_before_restart = 0
    scenario: dict[str, Any] = {}
    drain_deadline = go + args.seconds + args.drain
    last_events, last_acked, progress_at = events0, 0, go
    while True:
        now = time.time()
        t = now - go
        statuses, cells, events = probe.counts()
        c = counters()
        if all_connected_s is None and c["connected"] >= n:
            all_connected_s = round(t, 2)
        if retained_s is None and statuses >= n and cells >= n * CELLS:
            retained_s = round(t, 2)
        if (restarted_at is not None and "reconnected_after_restart_s" not in scenario
                and c["connects"] >= connects_before_restart + n):
            scenario["reconnected_after_restart_s"] = round(now - restarted_at, 2)
        if not acted and t >= args.seconds / 2 and (spec.restart_broker or spec.kill_one):
            acted = True
            if spec.restart_broker:
                say("stopping Mosquitto (its persistence kept) ...")
                broker_cpu_before_restart = _cpu_ms(fleet.mosquitto.pid if fleet.mosquitto
                                                    else None)
                connects_before_restart = counters()["connects"]
                fleet.stop()
                down = time.time()
                fleet.start(timeout=30)
                scenario["broker_down_s"] = round(time.time() - down, 2)
                restarted_at = time.time()
                scenario["broker_restarted_at_s"] = round(restarted_at - go, 2)
                say(f"Mosquitto started again after {scenario['broker_down_s']} s")
            if spec.kill_one:
                ingests[0].kill9()
                scenario["killed_replica_at_s"] = round(time.time() - go, 2)
                say("kill -9 of ingest replica a")
        if now - said >= PROGRESS_S:
            said = now
            say(f"{spec.label} t={t:5.1f}s connected {c['connected']}/{n} "
                f"statuses {statuses}/{n} cells {cells}/{n * CELLS} "
                f"events generated {c['generated']} stored {events - events0} "
                f"acked {c['acked']}")
        if events_at_end_of_load is None and t >= args.seconds:
            shared.stop_load.set()
            events_at_end_of_load = events
            say(f"load window over; draining (at most {args.drain:g} s)")
        if events != last_events or c["acked"] != last_acked:
            last_events, last_acked, progress_at = events, c["acked"], now
        if events_at_end_of_load is not None and t >= args.seconds + 1.5:  # counters settled
            drained = c["acked"] >= c["generated"] and events - events0 >= c["published"]
            stalled = now - progress_at >= DRAIN_STALL_S
            if (drained and retained_s is not None) or stalled or now >= drain_deadline:
                break
        time.sleep(max(0.0, POLL_S - (time.time() - now)))
    drain_s = round(time.time() - go - args.seconds, 2)
    statuses, cells, events = probe.counts()
    ingest_cpu = sum(i.cpu_ms() for i in ingests) - cpu0
    broker_cpu = (broker_cpu_before_restart - broker_cpu0 if spec.restart_broker else 0.0) + (
        _cpu_ms(fleet.mosquitto.pid if fleet.mosquitto else None)
        - (0.0 if spec.restart_broker else broker_cpu0))
    say("locker-console status --json ...")
    listing = _status_listing(config)
    stored_in_window = (events_at_end_of_load or events) - events0
    return {
        "go_at": go, "load_s": args.seconds, "drain_s": drain_s,
        "all_connected_s": all_connected_s, "retained_s": retained_s,
        "statuses_stored": statuses, "cells_stored": cells,
        "events_stored": events - events0, "events_stored_in_load": stored_in_window,
        "stored_per_s": round(stored_in_window / args.seconds, 1),
        "ingest_cpu_ms": round(ingest_cpu), "broker_cpu_ms": round(broker_cpu),
        "ingest_cpu_ms_per_event": round(ingest_cpu / max(1, events - events0), 3),
        "broker_cpu_ms_per_event": round(broker_cpu / max(1, events - events0), 3),
        "status_listing": listing, **scenario,
    }


def _ack_phases(timed: list[tuple[float, float]], go: float, retained_s: float | None,
                load_s: float) -> dict[str, Any]:
    """Ack latency while the connect storm's retained state was still arriving, after it, and
    per 10 s of the load window (by the event's first publish): where a p99 comes from."""
    settled = go + (retained_s if retained_s is not None else load_s)
    storm = [ms for at, ms in timed if at < settled]
    after = [ms for at, ms in timed if at >= settled]
    buckets: dict[int, list[float]] = collections.defaultdict(list)
    for at, ms in timed:
        buckets[int((at - go) // 10) * 10].append(ms)
    return {
        "ack_storm_p99_ms": _round(_percentile(storm, 99)), "acks_in_storm": len(storm),
        "ack_after_storm_p50_ms": _round(_percentile(after, 50)),
        "ack_after_storm_p99_ms": _round(_percentile(after, 99)),
        "ack_p99_ms_per_10s": {f"{k}s": _round(_percentile(v, 99))
                               for k, v in sorted(buckets.items())},
    }


def tally(result: dict[str, Any], reports: list[dict[str, Any]], bins: dict[int, int],
          probe: DbProbe, n: int) -> dict[str, Any]:
    lockers = [lk for r in reports for lk in r["lockers"]]
    timed = [x for r in reports for x in r["latencies_ms"]]
    latencies = [ms for _, ms in timed]
    stored, dups = probe.seqs()
    generated = sum(lk["generated"] for lk in lockers)
    published = lost = undelivered = waiting = 0
    for lk in lockers:
        have = stored.get(lk["id"], set())
        never = set(lk["never_published"])
        held = set(lk.get("held", ()))
        for seq in range(1, lk["generated"] + 1):
            if seq in have:
                continue
            if seq in never:
                undelivered += 1
            elif seq in held:
                waiting += 1  # not stored yet, still in its locker's outbox: sent again later
            else:
                lost += 1
        published += lk["generated"] - len(never)
    go, load = result["go_at"], result["load_s"]
    lo, hi = int(go * 10), int((go + load) * 10)
    plain = sum(v for k, v in bins.items() if lo <= k < hi)
    firsts = [lk["first_connected_at"] for lk in lockers if lk["first_connected_at"]]
    sub_codes = [c for lk in lockers for c in lk["sub_codes"]]
    return {
        "events_generated": generated, "events_published": published,
        "events_lost": lost, "events_not_stored_but_held": waiting,
        "events_never_published": undelivered,
        "duplicates": dups, "unacked_at_end": sum(lk["unacked"] for lk in lockers),
        "ack_p50_ms": _round(_percentile(latencies, 50)),
        "ack_p99_ms": _round(_percentile(latencies, 99)),
        "acks_measured": len(latencies),
        **_ack_phases(timed, result["go_at"], result.get("retained_s"), result["load_s"]),
        "plain_subscriber_per_s": round(plain / load, 1),
        "stored_x_plain": round(result["stored_per_s"] / (plain / load), 2) if plain else None,
        "first_connect_all_s": round(max(firsts) - go, 2) if len(firsts) == n else None,
        "never_connected": n - len(firsts),
        "connects": sum(lk["connects"] for lk in lockers),
        "refusals": sum(lk["refusals"] for lk in lockers),
        "resyncs_received": sum(lk["resyncs"] for lk in lockers),
        "resend_asks": sum(lk["resend_asks"] for lk in lockers),
        "events_resent": sum(lk["resent"] for lk in lockers),
        "gone_sent": sum(lk["gone_sent"] for lk in lockers),
        "stall_resends": sum(lk.get("stall_resends", 0) for lk in lockers),
        "subscriptions_refused": sum(c == 0x80 for c in sub_codes),
        "generator_cpu_ms": round(sum(r["cpu_ms"] for r in reports)),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# -- output -----------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:.1f} s" if x >= 1000 else f"{x:.0f} ms"


def retained_cell(r: dict[str, Any]) -> str:
    if r.get("retained_s") is not None:
        return f"all, {r['retained_s']:.1f} s"
    return (f"never: {r['statuses_stored']:,}/{r['lockers']:,} statuses, "
            f"{r['cells_stored']:,}/{r['cells']:,} cells")


def row(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"| {r['label']} | {r['skipped']} | | | | |"
    x = f"{r['stored_x_plain']:.2f}x" if r.get("stored_x_plain") is not None else "-"
    listing = r["status_listing"]
    lists = (f"{listing['lockers']:,}/{r['lockers']:,} lockers, "
             f"{listing['cells']:,}/{r['cells']:,} cells"
             if "lockers" in listing else listing.get("error", "-"))
    lost = f"{r['events_lost']:,}"
    if r.get("events_not_stored_but_held"):
        lost += (f" ({r['events_not_stored_but_held']:,} published, not stored yet, still in "
                 "the lockers' outboxes)")
    if r["duplicates"]:
        lost += f" (+{r['duplicates']} doubled)"
    return (f"| {r['label']} | {retained_cell(r)} | {r['stored_per_s']:,.0f} ({x}) | "
            f"{_ms(r['ack_p50_ms'])} / {_ms(r['ack_p99_ms'])} | {lost} | {lists} |")


def detail(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"| {r['label']} | skipped | | | | | |"
    listing = r["status_listing"]
    extra = ""
    if "broker_down_s" in r:
        extra = (f"broker down {r['broker_down_s']} s at {r['broker_restarted_at_s']} s, "
                 f"every locker back {r.get('reconnected_after_restart_s', 'never')} s later; ")
    if "killed_replica_at_s" in r:
        extra = f"replica a killed at {r['killed_replica_at_s']} s; "
    return (f"| {r['label']} | {r['plain_subscriber_per_s']:,.0f} | "
            f"{r['first_connect_all_s'] if r['first_connect_all_s'] is not None else 'never'} | "
            f"{listing.get('wall_s', '-')} s | {r['ingest_cpu_ms_per_event']} / "
            f"{r['broker_cpu_ms_per_event']} | {r['events_never_published']:,} / "
            f"{r['unacked_at_end']:,} | {extra}{r['connects']:,} connects, "
            f"{r['resend_asks']} resend asks, {r['gone_sent']} gone, "
            f"{r.get('stall_resends', 0)} stall resends, "
            f"{r['resyncs_received']} resyncs, drain {r['drain_s']} s, load processes "
            f"{r['generator_cpu_ms'] / 1000 / (r['load_s'] + r['drain_s']):.0%} of a core |")


def show(r: dict[str, Any]) -> None:
    say("result: " + row(r))


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| lockers | retained status + cells stored | stored ev/s (x plain subscriber) | "
             "ack p50 / p99 | events lost | `locker-console status` lists |",
             "|---|---|---|---|---|---|"]
    lines += [row(r) for r in runs]
    lines += ["", "| lockers | plain subscriber ev/s | all connected once (s) | "
              "`status --json` wall | CPU ms/event ingest / broker | never published / "
              "unacked at end | notes |", "|---|---|---|---|---|---|---|"]
    lines += [detail(r) for r in runs]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockers", default="100,1000,3000",
                        help="fleet sizes, comma-separated (100,1000,3000)")
    parser.add_argument("--with-10000", action="store_true", help="also 10,000 lockers")
    parser.add_argument("--seconds", type=float, default=60.0, help="load window per run (60)")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="at most this long after the load for acks and retained (120; "
                             f"less when nothing moved for {DRAIN_STALL_S:g} s)")
    parser.add_argument("--workers", type=int, default=2, help="load processes (2)")
    parser.add_argument("--restart-broker", action="store_true",
                        help="add a run in which Mosquitto restarts half-way")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2))
    parser.add_argument("--kill-one", action="store_true",
                        help="with --replicas 2: add a run where one replica gets kill -9")
    parser.add_argument("--scenario-lockers", type=int, default=1000,
                        help="fleet size of the scenario runs (1000)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL, not SQLite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.kill_one and args.replicas != 2:
        parser.error("--kill-one needs --replicas 2")
    sizes = [int(x) for x in args.lockers.split(",") if x.strip()]
    if args.with_10000 and 10000 not in sizes:
        sizes.append(10000)
    specs = [RunSpec(n, f"{n:,}") for n in sizes]
    if args.restart_broker:
        specs.append(RunSpec(args.scenario_lockers,
                             f"{args.scenario_lockers:,} + broker restart", restart_broker=True))
    if args.replicas == 2:
        specs.append(RunSpec(args.scenario_lockers,
                             f"{args.scenario_lockers:,}, 2 replicas"
                             + (", kill -9 one" if args.kill_one else ""),
                             replicas=2, kill_one=args.kill_one))
    runs: list[dict[str, Any]] = []
    pg = None
    try:
        for spec in specs:
            if spec.replicas > 1 and not ingest_has_replica():
                say(f"{spec.label}: skipped: ingest has no --replica")
                runs.append({"label": spec.label, "lockers": spec.lockers,
                             "skipped": "skipped: ingest has no --replica"})
                continue
            pg_url = None
            if args.postgres:
                from tests.fixtures.postgres import PrivatePostgres, find_pg_bin

                bindir = find_pg_bin()
                if bindir is None:
                    sys.exit("PostgreSQL is not installed")
                pg = PrivatePostgres(bindir, durable=True)
                pg.start()
                pg_url = pg.create_database("fleet")
            try:
                runs.append(run_one(spec, args, pg_url))
            except (RuntimeError, OSError, queue.Empty) as exc:  # the next size still runs
                say(f"{spec.label}: FAILED: {exc!r}")
                runs.append({"label": spec.label, "lockers": spec.lockers,
                             "skipped": f"failed: {str(exc).splitlines()[0][:200]}"})
            finally:
                if pg is not None:
                    pg.stop()
                    pg = None
    finally:
        if runs:
            write(runs, args)


def write(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(table(runs))
    doc = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "settings": {"load_s": args.seconds, "drain_max_s": args.drain, "workers": args.workers,
                     "cells_per_locker": CELLS, "events_per_locker_per_s": 1, "window": WINDOW,
                     "database": "postgresql" if args.postgres else "sqlite",
                     "broker": "Mosquitto, locker-broker's generated configuration"},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs, "table": table(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    try:
        shown = args.out.resolve().relative_to(ROOT)
    except ValueError:
        shown = args.out
    print(f"wrote {shown}")


if __name__ == "__main__":
    main()
