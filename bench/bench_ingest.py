"""Benchmark (not a test): events per second the console's ingest stores AND acknowledges.

Run:  .venv/bin/python bench/bench_ingest.py [--lockers 200] [--events 100] [--window 20]
      [--generator raw|aiomqtt] [--rate EV_PER_S] [--no-postgres] [--only raw|live|drain]

A private Mosquitto (broker.fleet.FleetBroker, loopback, its own registry with one account per
locker) and simulated lockers in 2 worker processes, each locker its own connection and
credentials. The default generator is lean (MQTT 3.1.1 written straight onto asyncio streams,
~40,000 events/s here); `--generator aiomqtt` is the earlier one (one aiomqtt/paho client per
locker, ~3,000 events/s here, which capped every figure below). Measurements:
- raw baseline: the lockers publish through the same broker to one plain aiomqtt subscriber
  (no database, no acks);
- live: each locker publishes `--events` events QoS 1 keeping at most `--window` not covered by
  an `events/ack` (a locker's durable outbox); figure = all events / (last ack - first publish);
- drain (pre-loaded): the ingest's persistent session exists but the ingest is stopped; the
  lockers publish everything (the broker queues it), then the ingest starts and the clock runs
  until every event is stored and its ack published and PUBACKed: ingest speed alone.
Each on SQLite (WAL, synchronous=NORMAL) and PostgreSQL (a private cluster, fsync on); then the
database is checked: every locker has exactly seq 1..N once, and no alarm. Target: >= 3,000
events/s stored and acknowledged (SQLite, live). Writes bench/results/ingest.json.
Beside each figure: the CPU milliseconds per event of the ingest's process (all its threads),
and for live runs the ack latency p50/p99 (an event's publish to the events/ack covering it).
Unpaced, a live run keeps every locker's window full, so its latency is the queue that makes
(lockers x window / events/s); `--rate 3000` paces the lockers to that many events/s in all and
measures the latency at that load (target p99 <= 200 ms), into bench/results/ingest_paced.json.
Bounded: at most lockers x events events per run, and a 120 s limit per run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
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

from broker.fleet import FleetBroker  # noqa: E402
from broker.registry import Registry  # noqa: E402
from contract.messages import EventAck  # noqa: E402
from contract.topics import Topics  # noqa: E402
from fleet_console.config import ConsoleMqtt  # noqa: E402
from fleet_console.db.engine import open_database  # noqa: E402
from fleet_console.db.models import Alarm, EventRow  # noqa: E402
from fleet_console.ingest import Ingest, IngestSettings  # noqa: E402
from fleet_console.mqtt import make_client  # noqa: E402
from fleet_io.mqtt_client import NODELAY  # noqa: E402
from tests.fixtures.lean_mqtt import (  # noqa: E402
    connack_accepted,
    connect_packet,
    mqtt_str,
    puback_packet,
    publish_packet,
    read_packet,
    split_publish,
    subscribe_packet,
)
from tests.fixtures.postgres import PrivatePostgres, find_pg_bin  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ingest.json"
TOPICS = Topics()
WORKERS = 2
GENERATOR = "raw"
#: Events per second the whole fleet offers in live runs (0: as fast as the window allows).
RATE = 0.0
TARGET_EVENTS_PER_S = 3000
TARGET_ACK_P99_MS = 200
RUN_LIMIT_S = 120.0


# -- simulated lockers (worker processes) -----------------------------------------------------
async def _raw_locker(host: str, port: int, locker: str, password: str, events: int,
                      window: int, wait_acks: bool, ready: asyncio.Event,
                      go: asyncio.Event, pace_s: float = 0.0) -> tuple[float, float, list[float]]:
    """A lean locker: MQTT 3.1.1 over a plain asyncio stream (TCP_NODELAY), QoS 1 publishes
    pipelined with at most `window` awaiting the broker's PUBACK (and, with `wait_acks`, at most
    `window` not yet covered by the console's events/ack, like a locker's outbox); with
    `pace_s`, one event every `pace_s` seconds (from a phase of its own) at most. Returns
    (first publish, last ack, ack latency of each event in ms: publish to its events/ack)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(*NODELAY[0])
    writer.write(connect_packet(f"bench-{locker}", locker, password))
    first, data = await read_packet(reader)
    if not connack_accepted(first, data):
        raise RuntimeError(f"{locker}: CONNACK {first:#x} {data!r}")
    acked = pubacked = 0
    sent_at = [0.0] * (events + 1)
    latencies: list[float] = []
    progressed = asyncio.Event()
    if wait_acks:
        writer.write(subscribe_packet([TOPICS.events_ack(locker)]))
        first, _ = await read_packet(reader)
        if first != 0x90:
            raise RuntimeError(f"{locker}: no SUBACK")

    async def read() -> None:
        nonlocal acked, pubacked
        while True:
            first, data = await read_packet(reader)
            kind = first & 0xF0
            if kind == 0x40:  # PUBACK of one of our events
                pubacked += 1
            elif kind == 0x30:  # events/ack
                _, packet_id, payload = split_publish(first, data)
                if packet_id:
                    writer.write(puback_packet(packet_id))
                up_to = min(json.loads(payload)["up_to_seq"], events)
                if up_to > acked:
                    now = time.time()
                    latencies.extend((now - sent_at[s]) * 1000 for s in range(acked + 1, up_to + 1))
                    acked = up_to
            progressed.set()

    reader_task = asyncio.create_task(read())
    ready.set()
    await go.wait()
    first_at = time.time()
    phase = random.Random(locker).random() * pace_s
    topic = mqtt_str(TOPICS.events(locker))
    for seq in range(1, events + 1):
        if pace_s and (delay := first_at + phase + (seq - 1) * pace_s - time.time()) > 0:
            await asyncio.sleep(delay)
        while seq - 1 - pubacked >= window or (wait_acks and seq - acked > window):
            if reader_task.done():
                reader_task.result()
            progressed.clear()
            await progressed.wait()
        payload = json.dumps({"seq": seq, "id": str(uuid.uuid4()), "at": int(time.time() * 1000),
                              "type": "door_opened", "data": {"cell": seq % 24 + 1}}).encode()
        sent_at[seq] = time.time()
        writer.write(publish_packet(topic, payload, mid=seq % 65535 + 1))
    while pubacked < events or (wait_acks and acked < events):
        if reader_task.done():
            reader_task.result()
        progressed.clear()
        await progressed.wait()
    last = time.time()
    reader_task.cancel()
    writer.write(b"\xe0\x00")  # DISCONNECT
    writer.close()
    return first_at, last, latencies


