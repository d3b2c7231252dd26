"""Benchmark (not a test): locker accounts one by one (`add-locker`) and in bulk (`add-lockers`).

Run:  .venv/bin/python bench/bench_accounts.py [--bulk 10000] [--one-by-one 100]

In the same run: `locker-broker add-locker` as one process per account for --one-by-one accounts
(the rate gives the time the old path would take for --bulk), then one `locker-broker add-lockers
--count N --reload` into a running Mosquitto (configured by `locker-broker config`) and the time
until its first and last new lockers log in (a real MQTT CONNECT). The hashing alone is timed
in-process on one core and on every core. Everything lives in a temporary folder that is removed
at the end. Writes bench/results/accounts.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.bulk import hash_all, usable_cores  # noqa: E402
from broker.passwords import DEFAULT_ITERATIONS, new_password  # noqa: E402
from broker.registry import Registry  # noqa: E402
from broker.runner import MosquittoProcess, free_port  # noqa: E402

LOCKER_BROKER = str(Path(sys.executable).with_name("locker-broker"))
RESULTS = ROOT / "bench" / "results" / "accounts.json"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([LOCKER_BROKER, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"locker-broker {' '.join(args)} failed: {done.stderr}")
    return done


def one_by_one(root: Path, count: int) -> dict[str, float]:
    env = {"LOCKER_BROKER_REGISTRY": str(root / "one" / "registry.json")}
    started = time.perf_counter()
    for n in range(1, count + 1):
        cli("add-locker", f"A{n}", env=env)
    seconds = time.perf_counter() - started
    assert len(Registry.load(root / "one" / "registry.json").lockers()) == count
    return {"accounts": count, "seconds": round(seconds, 2),
            "accounts_per_s": round(count / seconds, 1)}


def bulk_into_running_broker(root: Path, count: int) -> dict[str, object]:
    data = root / "bulk" / "broker"
    env = {"LOCKER_BROKER_REGISTRY": str(root / "bulk" / "registry.json"),
           "LOCKER_BROKER_DATA_DIR": str(data)}
    cli("add-console", "ops", env=env)
    port = free_port()
    cli("config", "--port", str(port), "--console-port", str(free_port()), env=env)
    out = root / "bulk" / "credentials.csv"
    with MosquittoProcess(data / "mosquitto.conf", port=port) as mosquitto:
        started = time.perf_counter()
        done = cli("add-lockers", "--count", str(count), "--prefix", "B", "--out", str(out),
                   "--reload", env=env)
        command_s = time.perf_counter() - started
        with out.open(newline="") as fh:
            creds = dict(list(csv.reader(fh))[1:])
        logins = {}
        for locker in (f"B{count}", "B1"):
            if not mosquitto.wait_login(locker, creds[locker], timeout=10):
                raise SystemExit(f"{locker} cannot log in after add-lockers --reload")
            logins[locker] = round(time.perf_counter() - started, 2)
    assert len(creds) == count
    assert len(Registry.load(root / "bulk" / "registry.json").lockers()) == count
    return {"accounts": count, "seconds": round(command_s, 2),
            "accounts_per_s": round(count / command_s, 1),
            "login_s_after_start": logins,
            "progress_lines": sum("hashed" in ln for ln in done.stderr.splitlines())}


def hashing(count: int) -> dict[str, float]:
    passwords = [new_password() for _ in range(count)]
    figures = {}
    for workers in sorted({1, usable_cores()}):
        started = time.perf_counter()
        hash_all(passwords, workers=workers)
        figures[f"{workers}_cores_s"] = round(time.perf_counter() - started, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=10_000)
    parser.add_argument("--one-by-one", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        root = Path(tmp)
        old = one_by_one(root, args.one_by_one)
        new = bulk_into_running_broker(root, args.bulk)
        hashes = hashing(args.bulk)
    old_for_bulk = args.bulk / old["accounts_per_s"]
    results = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cores": usable_cores()},
        "hash": f"$7$ PBKDF2-SHA512, {DEFAULT_ITERATIONS} iterations (unchanged)",
        "one_by_one_add_locker": {**old, "extrapolated_s_for_bulk": round(old_for_bulk, 1)},
        "bulk_add_lockers_reload": new,
        "hashing_only": hashes,
        "speedup": round(old_for_bulk / float(new["seconds"]), 1),  # type: ignore[arg-type]
    }
    print(f"one by one: {old['accounts']} accounts in {old['seconds']} s "
          f"({old['accounts_per_s']}/s; {args.bulk} would take {old_for_bulk:.0f} s)")
    print(f"add-lockers --reload: {new['accounts']} accounts in {new['seconds']} s "
          f"({new['accounts_per_s']}/s); logins after start: {new['login_s_after_start']}")
    print(f"hashing {args.bulk} passwords alone: {hashes}")
    print(f"speed-up: {results['speedup']}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
