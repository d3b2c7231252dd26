"""Benchmark (not a test): a parcel pickup as the recipient feels it, and lockerd's memory.

Run:  .venv/bin/python bench/bench_parcel_pickup.py [--pickups 100] [--recipients 10000]
      [--via-fleet]

A real lockerd (kiosk API on, Modbus relay board on a pseudo-terminal, 30 ms polling, a real
SMTP server for the recipients' e-mails) with both businesses: storage on cells 1 and 6, parcels
on 2-5, and a `parcels` section of 10,000 recipients. Measures, in the same run:
- baseline: `GET /api/v1/health` round trip (uvicorn + FastAPI, no locker logic);
- `POST /api/v1/parcels/pickup` with the code read from the e-mail, until the simulator sees the
  door open (the unlock frame went out on the bus: the door springs at once);
- lockerd's resident memory with both businesses and the 10,000-recipient section, beside a
  lockerd with storage only (no parcels section) started the same way.
With `--via-fleet` the parcels lockerd is a networked one (a real Mosquitto, the broker/
configuration): its profile and `parcels` section come as one signed configuration (`storage` and
`parcels`, compressed as `body_z`, retained, as `locker-console` publishes it), not from files.
Its RSS is taken once the configuration is applied, again after a restart with it in the store
(a networked locker's every later start), then the pickups run (no console acknowledges the
events: the outbox grows within `[mqtt] outbox_max_events`).
Writes bench/results/parcel_pickup.json (`--via-fleet`: parcel_pickup_via_fleet.json).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import re
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile, rss_mb  # noqa: E402
from board_sim.simulator import PtySimulator  # noqa: E402
from contract.pin_hash import hash_pin  # noqa: E402
from tests.fixtures.lockerd import LockerdProcess, locker_toml  # noqa: E402
from tests.fixtures.messaging import SmtpCollector  # noqa: E402
from tests.fixtures.mqtt_broker import MqttBroker  # noqa: E402
from tests.fixtures.storage_locker import CELLS, free_port, profile_toml  # noqa: E402
from tests.test_parcels_locker import PROFILE  # noqa: E402


def wait(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_parcel_pickup: timed out waiting for {what}")
        time.sleep(0.0005)


def section(recipients: int) -> str:
    lines = ['address = "1 Bench Street"', "[[staff]]", 'id = "c1"', 'name = "Carl"',
             'role = "courier"', 'code = "1001"', f'pin_hash = "{hash_pin("2468", n=16)}"']
    for i in range(recipients):
        lines += ["[[recipients]]", f'id = "r{i}"', f'name = "Recipient {i:05d}"',
                  f'department = "Dept {i % 40}"', f'email = "r{i}@example.org"']
    return "\n".join(lines) + "\n"


def start(root: Path, name: str, sim: PtySimulator, port: int, extra: str) -> LockerdProcess:
    board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path, "poll_interval_ms": 30}
    config = root / f"{name}.toml"
    config.write_text(locker_toml(name, root / f"data-{name}", [board], CELLS,
                                  extra=extra.replace("[notifier]", f"[kiosk]\nenabled = true\n"
                                                      f"port = {port}\n[notifier]")
                                  if "[notifier]" in extra else
                                  extra + f"[kiosk]\nenabled = true\nport = {port}\n"))
    return LockerdProcess(config).start()


def fleet_config(locker: str, key: Any, recipients: int, profile: str) -> bytes:
    """The signed configuration a console publishes: storage profile and parcels section."""
    from contract.signing import make_config

    body = {"storage": tomllib.loads(profile), "parcels": tomllib.loads(section(recipients))}
    signed = make_config(locker, 2, body, key_id="bench-console", private_key=key,
                         now_ms=int(time.time() * 1000))
    return json.dumps(signed, separators=(",", ":")).encode()


def start_via_fleet(root: Path, sim: PtySimulator, port: int, notifier: str,
                    recipients: int) -> tuple[LockerdProcess, float, MqttBroker]:
    """A networked lockerd whose configuration comes signed over a real Mosquitto; returns it
    restarted with the configuration in its store, and its RSS right after the apply."""
    from contract.signing import generate_private_key, public_key_b64
    from contract.topics import Topics

    broker = MqttBroker(root / "broker")
    broker.start()
    creds = broker.add_locker("P1")
    key = generate_private_key()
    with broker.console_client() as console:
        console.publish(Topics().config("P1"),
                        fleet_config("P1", key, recipients, PROFILE), retain=True)
    # The profile file serves only until the fleet's applies: it gives the parcels cells
    extra = (f'profile = "{root / "both.toml"}"\n'
             f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
             f'username = "{creds.username}"\npassword = "{creds.password}"\n'
             f'[trust]\nkeys = {{ "bench-console" = "{public_key_b64(key)}" }}\n' + notifier)
    d = start(root, "P1", sim, port, extra)
    d.wait_event("config_applied", version=2, timeout=60)
    time.sleep(1.0)  # the apply's garbage collected, the link settled
    assert d.proc is not None
    rss_applied = rss_mb(d.proc.pid)
    d.terminate()
    d.start()
    return d, rss_applied, broker


def code_for(mailbox: SmtpCollector, rid: str) -> str | None:
    for m in mailbox.messages:
        if f"{rid}@example.org" in m.recipients:
            msg = email.message_from_bytes(m.content, policy=email.policy.default)
            body = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore
            found = re.search(r"code: (\d+)", body)
            if found:
                return found.group(1)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pickups", type=int, default=100)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--via-fleet", action="store_true",
                    help="the parcels section as a signed fleet configuration over MQTT")
    args = ap.parse_args()
    broker: MqttBroker | None = None
    rss_applied: float | None = None
    mailbox = SmtpCollector()
    with tempfile.TemporaryDirectory() as tmp, PtySimulator("modbus-relay", 1, 6) as sim:
        root = Path(tmp)
        (root / "storage.toml").write_text(profile_toml(mode="prepaid"))
        (root / "both.toml").write_text(PROFILE)
        (root / "parcels.toml").write_text(section(args.recipients))
        # Baseline memory: the same lockerd with storage only.
        port = free_port()
        d = start(root, "S1", sim, port, f'profile = "{root / "storage.toml"}"\n')
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)
            wait(lambda: http.get("/health").json()["ready"], "the kiosk API")
            assert d.proc is not None
            rss_storage = rss_mb(d.proc.pid)
        finally:
            d.terminate()

        port = free_port()
        notifier = (f'[notifier]\nemail = "smtp"\n[notifier.smtp]\nhost = "127.0.0.1"\n'
                    f'port = {mailbox.port}\nsender = "locker@example.org"\nstarttls = false\n')
        if args.via_fleet:
            d, rss_applied, broker = start_via_fleet(root, sim, port, notifier, args.recipients)
        else:
            d = start(root, "P1", sim, port, f'profile = "{root / "both.toml"}"\n'
                      f'parcels = "{root / "parcels.toml"}"\n' + notifier)
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)
            wait(lambda: http.get("/health").json()["ready"], "the kiosk API")
            assert d.proc is not None
            rss_idle = rss_mb(d.proc.pid)
            health = []
            for _ in range(args.requests):
                started = time.perf_counter()
                http.get("/health")
                health.append((time.perf_counter() - started) * 1000)
            to_door = []
            for i in range(args.pickups):
                rid = f"r{i * 97 % args.recipients}"
                session = http.post("/parcels/staff/login",
                                    json={"code": "1001", "pin": "2468"}).json()["session"]
                mark = d.mark
                placed = http.post("/parcels/deposits", json={
                    "session": session, "recipient_id": rid, "size": "S"})
                placed.raise_for_status()
                cell = placed.json()["cell"]
                wait(lambda c=cell: sim.door_open(0, c), "the deposit door")
                d.wait_event("door_opened", cell=cell, since=mark)
                sim.close_door(0, cell)
                wait(lambda r=rid: code_for(mailbox, r) is not None, "the arrival e-mail")
                code = code_for(mailbox, rid)
                mark = d.mark
                started = time.perf_counter()
                http.post("/parcels/pickup", json={"code": code}).raise_for_status()
                wait(lambda c=cell: sim.door_open(0, c), "the pickup door")
                to_door.append((time.perf_counter() - started) * 1000)
                d.wait_event("door_opened", cell=cell, since=mark)
                sim.close_door(0, cell)
                d.wait_event("parcel_picked_up", since=mark)
            rss_after = rss_mb(d.proc.pid)
        except BaseException:
            for line in d.lines[-12:]:
                print(line)
            raise
        finally:
            d.terminate()
            mailbox.close()
            if broker is not None:
                broker.stop()

    def fig(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(percentile(values, 99), 2)}

    results = {
        "health_baseline": fig(health),
        "code_to_door_open": fig(to_door),
        "rss_mb_storage_only": round(rss_storage, 1),
        "rss_mb_both_businesses_idle": round(rss_idle, 1),
        "rss_mb_both_businesses_after_pickups": round(rss_after, 1),
        "recipients": args.recipients,
        "pickups": args.pickups,
        "targets": {"code_to_door_open_p99_ms": 50, "rss_mb": 60},
    }
    if args.via_fleet:
        results["via_fleet"] = True
        results["rss_mb_right_after_the_signed_section_applied"] = round(rss_applied or 0, 1)
    print(f"GET /health (baseline)              p50 {results['health_baseline']['p50_ms']} ms  "
          f"p99 {results['health_baseline']['p99_ms']} ms")
    print(f"pickup code -> door open (bus)      p50 {results['code_to_door_open']['p50_ms']} ms  "
          f"p99 {results['code_to_door_open']['p99_ms']} ms  (target p99 <= 50 ms)")
    print(f"lockerd RSS, storage only           {results['rss_mb_storage_only']} MB")
    print(f"lockerd RSS, both, {args.recipients} recipients  "
          f"{results['rss_mb_both_businesses_idle']} MB idle, "
          f"{results['rss_mb_both_businesses_after_pickups']} MB after the pickups "
          "(target <= 60 MB)")
    if args.via_fleet:
        print(f"lockerd RSS right after the signed section applied  "
              f"{results['rss_mb_right_after_the_signed_section_applied']} MB")
    name = "parcel_pickup_via_fleet.json" if args.via_fleet else "parcel_pickup.json"
    out = ROOT / "bench" / "results" / name
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