async def _aiomqtt_locker(host: str, port: int, locker: str, password: str, events: int,
                          window: int, wait_acks: bool, ready: asyncio.Event,
                          go: asyncio.Event, pace_s: float = 0.0
                          ) -> tuple[float, float, list[float]]:
    """The previous generator: one aiomqtt (paho) client per locker (no ack latencies, no
    pacing)."""
    acked = 0
    progressed = asyncio.Event()
    async with aiomqtt.Client(host, port, username=locker, password=password,
                              identifier=f"bench-{locker}", socket_options=NODELAY,
                              max_inflight_messages=window) as client:
        if wait_acks:
            await client.subscribe(TOPICS.events_ack(locker), qos=1)

        async def read_acks() -> None:
            nonlocal acked
            async for message in client.messages:
                acked = max(acked, EventAck.from_payload(message.payload).up_to_seq)  # type: ignore[arg-type]
                progressed.set()

        reader = asyncio.create_task(read_acks())
        ready.set()
        await go.wait()
        first = time.time()
        topic = TOPICS.events(locker)
        for seq in range(1, events + 1):
            while wait_acks and seq - acked > window:
                progressed.clear()
                await progressed.wait()
            body = {"seq": seq, "id": str(uuid.uuid4()), "at": int(time.time() * 1000),
                    "type": "door_opened", "data": {"cell": seq % 24 + 1}}
            await client.publish(topic, json.dumps(body), qos=1)
        while wait_acks and acked < events:
            progressed.clear()
            await progressed.wait()
        last = time.time()
        reader.cancel()
        return first, last, []


GENERATORS = {"raw": _raw_locker, "aiomqtt": _aiomqtt_locker}
#: The broker's lockers' listener (the console logs in on its own, `ConsoleMqtt.port`).
LOCKER_PORT = 0


def _worker(host: str, port: int, accounts: list[tuple[str, str]], events: int, window: int,
            wait_acks: bool, ready_q: Any, go_ev: Any, out_q: Any, generator: str,
            pace_s: float) -> None:
    locker_fn = GENERATORS[generator]

    async def main() -> None:
        readies = [asyncio.Event() for _ in accounts]
        go = asyncio.Event()
        tasks = [asyncio.create_task(locker_fn(host, port, lk, pw, events, window, wait_acks, r,
                                               go, pace_s))
                 for (lk, pw), r in zip(accounts, readies, strict=True)]
        await asyncio.gather(*(r.wait() for r in readies))
        ready_q.put(len(accounts))
        await asyncio.to_thread(go_ev.wait)
        go.set()
        spans = await asyncio.wait_for(asyncio.gather(*tasks), RUN_LIMIT_S)
        out_q.put((min(s[0] for s in spans), max(s[1] for s in spans),
                   [ms for s in spans for ms in s[2]]))

    asyncio.run(main())


