"""Benchmark (not a test): the kiosk API of a storage locker, as the touch screen feels it.

Run:  .venv/bin/python bench/bench_kiosk.py [--requests 500] [--rentals 30]

A real lockerd (kiosk API on, simulated card terminal, Modbus relay board on a pseudo-terminal,
30 ms polling) and an HTTP client on the same machine. Measures:
- baseline: `GET /api/v1/health` round trip (uvicorn + FastAPI, no locker logic);
- `POST /cells/{cell}/account`: PIN check and bill of a running rental;
- rental: `POST /rentals/{id}/start` (charge + durable commit + unlock frame) until the simulator
  sees the door open, and pickup until the door opens;
- lockerd's resident memory with the kiosk API loaded.
Writes bench/results/kiosk.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile, rss_mb  # noqa: E402
from board_sim.simulator import PtySimulator  # noqa: E402
from tests.fixtures.lockerd import LockerdProcess, locker_toml  # noqa: E402
from tests.fixtures.storage_locker import CELLS, free_port, profile_toml  # noqa: E402


def timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def wait(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_kiosk: timed out waiting for {what}")
        time.sleep(0.0005)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rentals", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PtySimulator("modbus-relay", 1, 6) as sim:
        root = Path(tmp)
        (root / "profile.toml").write_text(profile_toml(mode="prepaid"))
        port = free_port()
        extra = (f'profile = "{root / "profile.toml"}"\n[kiosk]\nenabled = true\nport = {port}\n'
                 '[payment]\nadapter = "simulator"\n')
        board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path,
                 "poll_interval_ms": 30}
        config = root / "locker.toml"
        config.write_text(locker_toml("B1", root / "data", [board], CELLS, extra=extra))
        d = LockerdProcess(config).start()
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)
            wait(lambda: http.get("/health").json()["ready"], "the kiosk API")
            health = timed(lambda: http.get("/health"), args.requests)

            to_door, pickup_door = [], []
            pin, cell = "", 0
            for i in range(args.rentals):
                rental = http.post("/rentals", json={"size": "M", "period_s": 3600}).json()
                cell = rental["cell"]
                mark = d.mark
                started = time.perf_counter()
                http.post(f"/rentals/{rental['rental_id']}/start").raise_for_status()
                wait(lambda c=cell: sim.door_open(0, c), "the door to open")
                to_door.append((time.perf_counter() - started) * 1000)
                d.wait_event("door_opened", cell=cell, since=mark)  # seen by lockerd, too
                sim.close_door(0, cell)
                wait(lambda r=rental: http.get(f"/rentals/{r['rental_id']}").json()["state"]
                     == "occupied", "the rental to start")
                pin = http.get(f"/rentals/{rental['rental_id']}").json()["pin"]
                if i == args.rentals - 1:
                    break  # keep the last one running for the account figures
                mark = d.mark
                started = time.perf_counter()
                http.post(f"/cells/{cell}/pickup", json={"pin": pin}).raise_for_status()
                wait(lambda c=cell: sim.door_open(0, c), "the door to open for pickup")
                pickup_door.append((time.perf_counter() - started) * 1000)
                d.wait_event("door_opened", cell=cell, since=mark)
                sim.close_door(0, cell)
                wait(lambda c=cell: d.cell(c)["state"] == "free", "the cell to be free")
            account = timed(lambda: http.post(f"/cells/{cell}/account", json={"pin": pin}),
                            args.requests)
            assert d.proc is not None
            rss = rss_mb(d.proc.pid)
        finally:
            d.terminate()

    def fig(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(percentile(values, 99), 2)}

    results = {
        "health_baseline": fig(health),
        "account": fig(account),
        "rental_start_to_door_open": fig(to_door),
        "pickup_to_door_open": fig(pickup_door),
        "rss_mb": round(rss, 1),
        "requests": args.requests,
        "rentals": args.rentals,
    }
    ratio = results["account"]["p50_ms"] / max(results["health_baseline"]["p50_ms"], 0.001)
    results["account_vs_baseline"] = round(ratio, 2)
    print(f"GET /health (baseline)          p50 {results['health_baseline']['p50_ms']} ms  "
          f"p99 {results['health_baseline']['p99_ms']} ms")
    print(f"POST /cells/N/account           p50 {results['account']['p50_ms']} ms  "
          f"p99 {results['account']['p99_ms']} ms  ({ratio:.2f}x baseline)")
    print(f"rental start -> door open       p50 {results['rental_start_to_door_open']['p50_ms']} "
          f"ms  p99 {results['rental_start_to_door_open']['p99_ms']} ms")
    print(f"pickup -> door open             p50 {results['pickup_to_door_open']['p50_ms']} ms  "
          f"p99 {results['pickup_to_door_open']['p99_ms']} ms")
    print(f"lockerd RSS with the kiosk API  {results['rss_mb']} MB")
    out = ROOT / "bench" / "results" / "kiosk.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
