"""Benchmark (not a test): a connect storm that overflows the ingest's queue, and resync.

Run:  .venv/bin/python bench/bench_resync_storm.py [--lockers 300] [--cells 16] [--queue 1000]

A private Mosquitto (broker.fleet.FleetBroker, loopback) whose generated configuration queues
`--queue` messages per client (fleet_size 0: not sized for the fleet), and `--lockers` real
`FleetLink`s in this process, each with `--cells` cells declared in its status. The ingest's
persistent session exists but the ingest is away while every locker connects and publishes its
status and cells (the storm); then, in the same run:
- baseline: the ingest comes back without resync (`resync_check_s = 0`) and drains what the
  broker kept: statuses and cells stored (the rest was dropped and never comes back);
- resync: the same session with resync on (defaults but a 1 s check and 2 s grace): the time
  until every status and every declared cell is in the database, and the requests it took;
- sized: a second broker configured with `--fleet-size N` (the queue sized for the whole fleet)
  and the same storm without resync: what is stored then.
SQLite. Writes bench/results/resync_storm.json. Bounded: 120 s per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from broker.bulk import add_lockers, ids_from_count  # noqa: E402
from broker.fleet import FleetBroker  # noqa: E402
from broker.registry import Registry  # noqa: E402
from daemon.config import MqttSettings  # noqa: E402
from daemon.io.fleet_link import FleetLink  # noqa: E402
from fleet_console.config import ConsoleMqtt  # noqa: E402
from fleet_console.db.engine import make_engine, open_database  # noqa: E402
from fleet_console.db.models import Cell, Locker  # noqa: E402
from fleet_console.ingest import Ingest, IngestSettings  # noqa: E402
from tests.fixtures.quiet_locker import QuietLockerPort  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "resync_storm.json"
LIMIT_S = 120.0


def stored(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            statuses = conn.scalar(select(func.count()).select_from(Locker)
                                   .where(Locker.last_status_at.is_not(None)))
            cells = conn.scalar(select(func.count()).select_from(Cell))
            return int(statuses or 0), int(cells or 0)
    finally:
        engine.dispose()


async def wait_quiet(ingest: Ingest, quiet_s: float = 1.5) -> None:
    """Until the ingest stored something and then nothing new for `quiet_s`."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        if ingest.stats.messages != last:
            last, since = ingest.stats.messages, time.monotonic()
        elif last > 0 and time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.05)


class Storm:
    """One broker, its accounts, the ingest's session, and the fleet's links."""

    def __init__(self, root: Path, lockers: int, cells: int, queue: int, fleet_size: int) -> None:
        self.cells, self.lockers = cells, lockers
        self.broker = FleetBroker(root / "registry.json", root / "data")
        if self.broker.kind != "mosquitto":
            raise SystemExit("this benchmark needs Mosquitto")
        self.broker.settings = replace(self.broker.settings, max_queued_messages=queue,
                                       fleet_size=fleet_size)
        with Registry.edit(self.broker.registry_path) as reg:
            self.accounts = add_lockers(reg, ids_from_count("B", lockers, digits=5))
            console_pw = reg.add_console("bench")
        self.mqtt = ConsoleMqtt(host=self.broker.host, port=self.broker.console_port,
                                username="bench", password=console_pw)
        self.url = f"sqlite:///{root}/console.db"
        self.client_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        self.links: list[FleetLink] = []
        self.tasks: list[asyncio.Task[None]] = []

    def ingest(self, **settings: Any) -> Ingest:
        return Ingest(self.mqtt, open_database(self.url),
                      IngestSettings(client_id=self.client_id, **settings))

    async def connect_fleet(self) -> float:
        """Every locker connects at once; seconds until all published status and cells."""
        started = time.perf_counter()
        for lid, pw in self.accounts:
            settings = MqttSettings(host=self.broker.host, port=self.broker.port, username=lid,
                                    password=pw, keepalive=30)
            link = FleetLink(QuietLockerPort(lid, self.cells), settings, log=lambda *a, **k: None,
                             reconnect_spread=1.0)
            self.links.append(link)
            self.tasks.append(asyncio.create_task(link.run()))
        deadline = time.monotonic() + LIMIT_S
        while not all(lk.stats.cells_published >= self.cells for lk in self.links):
            if time.monotonic() > deadline:
                raise SystemExit("the fleet did not connect in time")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.broker.stop()


async def without_resync(storm: Storm) -> dict[str, Any]:
    """The ingest away during the storm, then back without resync: what it gets."""
    away = storm.ingest(resync_check_s=0)
    await away.start()
    await away.stop()
    away.db.dispose()
    connect_s = await storm.connect_fleet()
    back = storm.ingest(resync_check_s=0)
    await back.start()
    await wait_quiet(back)
    await back.stop()
    back.db.dispose()
    statuses, cells = stored(storm.url)
    return {"fleet_connect_s": round(connect_s, 2), "statuses_stored": statuses,
            "cells_stored": cells, "statuses_expected": storm.lockers,
            "cells_expected": storm.lockers * storm.cells}


async def with_resync(storm: Storm) -> dict[str, Any]:
    """The same session with resync on: seconds until everything is stored."""
    ingest = storm.ingest(resync_check_s=1.0, resync_grace_s=2.0)
    started = time.perf_counter()
    await ingest.start()
    want = (storm.lockers, storm.lockers * storm.cells)
    deadline = time.monotonic() + LIMIT_S
    got = stored(storm.url)
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        got = stored(storm.url)
    seconds = time.perf_counter() - started
    await ingest.stop()
    ingest.db.dispose()
    return {"complete": got == want, "seconds_to_complete": round(seconds, 2),
            "statuses_stored": got[0], "cells_stored": got[1],
            "resync_requests": ingest.stats.resyncs_asked,
            "republishes": sum(lk.stats.resyncs_done for lk in storm.links),
            "locker_reconnects": sum(lk.stats.connects - 1 for lk in storm.links)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lockers": args.lockers, "cells": args.cells, "max_queued_messages": args.queue,
        "machine": f"{platform.machine()} {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory(prefix="bench-resync-") as tmp:
        storm = Storm(Path(tmp) / "small", args.lockers, args.cells, args.queue, 0)
        storm.broker.start()
        try:
            out["baseline_without_resync"] = await without_resync(storm)
            print("baseline (queue not sized, no resync):", out["baseline_without_resync"])
            out["with_resync"] = await with_resync(storm)
            print("with resync:", out["with_resync"])
        finally:
            await storm.close()
        sized = Storm(Path(tmp) / "sized", args.lockers, args.cells, args.queue, args.lockers)
        sized.broker.start()
        try:
            out["queue_sized_for_fleet"] = await without_resync(sized)
            print("queue sized by --fleet-size, no resync:", out["queue_sized_for_fleet"])
        finally:
            await sized.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockers", type=int, default=300)
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--queue", type=int, default=1000)
    parser.add_argument("--verbose", action="store_true", help="the ingest's log lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.verbose:
        logging.getLogger("fleet_console").setLevel(logging.INFO)
    out = asyncio.run(main_async(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