def _run_lockers(host: str, port: int, accounts: list[tuple[str, str]], events: int, window: int,
                 wait_acks: bool, pace_s: float = 0.0) -> tuple[list[Any], Any, Any]:
    ctx = mp.get_context("spawn")
    ready_q, out_q, go_ev = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for i in range(WORKERS):
        part = accounts[i::WORKERS]
        p = ctx.Process(target=_worker, args=(host, port, part, events, window, wait_acks,
                                              ready_q, go_ev, out_q, GENERATOR, pace_s),
                        daemon=True)
        p.start()
        procs.append(p)
    for _ in procs:
        ready_q.get(timeout=60)
    return procs, go_ev, out_q


def _collect(procs: list[Any], out_q: Any) -> tuple[float, float, list[float]]:
    spans = [out_q.get(timeout=RUN_LIMIT_S) for _ in procs]
    for p in procs:
        p.join(10)
    return (min(s[0] for s in spans), max(s[1] for s in spans),
            sorted(ms for s in spans for ms in s[2]))


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 1)


# -- runs -------------------------------------------------------------------------------------
def _check_db(db: Any, lockers: list[str], events: int) -> dict[str, Any]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(EventRow.locker, func.count(), func.count(func.distinct(EventRow.seq)),
                   func.min(EventRow.seq), func.max(EventRow.seq))
            .where(EventRow.locker.in_(lockers)).group_by(EventRow.locker)
        ).all()
        alarms = conn.scalar(select(func.count()).select_from(Alarm)
                             .where(Alarm.locker.in_(lockers)))
    complete = len(rows) == len(lockers) and all(
        (n, d, lo, hi) == (events, events, 1, events) for _, n, d, lo, hi in rows)
    return {"stored": sum(r[1] for r in rows), "complete": complete, "alarms": alarms}


async def _drop_session(mqtt: ConsoleMqtt, client_id: str) -> None:
    async with make_client(mqtt, identifier=client_id):
        pass  # a clean start drops the persistent session


async def run_ingest(mqtt: ConsoleMqtt, url: str, label: str, accounts: list[tuple[str, str]],
                     events: int, window: int) -> dict[str, Any]:
    """Live: lockers publish while the ingest stores and acks; a locker waits for acks."""
    db = open_database(url)
    client_id = f"bench-ingest-{label}-live"
    ingest = Ingest(mqtt, db, IngestSettings(client_id=client_id))
    await ingest.start()
    try:
        procs, go, out_q = await asyncio.to_thread(
            _run_lockers, mqtt.host, LOCKER_PORT, accounts, events, window, True,
            len(accounts) / RATE if RATE else 0.0)
        cpu = time.process_time()
        go.set()
        first, last, latencies = await asyncio.to_thread(_collect, procs, out_q)
        cpu = time.process_time() - cpu
    finally:
        await ingest.stop()
    await _drop_session(mqtt, client_id)
    check = _check_db(db, [lk for lk, _ in accounts], events)
    db.dispose()
    total = len(accounts) * events
    return {
        "database": label, "mode": "live", "events": total, **check,
        "offered_events_per_s": RATE or None,
        "seconds": round(last - first, 3), "events_per_s": round(total / (last - first)),
        "cpu_ms_per_event": _per_event(cpu, total),
        "ack_ms_p50": _percentile(latencies, 0.50), "ack_ms_p99": _percentile(latencies, 0.99),
        "batches": ingest.stats.batches, "acks_sent": ingest.stats.acks_sent,
    }


