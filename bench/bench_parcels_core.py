"""Benchmark (not a test): the parcel business's pure core on a locker's CPU.

Run:  .venv/bin/python bench/bench_parcels_core.py [--rounds 5]

1. A `parcels` section with 10,000 recipients and 500 staff: signed by the console
   (`make_config`), then on the locker verified (`verify_config`), validated (`ConfigBody`) and
   hashed (`config_hash`) — the CPU part of "signed, published and applied in <= 2 s" (the MQTT
   hop and the store's write are measured by the end-to-end benchmarks). Baseline in the same
   run: the same pipeline for the example storage profile alone. Also the validated section's
   memory (tracemalloc), towards the 60 MB RSS budget.
2. A pickup code check against 100 live codes (HMAC, the guard), p50/p99: the core's share of
   "code entered -> unlock frame" (<= 50 ms p99 in all). Baseline: one HMAC-SHA256.
3. A staff login's PIN check (scrypt at the default cost), the price of a login.

Prints a table and writes bench/results/parcels_core.json.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile  # noqa: E402
from contract.pin_hash import hash_pin, verify_pin  # noqa: E402
from contract.profiles import ConfigBody, load_profile_file  # noqa: E402
from contract.signing import (  # noqa: E402
    config_hash,
    make_config,
    private_key_from_seed,
    public_key_b64,
    verify_config,
)
from daemon.parcels.codes import CodeBook  # noqa: E402

KEY = private_key_from_seed(b"\x07" * 32)
TRUSTED = {"k1": public_key_b64(KEY)}


def parcels_body(recipients: int, staff: int) -> dict[str, Any]:
    pin = hash_pin("2468")
    return {
        "address": "Main St 1, Springfield",
        "opening_hours": "Mon-Fri 8-20",
        "staff": [{"id": f"s{i}", "name": f"Courier {i}", "role": "courier",
                   "code": f"{100000 + i}", "pin_hash": pin} for i in range(staff)],
        "recipients": [{"id": f"r{i}", "name": f"Person Number {i}",
                        "department": f"Department {i % 40}", "number": str(i),
                        "phone": f"+4915{i:08d}", "email": f"person{i}@example.com"}
                       for i in range(recipients)],
    }


def apply_pipeline(body: dict[str, Any], rounds: int) -> dict[str, float]:
    """Sign on the console; verify, validate and hash on the locker. Seconds, best and mean."""
    sign_s, apply_s, size = [], [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        signed = make_config("L1", 2, body, key_id="k1", private_key=KEY, now_ms=0)
        wire = json.dumps(signed).encode()
        t1 = time.perf_counter()
        assert verify_config(wire, trusted_keys=TRUSTED, locker_id="L1") is None
        parsed = json.loads(wire)
        ConfigBody.from_body(parsed["body"])
        config_hash(parsed["body"])
        t2 = time.perf_counter()
        sign_s.append(t1 - t0)
        apply_s.append(t2 - t1)
        size = len(wire)
    return {"wire_bytes": size, "sign_s": round(min(sign_s), 4),
            "apply_s": round(min(apply_s), 4),
            "total_mean_s": round(statistics.mean(a + b for a, b in zip(sign_s, apply_s,
                                                                         strict=True)), 4)}


def section_memory_mb(body: dict[str, Any]) -> float:
    raw = json.loads(json.dumps(body))
    tracemalloc.start()
    section = ConfigBody.from_body(raw)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert section.parcels is not None
    return round(current / 2**20, 2)


def code_checks(n: int) -> dict[str, float]:
    book = CodeBook(b"locker-secret")
    issued = [book.issue(cell, f"+49151000{cell:05d}") for cell in range(1, 101)]
    times, base = [], []
    for i in range(n):
        code = issued[i % 100].code
        t0 = time.perf_counter()
        check = book.check(code, f"{(i % 100) + 1:04d}"[-4:], i)
        t1 = time.perf_counter()
        hmac.new(b"locker-secret", code.encode(), hashlib.sha256).hexdigest()
        t2 = time.perf_counter()
        assert check.cell == (i % 100) + 1
        times.append((t1 - t0) * 1000)
        base.append((t2 - t1) * 1000)
    return {"checks": n, "p50_ms": round(percentile(times, 50), 4),
            "p99_ms": round(percentile(times, 99), 4),
            "baseline_hmac_p99_ms": round(percentile(base, 99), 4)}


def pin_check(n: int) -> dict[str, float]:
    encoded = hash_pin("2468")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert verify_pin("2468", encoded)
        times.append((time.perf_counter() - t0) * 1000)
    return {"checks": n, "p50_ms": round(percentile(times, 50), 1),
            "max_ms": round(max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    big = {"parcels": parcels_body(10_000, 500)}
    storage = {"storage": load_profile_file(ROOT / "config" / "profile.example.toml").to_body()}
    results = {
        "parcels_section_10k_500": apply_pipeline(big, args.rounds),
        "baseline_storage_profile": apply_pipeline(storage, args.rounds),
        "parcels_section_memory_mb": section_memory_mb(big),
        "code_check_100_live": code_checks(20_000),
        "staff_pin_check": pin_check(10),
    }
    big_r, base_r = results["parcels_section_10k_500"], results["baseline_storage_profile"]
    print(f"{'pipeline':34} {'bytes':>9} {'sign s':>8} {'apply s':>8} {'mean s':>8}")
    for name, r in (("parcels 10k recipients + 500 staff", big_r),
                    ("baseline: storage profile", base_r)):
        print(f"{name:34} {r['wire_bytes']:>9} {r['sign_s']:>8} {r['apply_s']:>8} "
              f"{r['total_mean_s']:>8}")
    print(f"validated section in memory: {results['parcels_section_memory_mb']} MB")
    c = results["code_check_100_live"]
    print(f"code check, 100 live codes: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms "
          f"(one HMAC p99 {c['baseline_hmac_p99_ms']} ms)")
    p = results["staff_pin_check"]
    print(f"staff PIN check (scrypt default): p50 {p['p50_ms']} ms, max {p['max_ms']} ms")
    out = {"benchmark": "parcels_core", "python": platform.python_version(),
           "machine": platform.machine(), "results": results}
    path = ROOT / "bench" / "results" / "parcels_core.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
