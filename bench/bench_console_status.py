"""Benchmark (not a test): `locker-console status` for a large fleet, from the database and live.

Run:  .venv/bin/python bench/bench_console_status.py [--lockers 1000] [--cells 16]

A real Mosquitto (configured by broker/) holds a retained status and one retained snapshot per
cell for every locker (1,000 x 16: 17,000 retained messages); a SQLite console database holds the
same lockers and cells as the ingest stores them. The real `locker-console status` is timed as a
process, reading the database (the default) and the broker (`--live`); each run is checked for
every locker and cell line and for its exit code (3 when --live had to stop collecting).
Everything is created in a temporary folder that is removed at the end. Writes
bench/results/console_status.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from broker.fleet import FleetBroker  # noqa: E402
from fleet_console.db.engine import open_database  # noqa: E402
from fleet_console.db.models import Cell, Locker  # noqa: E402

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
    db = open_database(url)
    now = int(time.time() * 1000)
    with db.transaction() as s:
        s.add_all(Locker(id=lk, online=True, version="bench", boot_id="b1", started_at=now,
                         last_status_at=now, declared_cells=list(range(1, cells + 1)))
                  for lk in lockers)
        s.add_all(Cell(locker=lk, cell=c, state="free", door="closed", size="M", since=now,
                       updated_at=now) for lk in lockers for c in range(1, cells + 1))
    db.dispose()


def timed_status(config: Path, *extra: str) -> dict[str, object]:
    started = time.monotonic()
    out = subprocess.run([CONSOLE, "--config", str(config), "status", *extra],
                         capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    lines = out.stdout.splitlines()
    return {"seconds": round(seconds, 2), "exit_code": out.returncode,
            "lockers_listed": sum(1 for ln in lines if not ln.startswith(" ")),
            "cells_listed": sum(1 for ln in lines if ln.startswith("  cell")),
            "warnings": [ln for ln in out.stderr.splitlines() if "warning" in ln][-2:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lockers", type=int, default=1000)
    ap.add_argument("--cells", type=int, default=16)
    args = ap.parse_args()
    lockers = [f"L{n:05d}" for n in range(args.lockers)]
    with tempfile.TemporaryDirectory(prefix="bench-console-status-") as tmp:
        root = Path(tmp)
        fleet = FleetBroker(root / "registry.json", root / "broker")
        if fleet.kind != "mosquitto":
            sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
        fleet.start()
        try:
            password = fleet.add_console("bench-console")
            publish_retained(fleet, "bench-console", password, lockers, args.cells)
            fill_database(f"sqlite:///{root}/console.db", lockers, args.cells)
            config = root / "console.toml"
            config.write_text(
                f'[mqtt]\nhost = "{fleet.host}"\nport = {fleet.console_port}\n'
                f'username = "bench-console"\npassword = "{password}"\n'
                f'[database]\nurl = "sqlite:///{root}/console.db"\n')
            results = {
                "lockers": args.lockers, "cells_per_locker": args.cells,
                "retained_messages": args.lockers * (args.cells + 1),
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "database_sqlite": timed_status(config),
                "live_broker": timed_status(config, "--live"),
                "live_broker_max_wait_1s": timed_status(config, "--live", "--max-wait", "1"),
            }
        finally:
            fleet.stop()
    for name in ("database_sqlite", "live_broker", "live_broker_max_wait_1s"):
        r = results[name]
        assert isinstance(r, dict)
        print(f"status {name:<24} {r['seconds']:>6} s  exit {r['exit_code']}  "
              f"{r['lockers_listed']} lockers, {r['cells_listed']} cells  {r['warnings']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