async def run_drain(mqtt: ConsoleMqtt, url: str, label: str, accounts: list[tuple[str, str]],
                    events: int, window: int) -> dict[str, Any]:
    """Pre-loaded: the ingest's persistent session exists but it is stopped; the lockers publish
    everything (the broker queues it); then the ingest starts and the clock runs until every
    event is stored and its events/ack published (PUBACKed by the broker). Ingest speed alone."""
    db = open_database(url)
    client_id = f"bench-ingest-{label}-drain"
    settings = IngestSettings(client_id=client_id)
    probe = Ingest(mqtt, db, settings)
    await probe.start()  # creates the session and its subscriptions
    await probe.stop()
    procs, go, out_q = await asyncio.to_thread(
        _run_lockers, mqtt.host, LOCKER_PORT, accounts, events, window, False)
    go.set()
    gen_first, gen_last, _ = await asyncio.to_thread(_collect, procs, out_q)
    total = len(accounts) * events
    ingest = Ingest(mqtt, db, settings)
    started, cpu = time.time(), time.process_time()
    await ingest.start()
    try:
        deadline, stored = started + RUN_LIMIT_S, None
        while (ingest.stats.events_new < total or ingest._ack_tasks or ingest._acks.due
               or ingest._acks.busy):
            if time.time() > deadline:
                break
            if stored is None and ingest.stats.events_new >= total:
                stored = time.time()
            await asyncio.sleep(0.002)
        ended, cpu = time.time(), time.process_time() - cpu
        if stored is None and ingest.stats.events_new >= total:
            stored = ended  # stored and acknowledged within the same poll
    finally:
        await ingest.stop()
    await _drop_session(mqtt, client_id)
    check = _check_db(db, [lk for lk, _ in accounts], events)
    db.dispose()
    return {
        "database": label, "mode": "drain", "events": total, **check,
        "seconds": round(ended - started, 3), "events_per_s": round(total / (ended - started)),
        "cpu_ms_per_event": _per_event(cpu, total), "batches": ingest.stats.batches,
        "acks_sent": ingest.stats.acks_sent,
        "preload_events_per_s": round(total / (gen_last - gen_first)),
        "all_stored_s": None if stored is None else round(stored - started, 3),
    }


async def run_raw(mqtt: ConsoleMqtt, accounts: list[tuple[str, str]], events: int,
                  window: int) -> dict[str, Any]:
    total = len(accounts) * events
    received = 0
    done = asyncio.Event()
    client = make_client(mqtt, receive_maximum=65535)
    async with client:
        await client.subscribe(TOPICS.wildcard("events"), qos=1)  # type: ignore[arg-type]

        async def count() -> None:
            nonlocal received
            async for _ in client.messages:
                received += 1
                if received >= total:
                    done.set()

        counter = asyncio.create_task(count())
        procs, go, out_q = await asyncio.to_thread(
            _run_lockers, mqtt.host, LOCKER_PORT, accounts, events, window, False)
        cpu = time.process_time()
        go.set()
        started = time.time()
        await asyncio.wait_for(done.wait(), RUN_LIMIT_S)
        ended, cpu = time.time(), time.process_time() - cpu
        first, _, _ = await asyncio.to_thread(_collect, procs, out_q)
        counter.cancel()
    return {"events": total, "received": received, "seconds": round(ended - min(first, started), 3),
            "events_per_s": round(total / (ended - min(first, started))),
            "cpu_ms_per_event": _per_event(cpu, total)}


