"""What the parcel projection costs the ingest's store transaction (issue 12, the console side).

Batches of 500 events as a parcel locker fleet sends them (deposits, pickups, logins, a few
returns) are stored the way the ingest stores them: the baseline inserts the `events` rows
alone; the measured run inserts them and calls `store_parcel_facts` in the same transaction
(fleet_console/db/parcel_facts.py). Same database engine (SQLite file, or PostgreSQL with
`--postgres`), same batches, alternated rounds; medians per batch and events per second.

Writes bench/results/parcel_records.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet_console.db.engine import open_database  # noqa: E402
from fleet_console.db.models import EventRow  # noqa: E402
from fleet_console.db.parcel_facts import store_parcel_facts  # noqa: E402
from fleet_console.db.writes import insert_for  # noqa: E402

BATCH = 500


def batches(lockers: int, rounds: int, offset: int) -> list[list[dict[str, Any]]]:
    """`rounds` batches of BATCH events over `lockers` lockers: each parcel deposited, then
    picked up in a later batch; a login before each deposit, a return now and then."""
    out = []
    seq = {f"L{i:04d}": offset for i in range(lockers)}
    pending: list[tuple[str, str]] = []
    n = 0
    for _ in range(rounds):
        rows: list[dict[str, Any]] = []
        picked = pending[: BATCH // 4]
        pending = pending[BATCH // 4:]
        for lk, pid in picked:
            seq[lk] += 1
            rows.append(_row(lk, seq[lk], "parcel_picked_up", {"parcel_id": pid, "cell": 3}))
        while len(rows) < BATCH:
            n += 1
            lk = f"L{n % lockers:04d}"
            pid = f"p{offset}-{n}"
            seq[lk] += 1
            rows.append(_row(lk, seq[lk], "staff_login", {"staff_id": "c1", "role": "courier"}))
            seq[lk] += 1
            rows.append(_row(lk, seq[lk], "parcel_deposited", {
                "parcel_id": pid, "barcode": f"46{n:010d}", "cell": n % 24 + 1, "size": "M",
                "recipient_id": f"r{n % 900}", "courier_id": "c1", "deposited_at": n,
                "due_at": n + 172_800_000, "parcels": [pid], "added": False}))
            if n % 20 == 0:
                seq[lk] += 1
                rows.append(_row(lk, seq[lk], "return_deposited", {"return_id": f"R{n}",
                                                                   "cell": 5, "size": "L"}))
            pending.append((lk, pid))
        out.append(rows[:BATCH])
    return out


def _row(locker: str, seq: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"locker": locker, "seq": seq, "event_id": f"{locker}-{seq}", "at": 1_800_000_000_000,
            "type": type_, "data": data, "received_at": 1_800_000_000_000}


def store(db: Any, rows: list[dict[str, Any]], project: bool) -> float:
    start = time.perf_counter()
    with db.transaction() as s:
        s.execute(insert_for(s, EventRow).on_conflict_do_nothing(
            index_elements=["locker", "seq"]), rows)
        if project:
            store_parcel_facts(s, rows)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20, help="batches per run (default 20)")
    ap.add_argument("--lockers", type=int, default=200)
    ap.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    args = ap.parse_args()
    cluster = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-parcels-"))
    if args.postgres:
        from tests.fixtures.postgres import PrivatePostgres, find_pg_bin

        bindir = find_pg_bin()
        assert bindir is not None, "PostgreSQL is not installed"
        cluster = PrivatePostgres(bindir)
        cluster.start()
        url = cluster.create_database("bench_parcels")
    else:
        url = f"sqlite:///{tmp}/console.db"
    db = open_database(url)
    times: dict[str, list[float]] = {"events only": [], "events + parcel tables": []}
    try:
        for r in range(3):  # alternated: each run gets its own, fresh seqs
            for name, project in (("events only", False), ("events + parcel tables", True)):
                for rows in batches(args.lockers, args.rounds, offset=(2 * r + project) * 10**6):
                    times[name].append(store(db, rows, project))
    finally:
        db.dispose()
        if cluster is not None:
            cluster.stop()
    result: dict[str, Any] = {"database": "postgresql" if args.postgres else "sqlite",
                              "batch": BATCH, "batches": args.rounds * 3}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = {"median_batch_ms": round(med * 1000, 2),
                        "p90_batch_ms": round(sorted(ts)[int(len(ts) * 0.9)] * 1000, 2),
                        "events_per_s": round(BATCH / med)}
        print(f"{name:<24} median {med * 1000:7.2f} ms per {BATCH} events "
              f"({BATCH / med:,.0f} events/s)")
    base = result["events only"]["median_batch_ms"]
    extra = result["events + parcel tables"]["median_batch_ms"] - base
    result["projection_ms_per_batch"] = round(extra, 2)
    print(f"the projection adds {extra:.2f} ms per batch ({extra / base:.0%} of the baseline)")
    name = "parcel_records_pg.json" if args.postgres else "parcel_records.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
