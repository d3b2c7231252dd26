"""Benchmark (not a test): recipient search at the kiosk as a courier types (issue 12).

Run:  .venv/bin/python bench/bench_recipient_search.py [--recipients 10000]

10,000 generated recipients (Russian and English names, departments, numbers). Every prefix of
typing sequences (a surname, "surname first", a department, a number, a Latin name, a
substring) is one query, as each keystroke is. Measures p50/p99 per query of
daemon.parcels.directory beside a baseline in the same run: a bare linear scan that folds
every record per query (what a first version would do); the index's build time and memory.
Writes bench/results/recipient_search.json. Target: p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile  # noqa: E402
from bench.recipient_names import recipients  # noqa: E402
from contract.recipients import Recipient  # noqa: E402
from daemon.parcels.directory import RecipientDirectory, fold  # noqa: E402

TYPED = ["Смирнова Елена", "иванов ал", "Семенов", "фёдоров", "бухгалтерия", "отдел кадров",
         "10567", "5000", "Johnson", "mary smi", "Wilson J", "ова", "son", "Юлия"]


def linear_scan(people: list[Recipient], typed: str, limit: int = 20) -> list[str]:
    """The baseline: fold every record, keep those containing every typed word."""
    words = fold(typed).split()
    if not words:
        return []
    hits = []
    for r in people:
        text = fold(f"{r.name} {r.department or ''} {r.number or ''}")
        if all(w in text for w in words):
            hits.append((text, r.id))
    hits.sort()
    return [i for _, i in hits[:limit]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=10_000)
    args = ap.parse_args()
    people = recipients(args.recipients)
    queries = [seq[:n] for seq in TYPED for n in range(1, len(seq) + 1)]

    tracemalloc.start()
    started = time.perf_counter()
    directory = RecipientDirectory.load(people)
    build_ms = (time.perf_counter() - started) * 1000
    memory_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()

    def timed(fn, rounds: int) -> list[float]:
        out = []
        for _ in range(rounds):
            for q in queries:
                t = time.perf_counter()
                fn(q)
                out.append((time.perf_counter() - t) * 1000)
        return out

    index_ms = timed(directory.search, 5)
    scan_ms = timed(lambda q: linear_scan(people, q), 1)
    result = {
        "recipients": len(people),
        "queries": len(queries),
        "index": {"p50_ms": round(percentile(index_ms, 50), 3),
                  "p99_ms": round(percentile(index_ms, 99), 3),
                  "max_ms": round(max(index_ms), 3)},
        "baseline_linear_scan": {"p50_ms": round(percentile(scan_ms, 50), 3),
                                 "p99_ms": round(percentile(scan_ms, 99), 3)},
        "build_ms": round(build_ms, 1),
        "index_memory_mb": round(memory_mb, 2),
        "target_p99_ms": 20,
    }
    print(f"{len(people)} recipients, {len(queries)} keystroke queries")
    print(f"index      p50 {result['index']['p50_ms']:8.3f} ms  p99 "
          f"{result['index']['p99_ms']:8.3f} ms  (target p99 <= 20 ms)")
    print(f"linear     p50 {result['baseline_linear_scan']['p50_ms']:8.3f} ms  p99 "
          f"{result['baseline_linear_scan']['p99_ms']:8.3f} ms  (baseline)")
    print(f"build {build_ms:.1f} ms, index memory {memory_mb:.2f} MiB")
    out = ROOT / "bench" / "results" / "recipient_search.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
