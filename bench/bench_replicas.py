"""Benchmark (not a test): events per second stored AND acknowledged by one ingest, by one replica
and by two replicas sharing the work (issue 16 item 5), on PostgreSQL.

Run:  .venv/bin/python bench/bench_replicas.py [--lockers 200] [--events 100] [--window 20]
      [--replicas 2] [--rounds 3]

The rig of bench/bench_ingest.py (a private Mosquitto, simulated lockers in 2 worker processes,
each locker its own connection, `--window` events not covered by an ack at most) with the
ingests as `locker-console ingest` processes, as an operator runs them, on a private PostgreSQL
cluster (fsync on). Runs, each with lockers of its own, in the same broker and database:
- baseline: one ingest without a replica name (sequencing state in memory);
- 1 replica: `--replica a` alone (state reloaded from locked rows per batch);
- N replicas: `--replica a`, `--replica b`, ... sharing `$share/...` (Mosquitto: round robin).
Figure = all events / (last ack - first publish); the runs alternate for `--rounds` rounds (the
order rotated each round, so a busy machine weighs on all alike) and the median is reported. Then
the database is checked: every locker has exactly seq 1..N once, and no alarm. Writes
bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_ingest as rig  # noqa: E402

from broker.fleet import FleetBroker  # noqa: E402
from broker.registry import Registry  # noqa: E402
from fleet_console.config import ConsoleMqtt  # noqa: E402
from fleet_console.db.engine import open_database  # noqa: E402
from tests.fixtures.postgres import PrivatePostgres, find_pg_bin  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "replicas.json"
CONSOLE = str(Path(sys.executable).with_name("locker-console"))


class IngestProcess:
    """`locker-console --config FILE ingest [--replica NAME]`; ready once it logs subscribed."""

    def __init__(self, config: Path, replica: str | None) -> None:
        args = [CONSOLE, "--config", str(config), "ingest"]
        if replica:
            args += ["--replica", replica]
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "connected to" in line:
                self.ready.set()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _config(path: Path, mqtt: ConsoleMqtt, user: str, password: str, url: str) -> Path:
    path.write_text(
        f'[mqtt]\nhost = "{mqtt.host}"\nport = {mqtt.port}\nusername = "{user}"\n'
        f'password = "{password}"\n\n[database]\nurl = "{url}"\n'
    )
    return path


async def run(label: str, replicas: list[str | None], accounts: list[tuple[str, str]],
              consoles: list[tuple[str, str]], mqtt: ConsoleMqtt, url: str, root: Path,
              events: int, window: int) -> dict[str, Any]:
    procs = []
    for i, name in enumerate(replicas):
        user, password = consoles[i]
        procs.append(IngestProcess(_config(root / f"{label}-{i}.toml", mqtt, user, password, url),
                                   name))
    try:
        for p in procs:
            if not await asyncio.to_thread(p.ready.wait, 30):
                raise RuntimeError("ingest not subscribed:\n" + "\n".join(p.lines[-20:]))
        lockers, go, out_q = await asyncio.to_thread(
            rig._run_lockers, mqtt.host, rig.LOCKER_PORT, accounts, events, window, True)
        go.set()
        first, last = await asyncio.to_thread(rig._collect, lockers, out_q)
    finally:
        for p in procs:
            p.stop()
    for i, name in enumerate(replicas):
        client_id = f"ingest-{name}" if name else "locker-console-ingest"
        user, password = consoles[i]
        await rig._drop_session(mqtt.model_copy(update={"username": user, "password": password}),
                                client_id)
    db = open_database(url)
    check = rig._check_db(db, [lk for lk, _ in accounts], events)
    db.dispose()
    total = len(accounts) * events
    return {"run": label, "ingests": len(replicas), "events": total, **check,
            "seconds": round(last - first, 3), "events_per_s": round(total / (last - first))}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockers", type=int, default=200)
    parser.add_argument("--events", type=int, default=100, help="events per locker")
    parser.add_argument("--window", type=int, default=20, help="unacknowledged events per locker")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bindir = find_pg_bin()
    if bindir is None:
        sys.exit("PostgreSQL is not installed: run make test (it installs postgresql)")
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    fleet = FleetBroker(root / "registry.json", root / "data")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    fleet.settings = dataclasses.replace(fleet.settings, max_queued_messages=1_000_000)
    names = [f"r{i}" for i in range(args.replicas)]
    plan: list[tuple[str, list[str | None]]] = [
        ("baseline (one ingest)", [None]), ("1 replica", [names[0]]),
        (f"{args.replicas} replicas", list(names)),
    ]
    sets: dict[str, list[tuple[str, str]]] = {}
    with Registry.edit(fleet.registry_path) as reg:
        consoles = [(f"bench-ingest-{i}", reg.add_console(f"bench-ingest-{i}"))
                    for i in range(args.replicas)]
        for rnd in range(args.rounds):
            for i_run, (label, _) in enumerate(plan):
                sets[f"{label}#{rnd}"] = [(lk, reg.add_locker(lk)) for lk in
                                          (f"R{rnd}-{i_run}-{i:04d}" for i in range(args.lockers))]
    fleet.start()
    rig.LOCKER_PORT = fleet.port
    mqtt = ConsoleMqtt(host=fleet.host, port=fleet.console_port)
    pg = PrivatePostgres(bindir, durable=True)
    results: dict[str, Any] = {
        "lockers": args.lockers, "events_per_locker": args.events, "window": args.window,
        "broker": "Mosquitto (shared subscriptions: round robin)", "database": "PostgreSQL",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "runs": [],
    }
    try:
        pg.start()
        url = pg.create_database("bench")
        open_database(url).dispose()  # migrated before the ingests start together
        print(f"{args.lockers} lockers x {args.events} events, window {args.window}, "
              f"PostgreSQL (fsync on), Mosquitto on {fleet.host}:{fleet.port}")
        for rnd in range(args.rounds):
            for label, replicas in plan[rnd % len(plan):] + plan[:rnd % len(plan)]:
                started = time.time()
                r = await run(label, replicas, sets[f"{label}#{rnd}"], consoles, mqtt, url,
                              root, args.events, args.window)
                results["runs"].append(r)
                verdict = ("all stored once, in sequence" if r["complete"] and not r["alarms"]
                           else "INCOMPLETE")
                print(f"round {rnd + 1} {label:<22}: {r['events_per_s']:>6} events/s stored+acked "
                      f"({r['stored']}/{r['events']} in {r['seconds']} s; {verdict}; "
                      f"run {time.time() - started:.1f} s)")
        results["median_events_per_s"] = {
            label: statistics.median(r["events_per_s"] for r in results["runs"]
                                     if r["run"] == label)
            for label, _ in plan
        }
        base = results["median_events_per_s"][plan[0][0]]
        for label, rate in results["median_events_per_s"].items():
            print(f"median {label:<22}: {rate:>6} events/s ({rate / base:.2f} x the baseline)")
    finally:
        pg.stop()
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if not all(r["complete"] and not r["alarms"] for r in results["runs"]):
        sys.exit("FAILED: events lost, doubled or out of sequence (see above)")


if __name__ == "__main__":
    asyncio.run(main())
