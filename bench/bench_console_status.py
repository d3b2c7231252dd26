"""Benchmark (not a test): `locker-console status` for a large fleet, from the database and live.

Run:  .venv/bin/python bench/bench_console_status.py [--lockers 10000] [--cells 16] [--runs 9]
                                                     [--live-lockers 1000] [--no-postgres]

The database part: a console database (SQLite, and PostgreSQL when installed: a private cluster)
holds 10,000 lockers x 16 cells as the ingest stores them (1 % offline, some incomplete, some
with alarms, freshness and outbox columns, one ingest replica). The real `locker-console status`
process is timed `--runs` times per variant (text, the first page of 50; `--offline`; `--alarms`;
`--json`, every locker and cell), and p50 / p99 of its wall time are printed beside the baseline
measured in the same run: a process that opens the same database and runs a bare
`SELECT count(*) FROM lockers` (interpreter, SQLAlchemy, connection), and the floor of every
`locker-console` command: a process that only imports fleet_console.cli.
The same reads are also timed in-process (totals and one page, counted in SQL) against an
in-process `SELECT count(*)`. The target is 2 s at 10,000 lockers.

The live part (kept from before, for `--live-lockers` lockers): a real Mosquitto (configured by
broker/) holds a retained status and one retained snapshot per cell for every locker; `status
--live` is timed against reading the database, and checked for its exit code (3 when it had to
stop collecting). Everything is created in a temporary folder that is removed at the end.
Writes bench/results/console_status.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from broker.fleet import FleetBroker  # noqa: E402
from fleet_console.db import queries  # noqa: E402
from fleet_console.db.engine import open_database  # noqa: E402
from fleet_console.db.models import Alarm, Cell, IngestReplica, Locker  # noqa: E402
from tests.fixtures.postgres import PrivatePostgres, find_pg_bin  # noqa: E402

CONSOLE = str(Path(sys.executable).with_name("locker-console"))
RESULTS = ROOT / "bench" / "results" / "console_status.json"


def publish_retained(fleet: FleetBroker, user: str, password: str, lockers: list[str],
                     cells: int) -> None:
    """Every locker's retained status (declaring its cells) and cell snapshots."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-status-loader")
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(1000)
    client.connect(fleet.host, fleet.console_port)
    client.loop_start()
    now = int(time.time() * 1000)
    infos = []
    for lk in lockers:
        infos.append(client.publish(f"lockers/{lk}/status", json.dumps({
            "online": True, "version": "bench", "boot_id": "b1", "started_at": now,
            "cells": list(range(1, cells + 1))}), qos=1, retain=True))
        for c in range(1, cells + 1):
            infos.append(client.publish(f"lockers/{lk}/cells/{c}", json.dumps({
                "cell": c, "state": "free", "door": "closed", "size": "M", "since": now}),
                qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def fill_database(url: str, lockers: list[str], cells: int) -> None:
    """The lockers and cells as the ingest stores them: 1 % offline, every 500th missing a
    cell, every 200th with an open alarm, freshness and outbox columns, one ingest replica."""
    db = open_database(url)
    now = int(time.time() * 1000)
    declared = list(range(1, cells + 1))
    with db.transaction() as s:
        s.execute(insert(Locker), [
            {"id": lk, "online": n % 100 != 7, "version": "bench", "boot_id": "b1",
             "started_at": now, "last_status_at": now - 30_000, "declared_cells": declared,
             "boards": [{"name": "main", "online": True, "failures": 0}],
             "last_heard_at": now - 5_000, "last_event_at": now - 6_000, "stored_seq": 100,
             "acked_seq": 100, "outbox_depth": n % 3, "outbox_oldest_at": now - 60_000}
            for n, lk in enumerate(lockers)])
        for i in range(0, len(lockers), 1000):
            s.execute(insert(Cell), [
                {"locker": lk, "cell": c, "state": "free", "door": "closed", "size": "M",
                 "since": now, "updated_at": now}
                for n, lk in enumerate(lockers[i:i + 1000], start=i) for c in declared
                if not (n % 500 == 3 and c == cells)])
        s.execute(insert(Alarm), [
            {"locker": lk, "kind": "seq_gap", "data": {"expected": 5, "got": 7}, "at": now,
             "received_at": now} for n, lk in enumerate(lockers) if n % 200 == 11])
        s.add(IngestReplica(client_id="bench-ingest", host="bench", pid=1, started_at=now,
                            last_beat_at=now, beat_interval_ms=5000, inbox_depth=0,
                            lag_p50_ms=40, lag_max_ms=300, events_per_s=100.0,
                            batches_per_s=10.0))
    db.dispose()


BASELINE = """
import sys
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1])
with engine.connect() as c:
    print(c.execute(text("SELECT count(*) FROM lockers")).scalar_one())
"""


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_s": round(statistics.median(ordered), 3), "p99_s": round(p99, 3),
            "runs": len(ordered)}


def timed_runs(argv: list[str], runs: int) -> dict[str, Any]:
    """Wall time of a process, `runs` times; p50 / p99 and what its last run printed."""
    samples = []
    out = None
    for _ in range(runs):
        started = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        samples.append(time.monotonic() - started)
        if out.returncode != 0:
            sys.exit(f"{argv[-3:]} failed ({out.returncode}): {out.stderr[-500:]}")
    assert out is not None
    return {**_percentiles(samples), "stdout_lines": len(out.stdout.splitlines()),
            "stdout_bytes": len(out.stdout)}


def in_process(url: str, runs: int) -> dict[str, Any]:
    """The command's reads (totals and one page of 50, in SQL) against a bare count(*)."""
    db = open_database(url)
    reads, counts = [], []
    try:
        for _ in range(runs):
            now = int(time.time() * 1000)
            started = time.monotonic()
            with db.transaction() as s:
                queries.fleet_totals(s, now)
                rows, _ = queries.fleet_page(s, now, queries.FleetFilter(), limit=50)
                queries.cells_of(s, [r.id for r in rows])
                queries.ingest_replicas(s)
            reads.append(time.monotonic() - started)
            started = time.monotonic()
            with db.transaction() as s:
                s.execute(select(func.count()).select_from(Locker)).scalar_one()
            counts.append(time.monotonic() - started)
    finally:
        db.dispose()
    return {"status_reads": _percentiles(reads), "baseline_count": _percentiles(counts)}


def bench_database(label: str, url: str, root: Path, lockers: list[str], cells: int,
                   runs: int, mqtt: str) -> dict[str, Any]:
    started = time.monotonic()
    fill_database(url, lockers, cells)
    filled = time.monotonic() - started
    config = root / f"console-{label}.toml"
    config.write_text(f'{mqtt}[database]\nurl = "{url}"\n')
    status = [CONSOLE, "--config", str(config), "status"]
    out: dict[str, Any] = {"fill_s": round(filled, 1)}
    out["baseline_select_count_process"] = timed_runs(
        [sys.executable, "-c", BASELINE, url], runs)
    out["baseline_cli_import_process"] = timed_runs(
        [sys.executable, "-c", "import fleet_console.cli"], runs)
    for name, extra in (("text_first_page", []), ("offline", ["--offline"]),
                        ("alarms", ["--alarms"]), ("json_all", ["--json"])):
        out[name] = timed_runs(status + extra, runs)
    out["in_process"] = in_process(url, runs * 3)
    return out


def timed_status(config: Path, *extra: str) -> dict[str, object]:
    started = time.monotonic()
    out = subprocess.run([CONSOLE, "--config", str(config), "status", *extra],
                         capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    lines = out.stdout.splitlines()
    return {"seconds": round(seconds, 2), "exit_code": out.returncode,
            "lockers_listed": sum(1 for ln in lines if ln.startswith("L")),
            "cells_listed": sum(1 for ln in lines if ln.startswith("  cell")),
            "warnings": [ln for ln in out.stderr.splitlines() if "warning" in ln][-2:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lockers", type=int, default=10_000)
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--live-lockers", type=int, default=1000,
                    help="lockers for the --live comparison (0: skip it)")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    lockers = [f"L{n:05d}" for n in range(args.lockers)]
    results: dict[str, Any] = {
        "lockers": args.lockers, "cells_per_locker": args.cells, "runs": args.runs,
        "target_s": 2.0,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    root = Path(tempfile.mkdtemp(prefix="bench-console-status-"))
    fleet = FleetBroker(root / "registry.json", root / "broker")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    fleet.start()
    pg: PrivatePostgres | None = None
    try:
        password = fleet.add_console("bench-console")
        mqtt = (f'[mqtt]\nhost = "{fleet.host}"\nport = {fleet.console_port}\n'
                f'username = "bench-console"\npassword = "{password}"\n')
        databases = [("sqlite", f"sqlite:///{root}/console.db")]
        bindir = find_pg_bin()
        if args.no_postgres or bindir is None:
            print("PostgreSQL skipped" + ("" if args.no_postgres else ": not installed"))
        else:
            pg = PrivatePostgres(bindir)
            pg.start()
            databases.append(("postgresql", pg.create_database("bench_status")))
        for label, url in databases:
            r = results[label] = bench_database(label, url, root, lockers, args.cells,
                                                args.runs, mqtt)
            base = r["baseline_select_count_process"]
            print(f"{label}: {args.lockers} lockers x {args.cells} cells (filled in "
                  f"{r['fill_s']} s); process wall time p50 / p99 over {args.runs} runs")
            print(f"  baseline: SELECT count(*) in a process   {base['p50_s']:>6} / "
                  f"{base['p99_s']:>6} s")
            imp = r["baseline_cli_import_process"]
            print(f"  floor: a process importing the CLI only  {imp['p50_s']:>6} / "
                  f"{imp['p99_s']:>6} s")
            for name in ("text_first_page", "offline", "alarms", "json_all"):
                t = r[name]
                print(f"  status {name:<32} {t['p50_s']:>6} / {t['p99_s']:>6} s  "
                      f"({t['stdout_lines']} lines)")
            ip = r["in_process"]
            print(f"  in-process reads (totals + page of 50)  {ip['status_reads']['p50_s']:>6} / "
                  f"{ip['status_reads']['p99_s']:>6} s; bare count(*) "
                  f"{ip['baseline_count']['p50_s']} / {ip['baseline_count']['p99_s']} s")
        if args.live_lockers:
            live = lockers[:args.live_lockers]
            publish_retained(fleet, "bench-console", password, live, args.cells)
            fill_database(f"sqlite:///{root}/live.db", live, args.cells)
            config = root / "console-live.toml"
            config.write_text(f'{mqtt}[database]\nurl = "sqlite:///{root}/live.db"\n')
            results["live_lockers"] = args.live_lockers
            for name, extra in (("database_sqlite", ["--limit", "0"]), ("live_broker", ["--live"]),
                                ("live_broker_max_wait_1s", ["--live", "--max-wait", "1"])):
                r = results[name] = timed_status(config, *extra)
                print(f"{args.live_lockers} lockers: status {name:<24} {r['seconds']:>6} s  exit "
                      f"{r['exit_code']}  {r['lockers_listed']} lockers, {r['cells_listed']} "
                      f"cells  {r['warnings']}")
    finally:
        if pg is not None:
            pg.stop()
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