async def main() -> None:
    global GENERATOR, LOCKER_PORT, RATE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockers", type=int, default=200)
    parser.add_argument("--events", type=int, default=100, help="events per locker")
    parser.add_argument("--window", type=int, default=20, help="unacknowledged events per locker")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="raw",
                        help="simulated lockers: raw MQTT over asyncio streams, or aiomqtt")
    parser.add_argument("--rate", type=float, default=0.0, metavar="EV_PER_S",
                        help="live runs: the fleet offers this many events/s in all (each "
                             "locker paced), for the ack latency at a given load; results go "
                             "to bench/results/ingest_paced.json")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", choices=("raw", "live", "drain"), default=None,
                        help="run only this kind of measurement (e.g. to profile it)")
    args = parser.parse_args()
    GENERATOR = args.generator
    RATE = args.rate

    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    fleet = FleetBroker(root / "registry.json", root / "data")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    # Room for the whole backlog, so that the broker never drops a queued QoS 1 message.
    fleet.settings = dataclasses.replace(fleet.settings, max_queued_messages=1_000_000)
    runs = ("raw", "sqlite-live", "sqlite-drain", "postgresql-live", "postgresql-drain")
    sets: dict[str, list[tuple[str, str]]] = {}
    with Registry.edit(fleet.registry_path) as reg:
        console_pw = reg.add_console("bench-console")
        for i_run, run in enumerate(runs):
            sets[run] = [(lk, reg.add_locker(lk)) for lk in
                         (f"B{i_run}-{i:04d}" for i in range(args.lockers))]
    fleet.start()
    LOCKER_PORT = fleet.port
    mqtt = ConsoleMqtt(host=fleet.host, port=fleet.console_port, username="bench-console",
                       password=console_pw)
    results: dict[str, Any] = {
        "lockers": args.lockers, "events_per_locker": args.events, "window": args.window,
        "generator": f"{args.generator}: {WORKERS} worker processes",
        "offered_events_per_s": args.rate or None,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
    }
    pg: PrivatePostgres | None = None
    try:
        print(f"{args.lockers} lockers x {args.events} events, window {args.window}, "
              f"generator {args.generator} in {WORKERS} processes, "
              f"Mosquitto on {fleet.host}:{fleet.port}")
        if args.only in (None, "raw"):
            results["raw_mqtt"] = await run_raw(mqtt, sets["raw"], args.events, args.window)
            print(f"raw MQTT publish -> subscriber      : "
                  f"{results['raw_mqtt']['events_per_s']:>7} events/s, "
                  f"{results['raw_mqtt']['cpu_ms_per_event']:.3f} ms CPU/event "
                  "(baseline, no database)")
        databases = [("sqlite", f"sqlite:///{root}/console.db")]
        bindir = find_pg_bin()
        if args.no_postgres or bindir is None or args.only == "raw":
            print("PostgreSQL skipped" + ("" if args.no_postgres else ": not installed"))
        else:
            databases.append(("postgresql", ""))
        for label, url in databases:
            if label == "postgresql":
                assert bindir is not None
                pg = PrivatePostgres(bindir, durable=True)
                pg.start()
                url = pg.create_database("bench")
            if args.only in (None, "live"):
                results[label] = await run_ingest(mqtt, url, label, sets[f"{label}-live"],
                                                  args.events, args.window)
                _show(results[label])
            if args.only in (None, "drain"):
                results[f"{label}_drain"] = await run_drain(
                    mqtt, url, label, sets[f"{label}-drain"], args.events, args.window)
                _show(results[f"{label}_drain"])
    finally:
        if pg is not None:
            pg.stop()
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)  # leave nothing in the system's temp directory
    keys = ("sqlite", "sqlite_drain", "postgresql", "postgresql_drain")
    ok = all(results[k]["complete"] and not results[k]["alarms"] for k in keys if k in results)
    if args.only is None:
        out = RESULTS.with_name("ingest_paced.json") if RATE else RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        target = TARGET_EVENTS_PER_S
        live = results["sqlite"]["events_per_s"]
        if RATE:  # the lockers offer RATE events/s: does the ingest keep up, acks in time?
            p99 = results["sqlite"]["ack_ms_p99"]
            met = live >= 0.95 * RATE and p99 is not None and p99 <= TARGET_ACK_P99_MS
            print(f"target: SQLite live keeps up with {RATE:.0f} events/s offered, ack p99 <= "
                  f"{TARGET_ACK_P99_MS} ms: {live} events/s, p99 {p99} ms -> "
                  f"{'MET' if met and ok else 'NOT MET'}")
        else:
            print(f"target: >= {target} events/s stored and acknowledged, SQLite, live: {live} "
                  f"-> {'MET' if live >= target and ok else 'NOT MET'}")
    if not ok:
        sys.exit("FAILED: events lost, doubled or out of sequence (see above)")


def _per_event(cpu_s: float, events: int) -> float:
    """Milliseconds of this process's CPU (every thread) per event."""
    return round(cpu_s * 1000 / events, 3)


def _show(r: dict[str, Any]) -> None:
    verdict = "all stored once, in sequence" if r["complete"] and not r["alarms"] else "INCOMPLETE"
    extra = (f"; pre-load published at {r['preload_events_per_s']}/s, all stored after "
             f"{r['all_stored_s']} s" if "preload_events_per_s" in r else "")
    if r.get("ack_ms_p99") is not None:
        extra += f"; ack p50 {r['ack_ms_p50']} ms, p99 {r['ack_ms_p99']} ms"
    print(f"ingest {r['database']:<10} {r['mode']:<5} stored+acked: {r['events_per_s']:>7} "
          f"events/s, {r['cpu_ms_per_event']:.3f} ms CPU/event "
          f"({r['stored']}/{r['events']} in {r['seconds']} s, {r['batches']} batches, "
          f"{r['acks_sent']} acks; {verdict}{extra})")


if __name__ == "__main__":
    asyncio.run(main())
