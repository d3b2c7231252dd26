"""Benchmark (not a test): lockerd's memory, idle CPU and door-change latency at 480 cells.

Run:  .venv/bin/python bench/bench_daemon.py [--seconds 10] [--changes 200]

Ten Kerong CU48 boards (480 cells) on one simulated bus over a real pseudo-terminal, polled every
100 ms by a real lockerd process (MQTT link off). Measures:
- resident memory (VmRSS) once the daemon is ready and has polled for a while;
- idle CPU: the daemon's user+system time over `--seconds` with no door moving, in % of one core;
- door change -> persisted transition: a door is forced open (then closed) in the simulator and
  the time until lockerd prints the event line (it prints only after the atomic commit) is taken.
  Each change happens at a random phase of the poll cycle. The baseline in the same run is the
  poll interval itself: a change can wait up to one interval before the next poll sees it.
  Target p99 <= poll interval + 20 ms.
Baseline for idle CPU, same run: a bare blocking pyserial loop sending the same polls (before
lockerd starts, as a bus has one master). Targets: RSS <= 60 MB, idle CPU <= 3 %. Writes
bench/results/daemon.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile, rss_mb  # noqa: E402
from board_sim.simulator import PtySimulator  # noqa: E402
from tests.fixtures.lockerd import LockerdProcess, locker_toml  # noqa: E402

BOARDS, LOCKS, POLL_MS = 10, 48, 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


#: The baseline: the same polls by a bare blocking pyserial loop (the codec's frames, a reply read
#: until it decodes), with no daemon around them. It prints its own CPU seconds over the window.
RAW_POLLER = """
import sys, time, serial
from daemon.io.boards.kerong_cu48 import Cu48Codec
path, boards, poll_s, seconds = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:5])
codecs = [Cu48Codec(a) for a in range(boards)]
port = serial.Serial(path, 9600, timeout=0.1)
def cycle():
    for codec in codecs:
        port.write(codec.status_request())
        reply = b""
        while True:
            reply += port.read(1) + port.read(port.in_waiting)
            try:
                codec.decode_status(reply)
                break
            except Exception:
                if len(reply) > 256:
                    raise SystemExit("no reply")
        time.sleep(0.005)  # the frame gap, as lockerd keeps it
for _ in range(10):
    cycle()
c0, t0 = time.process_time(), time.monotonic()
while time.monotonic() - t0 < seconds:
    started = time.monotonic()
    cycle()
    time.sleep(max(0.0, poll_s - (time.monotonic() - started)))
print(100 * (time.process_time() - c0) / (time.monotonic() - t0))
"""


def raw_poll_cpu(path: str, seconds: float) -> float:
    """Idle CPU, in % of one core, of a bare pyserial loop polling the same boards as often."""
    out = subprocess.run(
        [sys.executable, "-c", RAW_POLLER, path, str(BOARDS), str(POLL_MS / 1000), str(seconds)],
        capture_output=True, text=True, timeout=seconds + 30, cwd=ROOT, check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="idle CPU window")
    ap.add_argument("--changes", type=int, default=200, help="door changes to time")
    args = ap.parse_args()

    sim = PtySimulator("kerong-cu48", boards=BOARDS, locks=LOCKS).start()
    raw_cpu = raw_poll_cpu(sim.path, args.seconds)  # before lockerd: one master per bus
    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    boards = [
        {
            "name": f"b{i}",
            "protocol": "kerong-cu48",
            "port": sim.path,
            "address": i,
            "poll_interval_ms": POLL_MS,
        }
        for i in range(BOARDS)
    ]
    cells = [
        {"id": b * LOCKS + lock, "board": f"b{b}", "lock": lock, "size": "M"}
        for b in range(BOARDS)
        for lock in range(1, LOCKS + 1)
    ]
    config = work / "locker.toml"
    timing = {"door_left_open_s": 3600, "unlock_confirm_s": 3}
    config.write_text(locker_toml("BENCH", work / "data", boards, cells, timing))
    daemon = LockerdProcess(config).start(timeout=60)
    pid = daemon.proc.pid
    try:
        time.sleep(2.0)  # let it settle into steady polling
        rss = rss_mb(pid)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        idle_cpu = 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        rss_after = rss_mb(pid)

        latencies: list[float] = []
        rng = random.Random(1)
        for i in range(args.changes):
            board, lock = i % BOARDS, 1 + (i * 7) % LOCKS
            cell = board * LOCKS + lock
            for action, event in ((sim.force_open, "forced_open"), (sim.close_door, "door_closed")):
                # A random phase against the poll cycle, or every change would wait a whole one.
                time.sleep(rng.uniform(0, POLL_MS / 1000))
                mark = daemon.mark
                started = time.monotonic()
                action(board, lock)
                daemon.wait_event(event, cell=cell, since=mark, timeout=5)
                latencies.append((time.monotonic() - started) * 1000)
            assert daemon.ctl("unblock", cell)["ok"]
        figures = {
            "cells": BOARDS * LOCKS,
            "boards": BOARDS,
            "poll_interval_ms": POLL_MS,
            "rss_mb": round(max(rss, rss_after), 1),
            "idle_cpu_percent_of_one_core": round(idle_cpu, 2),
            "baseline_raw_pyserial_poll_cpu_percent": round(raw_cpu, 2),
            "door_change_to_persisted_ms": {
                "n": len(latencies),
                "p50": round(statistics.median(latencies), 1),
                "p99": round(percentile(latencies, 99), 1),
                "max": round(max(latencies), 1),
                "baseline_poll_interval": POLL_MS,
                "target_p99": POLL_MS + 20,
            },
            "targets": {"rss_mb": 60, "idle_cpu_percent": 3},
        }
    finally:
        daemon.terminate()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)  # leave nothing in the system's temp directory
    print(json.dumps(figures, indent=2))
    lat = figures["door_change_to_persisted_ms"]
    print(
        f"\nlockerd, {BOARDS} CU48 boards / {BOARDS * LOCKS} cells polled every {POLL_MS} ms:\n"
        f"  RSS {figures['rss_mb']} MB (target <= 60)  "
        f"idle CPU {figures['idle_cpu_percent_of_one_core']} % of one core (target <= 3; "
        f"a bare pyserial loop polling the same boards, same run: {round(raw_cpu, 2)} %)\n"
        f"  door change -> persisted transition: p50 {lat['p50']} ms, p99 {lat['p99']} ms "
        f"(target p99 <= {POLL_MS + 20} ms = poll interval + 20)"
    )
    out = ROOT / "bench" / "results" / "daemon.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
