"""Benchmark (not a test): events per second the console's ingest stores AND acknowledges.

Run:  .venv/bin/python bench/bench_ingest.py [--lockers 200] [--events 100] [--window 20]

A private Mosquitto (broker.fleet.FleetBroker, loopback, its own registry with one account per
locker) and simulated lockers in 2 worker processes (aiomqtt, each locker its own connection and
credentials). Each locker publishes `--events` events QoS 1 as fast as it can, keeping at most
`--window` events unacknowledged (what a locker's durable outbox does); a locker is finished when
`events/ack` covers its last seq. The figure is all events / (last ack - first publish), for the
ingest on SQLite (WAL, synchronous=NORMAL) and on PostgreSQL (a private cluster, fsync on). Then
the database is checked: every locker has exactly seq 1..N once, and no alarm. Beside it, the
baseline: the same lockers publish the same number of events through the same broker to one
plain subscriber (no database, no acks). Prints a table and writes bench/results/ingest.json.
Bounded: at most lockers x events events per run, and a 120 s limit per run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import platform
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
from fleet_console.db import Alarm, EventRow, open_database  # noqa: E402
from fleet_console.ingest import Ingest, IngestSettings  # noqa: E402
from fleet_console.mqtt import NODELAY, make_client  # noqa: E402
from tests.fixtures.postgres import PrivatePostgres, find_pg_bin  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ingest.json"
TOPICS = Topics()
WORKERS = 2
RUN_LIMIT_S = 120.0


# -- simulated lockers (worker processes) -----------------------------------------------------
async def _locker(host: str, port: int, locker: str, password: str, events: int, window: int,
                  wait_acks: bool, ready: asyncio.Event, go: asyncio.Event) -> tuple[float, float]:
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
        return first, last


def _worker(host: str, port: int, accounts: list[tuple[str, str]], events: int, window: int,
            wait_acks: bool, ready_q: Any, go_ev: Any, out_q: Any) -> None:
    async def main() -> None:
        readies = [asyncio.Event() for _ in accounts]
        go = asyncio.Event()
        tasks = [asyncio.create_task(_locker(host, port, lk, pw, events, window, wait_acks, r, go))
                 for (lk, pw), r in zip(accounts, readies, strict=True)]
        await asyncio.gather(*(r.wait() for r in readies))
        ready_q.put(len(accounts))
        await asyncio.to_thread(go_ev.wait)
        go.set()
        spans = await asyncio.wait_for(asyncio.gather(*tasks), RUN_LIMIT_S)
        out_q.put((min(s[0] for s in spans), max(s[1] for s in spans)))

    asyncio.run(main())


def _run_lockers(host: str, port: int, accounts: list[tuple[str, str]], events: int, window: int,
                 wait_acks: bool) -> tuple[list[Any], Any, Any]:
    ctx = mp.get_context("spawn")
    ready_q, out_q, go_ev = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for i in range(WORKERS):
        part = accounts[i::WORKERS]
        p = ctx.Process(target=_worker, args=(host, port, part, events, window, wait_acks,
                                              ready_q, go_ev, out_q), daemon=True)
        p.start()
        procs.append(p)
    for _ in procs:
        ready_q.get(timeout=60)
    return procs, go_ev, out_q


def _collect(procs: list[Any], out_q: Any) -> tuple[float, float]:
    spans = [out_q.get(timeout=RUN_LIMIT_S) for _ in procs]
    for p in procs:
        p.join(10)
    return min(s[0] for s in spans), max(s[1] for s in spans)


# -- runs -------------------------------------------------------------------------------------
async def run_ingest(mqtt: ConsoleMqtt, url: str, label: str, accounts: list[tuple[str, str]],
                     events: int, window: int) -> dict[str, Any]:
    db = open_database(url)
    ingest = Ingest(mqtt, db, IngestSettings(client_id=f"bench-ingest-{label}"))
    await ingest.start()
    try:
        procs, go, out_q = await asyncio.to_thread(
            _run_lockers, mqtt.host, mqtt.port, accounts, events, window, True)
        go.set()
        first, last = await asyncio.to_thread(_collect, procs, out_q)
    finally:
        await ingest.stop()
    async with make_client(mqtt, identifier=f"bench-ingest-{label}"):
        pass  # a clean start drops the persistent session
    lockers = [lk for lk, _ in accounts]
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(EventRow.locker, func.count(), func.count(func.distinct(EventRow.seq)),
                   func.min(EventRow.seq), func.max(EventRow.seq))
            .where(EventRow.locker.in_(lockers)).group_by(EventRow.locker)
        ).all()
        alarms = conn.scalar(select(func.count()).select_from(Alarm)
                             .where(Alarm.locker.in_(lockers)))
    db.dispose()
    complete = len(rows) == len(lockers) and all(
        (n, d, lo, hi) == (events, events, 1, events) for _, n, d, lo, hi in rows)
    total = len(lockers) * events
    stored = sum(r[1] for r in rows)
    return {
        "database": label, "events": total, "stored": stored, "complete": complete,
        "alarms": alarms, "seconds": round(last - first, 3),
        "events_per_s": round(total / (last - first)),
        "batches": ingest.stats.batches, "acks_sent": ingest.stats.acks_sent,
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
            _run_lockers, mqtt.host, mqtt.port, accounts, events, window, False)
        go.set()
        started = time.time()
        await asyncio.wait_for(done.wait(), RUN_LIMIT_S)
        ended = time.time()
        first, _ = await asyncio.to_thread(_collect, procs, out_q)
        counter.cancel()
    return {"events": total, "received": received, "seconds": round(ended - min(first, started), 3),
            "events_per_s": round(total / (ended - min(first, started)))}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockers", type=int, default=200)
    parser.add_argument("--events", type=int, default=100, help="events per locker")
    parser.add_argument("--window", type=int, default=20, help="unacknowledged events per locker")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    fleet = FleetBroker(root / "registry.json", root / "data")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    # Room for the whole backlog, so that the broker never drops a queued QoS 1 message.
    fleet.settings = dataclasses.replace(fleet.settings, max_queued_messages=1_000_000)
    sets: dict[str, list[tuple[str, str]]] = {}
    with Registry.edit(fleet.registry_path) as reg:
        console_pw = reg.add_console("bench-console")
        for run in ("raw", "sqlite", "postgresql"):
            sets[run] = [(f"B{run[0]}-{i:04d}", "") for i in range(args.lockers)]
            sets[run] = [(lk, reg.add_locker(lk)) for lk, _ in sets[run]]
    fleet.start()
    mqtt = ConsoleMqtt(host=fleet.host, port=fleet.port, username="bench-console",
                       password=console_pw)
    results: dict[str, Any] = {
        "lockers": args.lockers, "events_per_locker": args.events, "window": args.window,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    pg: PrivatePostgres | None = None
    try:
        print(f"{args.lockers} lockers x {args.events} events, window {args.window}, "
              f"Mosquitto on {fleet.host}:{fleet.port}")
        results["raw_mqtt"] = await run_raw(mqtt, sets["raw"], args.events, args.window)
        print(f"raw MQTT publish -> subscriber : {results['raw_mqtt']['events_per_s']:>7} events/s")
        results["sqlite"] = await run_ingest(mqtt, f"sqlite:///{root}/console.db", "sqlite",
                                             sets["sqlite"], args.events, args.window)
        _show(results["sqlite"])
        bindir = find_pg_bin()
        if args.no_postgres or bindir is None:
            print("PostgreSQL skipped" + ("" if args.no_postgres else ": not installed"))
        else:
            pg = PrivatePostgres(bindir, durable=True)
            pg.start()
            url = pg.create_database("bench")
            results["postgresql"] = await run_ingest(mqtt, url, "postgresql",
                                                     sets["postgresql"], args.events, args.window)
            _show(results["postgresql"])
    finally:
        if pg is not None:
            pg.stop()
        fleet.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = all(results[k]["complete"] and not results[k]["alarms"]
             for k in ("sqlite", "postgresql") if k in results)
    if not ok:
        sys.exit("FAILED: events lost, doubled or out of sequence (see above)")


def _show(r: dict[str, Any]) -> None:
    verdict = "all stored once, in sequence" if r["complete"] and not r["alarms"] else "INCOMPLETE"
    print(f"ingest {r['database']:<10} stored+acked : {r['events_per_s']:>7} events/s "
          f"({r['stored']}/{r['events']} in {r['seconds']} s, {r['batches']} batches; {verdict})")


if __name__ == "__main__":
    asyncio.run(main())
