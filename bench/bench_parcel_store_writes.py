"""Benchmark (not a test): what lockerd writes to its disk per parcel deposit and pickup.

Run:  .venv/bin/python bench/bench_parcel_store_writes.py [--cycles 20] [--used 10000]

A real lockerd (kiosk API, Modbus relay board on a pseudo-terminal, a real SMTP server) whose
store starts with `--used` used one-time codes (their keyed hashes: the code book keeps the last
10,000, so a busy locker has them all), written as an older lockerd kept them (inside the parcel
business's state; a current lockerd moves them to documents of their own at its first step).
Then `--cycles` times: a courier's deposit (login, door open and closed, the arrival e-mail
sent) and the recipient's pickup (code, door open and closed). For each step, lockerd's
/proc/<pid>/io: `write_bytes` (bytes it caused to be written to the disk, page-granular:
journal lines, fsyncs, image rewrites) and `wchar` (bytes passed to write(): the same plus its
log lines on stderr), and the journal lines' bytes (from the journal's growth, in steps during
which the image was not rewritten; image rewrites are counted apart).
Writes bench/results/parcel_store_writes.json.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from board_sim.simulator import PtySimulator  # noqa: E402
from contract.pin_hash import hash_pin  # noqa: E402
from daemon.io.store import JOURNAL_FILE, STORE_FILE, LockerStore  # noqa: E402
from tests.fixtures.lockerd import LockerdProcess, locker_toml  # noqa: E402
from tests.fixtures.messaging import SmtpCollector  # noqa: E402
from tests.fixtures.storage_locker import CELLS, free_port  # noqa: E402
from tests.test_parcels_locker import PROFILE  # noqa: E402


def io(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        out[name] = int(value)
    return out


def wait(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_parcel_store_writes: timed out waiting for {what}")
        time.sleep(0.002)


def section() -> str:
    return "\n".join([
        'address = "1 Bench Street"', "[[staff]]", 'id = "c1"', 'name = "Carl"',
        'role = "courier"', 'code = "1001"', f'pin_hash = "{hash_pin("2468", n=16)}"',
        "[[recipients]]", 'id = "r1"', 'name = "Mia"', 'email = "mia@example.org"',
    ]) + "\n"


def last_code(mailbox: SmtpCollector, count: int) -> str | None:
    import email
    import email.policy

    if len(mailbox.messages) < count:
        return None
    msg = email.message_from_bytes(mailbox.messages[count - 1].content,
                                   policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(r"code: (\d+)", body)
    return found.group(1) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--used", type=int, default=10_000)
    args = ap.parse_args()
    mailbox = SmtpCollector()
    with tempfile.TemporaryDirectory() as tmp, PtySimulator("modbus-relay", 1, 6) as sim:
        root = Path(tmp)
        (root / "profile.toml").write_text(PROFILE)
        (root / "parcels.toml").write_text(section())
        port = free_port()
        data_dir = root / "data"
        board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path,
                 "poll_interval_ms": 30}
        extra = (f'profile = "{root / "profile.toml"}"\nparcels = "{root / "parcels.toml"}"\n'
                 f"[kiosk]\nenabled = true\nport = {port}\n"
                 f'[notifier]\nemail = "smtp"\n[notifier.smtp]\nhost = "127.0.0.1"\n'
                 f'port = {mailbox.port}\nsender = "locker@example.org"\nstarttls = false\n')
        config = root / "locker.toml"
        config.write_text(locker_toml("B1", data_dir, [board], CELLS, extra=extra))
        d = LockerdProcess(config).start()
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)
        wait(lambda: http.get("/health").json()["ready"], "the kiosk API")
        http.post("/parcels/staff/login", json={"code": "1001", "pin": "2468"})
        d.terminate()
        store = LockerStore(data_dir)
        state = store.meta("parcels")
        state["codes"]["retired"] = [secrets.token_hex(32) for _ in range(args.used)]
        store.commit(meta={"parcels": state})
        store.close()
        d.start()
        try:
            wait(lambda: http.get("/health").json()["ready"], "the kiosk API")
            assert d.proc is not None
            pid = d.proc.pid
            # The first step moves an older store's used codes out (once): not measured.
            http.post("/parcels/staff/login", json={"code": "1001", "pin": "2468"})
            compactions: list[int] = []
            deposits: list[dict[str, int]] = []
            pickups: list[dict[str, int]] = []

            journal, image = data_dir / JOURNAL_FILE, data_dir / STORE_FILE

            def files() -> tuple[int, int]:
                return journal.stat().st_size, image.stat().st_ino

            def measured(step, into: list[dict[str, int]]) -> None:
                time.sleep(0.3)  # the tick's own writes settle first
                before, (lines_before, ino) = io(pid), files()
                step()
                time.sleep(0.3)
                after, (lines_after, ino_after) = io(pid), files()
                got = {k: after[k] - before[k] for k in ("write_bytes", "wchar")}
                if ino_after == ino:  # else the image was rewritten (compaction) meanwhile
                    got["journal"] = lines_after - lines_before
                else:
                    compactions.append(image.stat().st_size)
                into.append(got)

            for i in range(1, args.cycles + 1):
                cell: list[int] = []

                def deposit(i: int = i, cell: list[int] = cell) -> None:
                    mark = d.mark
                    session = http.post("/parcels/staff/login", json={
                        "code": "1001", "pin": "2468"}).json()["session"]
                    placed = http.post("/parcels/deposits", json={
                        "session": session, "recipient_id": "r1", "size": "S"}).json()
                    cell.append(placed["cell"])
                    d.wait_event("door_opened", cell=cell[0], since=mark)
                    sim.close_door(0, cell[0])
                    d.wait_event("parcel_notice_sent", since=mark)

                def pickup(i: int = i, cell: list[int] = cell) -> None:
                    wait(lambda: last_code(mailbox, i) is not None, "the arrival e-mail")
                    mark = d.mark
                    http.post("/parcels/pickup", json={"code": last_code(mailbox, i)})
                    d.wait_event("door_opened", cell=cell[0], since=mark)
                    sim.close_door(0, cell[0])
                    d.wait_event("parcel_picked_up", since=mark)

                measured(deposit, deposits)
                measured(pickup, pickups)
        finally:
            d.terminate()
            mailbox.close()

    def fig(values: list[dict[str, int]]) -> dict[str, float]:
        out = {k: round(statistics.mean(v[k] for v in values)) for k in ("write_bytes", "wchar")}
        lines = [v["journal"] for v in values if "journal" in v]
        out["journal_line_bytes"] = round(statistics.mean(lines)) if lines else -1
        return out

    results = {"used_codes": args.used, "cycles": args.cycles,
               "deposit_step": fig(deposits), "pickup_step": fig(pickups),
               "image_rewrites": len(compactions), "image_bytes": compactions[-1:]}
    for name in ("deposit_step", "pickup_step"):
        r = results[name]
        assert isinstance(r, dict)
        print(f"{name:<14} journal lines {r['journal_line_bytes']:>9,} B  disk write_bytes "
              f"{r['write_bytes']:>10,}  write() wchar {r['wchar']:>10,}  "
              f"(mean of {args.cycles}, {args.used:,} used codes)")
    print(f"image rewrites during the steps: {len(compactions)} {compactions}")
    out = ROOT / "bench" / "results" / "parcel_store_writes.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
