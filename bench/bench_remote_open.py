"""Benchmark (not a test): remote-open round trip, console API call -> `done`, vs raw MQTT.

Run:  .venv/bin/python bench/bench_remote_open.py [--opens 1000] [--poll-ms 20 50]

A private Mosquitto (broker.fleet.FleetBroker, loopback, generated config: `set_tcp_nodelay
true`), a real `lockerd` process on one simulated Kerong CU16 board over a pseudo-terminal whose
doors close by themselves (`--auto-close-ms`, default 40 ms, so every open completes), and a fresh
console key (contract.signing.generate_private_key) that the locker trusts. Each open is
`fleet_console.remote.send_command(...)` over one connected client: exactly what
`locker-console open` runs once connected (sign, subscribe to cmd/result, publish QoS 1, wait for
`accepted` then `done`). Opens rotate over the 16 cells, so a door has closed (and the cell is
free again) long before its next open. A small acker plays the console's ingest, so the locker's
outbox stays short.

`done` needs the door *sensed* open, so the board poll interval is part of the figure: an unlock
lands at a random moment of the poll cycle and waits on average half an interval for the poll
that sees it, unless the daemon polls early after an unlock (lockerd now polls the bus right
after an unlock frame). The figure is given for each `--poll-ms`, and also minus the mean half
poll interval.

Baseline, same broker, same run: a raw aiomqtt QoS 1 request/response (one client publishes a
request QoS 1, a responder answers QoS 1 on another topic, the requester awaits it; both with
TCP_NODELAY). Target: remote-open p50 <= 3x the raw p50 (at the first --poll-ms).

Components (monotonic clock of this process): call -> issued (sign + SUBSCRIBE/SUBACK),
issued -> accepted result, accepted -> done; and from lockerd's journal lines (timestamped on
arrival over its stderr pipe): issued -> `unlock` frame about to go out, `unlock` ->
`door_opened` event committed (the poll wait), `door_opened` -> `done` received.
Writes bench/results/remote_open.json. Bounded: --opens per poll interval (+ warm-up), loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile  # noqa: E402
from broker.fleet import FleetBroker  # noqa: E402
from contract.messages import Event  # noqa: E402
from contract.signing import generate_private_key, public_key_b64  # noqa: E402
from contract.topics import Topics  # noqa: E402
from fleet_console.config import ConsoleMqtt  # noqa: E402
from fleet_console.mqtt import make_client  # noqa: E402
from fleet_console.remote import send_command  # noqa: E402
from tests.fixtures.lockerd import LockerdProcess, locker_toml  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "remote_open.json"
TOPICS = Topics()
LOCKS = 16
KEY_ID = "bench-console"
WARMUP = 20
TARGET_RATIO = 3.0
CALL_TIMEOUT_S = 5.0


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


class TimedLockerd(LockerdProcess):
    """LockerdProcess whose journal lines carry `_t`: time.monotonic() when they arrived."""

    def _read(self, proc: Any) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            now = time.monotonic()
            try:
                record = json.loads(raw)
            except ValueError:
                record = {"kind": "text", "text": raw.decode(errors="replace").rstrip()}
            record["_t"] = now
            with self._cond:
                self.lines.append(record)
                self._cond.notify_all()
        with self._cond:
            if proc is self.proc:
                self._eof = True
            self._cond.notify_all()


# -- baseline ---------------------------------------------------------------------------------
async def raw_round_trips(mqtt: ConsoleMqtt, n: int) -> list[float]:
    """QoS 1 request -> responder -> QoS 1 response, awaited; milliseconds each."""
    req_topic, resp_topic = TOPICS.cmd("BENCH-RAW"), TOPICS.cmd_result("BENCH-RAW")
    requester, responder = make_client(mqtt), make_client(mqtt)
    out: list[float] = []
    async with requester, responder:
        await responder.subscribe(req_topic, qos=1)
        await requester.subscribe(resp_topic, qos=1)

        async def respond() -> None:
            async for message in responder.messages:
                await responder.publish(resp_topic, message.payload, qos=1)

        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def receive() -> None:
            async for message in requester.messages:
                answers.put_nowait(message.payload)  # type: ignore[arg-type]

        tasks = [asyncio.create_task(respond()), asyncio.create_task(receive())]
        try:
            for i in range(n + WARMUP):
                body = json.dumps({"i": i, "id": str(uuid.uuid4())}).encode()
                started = time.perf_counter()
                await requester.publish(req_topic, body, qos=1)
                while await asyncio.wait_for(answers.get(), CALL_TIMEOUT_S) != body:
                    pass
                if i >= WARMUP:
                    out.append((time.perf_counter() - started) * 1000)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return out


# -- the locker -------------------------------------------------------------------------------
class SimProcess:
    """board_sim.simulator.PtySimulator in its own process (`locker-sim`, doors auto-close), so
    that its serving thread does not share this process's GIL with the timed event loop."""

    def __init__(self, locks: int, auto_close_ms: int) -> None:
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("locker-sim")), "--protocol", "kerong-cu16",
             "--boards", "1", "--locks", str(locks), "--auto-close-ms", str(auto_close_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("PTY "):
                self.path = line.split(None, 1)[1]
                return
        raise RuntimeError("locker-sim did not print its PTY line")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_locker(fleet: FleetBroker, work: Path, sim: SimProcess, locker: str, password: str,
                 key_b64: str, poll_ms: int) -> TimedLockerd:
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path,
             "poll_interval_ms": poll_ms}
    cells = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, LOCKS + 1)]
    extra = "\n".join([
        "[mqtt]", f'host = "{fleet.host}"', f"port = {fleet.port}",
        f'username = "{locker}"', f'password = "{password}"',
        "[trust]", f'keys = {{ "{KEY_ID}" = "{key_b64}" }}',
    ])
    timing = {"open_timeout_s": 10, "unlock_confirm_s": 3, "door_left_open_s": 600}
    config = work / f"locker-{poll_ms}.toml"
    config.write_text(locker_toml(locker, work / f"data-{poll_ms}", [board], cells, timing, extra))
    d = TimedLockerd(config).start(timeout=30)
    d.wait_line(lambda r: r.get("kind") == "mqtt_connected", timeout=15)
    return d


async def acker(mqtt: ConsoleMqtt, locker: str, ready: asyncio.Event) -> None:
    """The console's ingest, reduced to acknowledging every event (keeps the outbox short)."""
    async with make_client(mqtt) as client:
        await client.subscribe(TOPICS.events(locker), qos=1)
        ready.set()
        async for message in client.messages:
            try:
                seq = Event.from_payload(message.payload).seq  # type: ignore[arg-type]
            except ValueError:
                continue
            await client.publish(TOPICS.events_ack(locker), json.dumps({"up_to_seq": seq}), qos=1)


def _line_time(d: TimedLockerd, since: int, match: Any) -> float | None:
    with d._cond:
        for record in d.lines[since:]:
            if match(record):
                return record["_t"]
    return None


async def remote_opens(mqtt: ConsoleMqtt, d: TimedLockerd, locker: str, key: Any,
                       n: int) -> dict[str, Any]:
    totals: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in (
        "call_to_issued", "issued_to_accepted", "accepted_to_done",
        "issued_to_unlock", "unlock_to_door_opened", "door_opened_to_done")}
    failures: dict[str, int] = {}
    ack_ready = asyncio.Event()
    ack_task = asyncio.create_task(acker(mqtt, locker, ack_ready))
    await asyncio.wait_for(ack_ready.wait(), 10)
    try:
        async with make_client(mqtt) as client:
            for i in range(n + WARMUP):
                cell = i % LOCKS + 1
                marks: dict[str, float] = {}
                mark = d.mark

                def issued(_cmd: dict, marks: dict = marks) -> None:
                    marks["issued"] = time.monotonic()

                def on_result(result: Any, marks: dict = marks) -> None:
                    marks[result.status] = time.monotonic()

                started = time.monotonic()
                outcome = await send_command(
                    client, TOPICS, key, KEY_ID, locker, "open", {"cell": cell},
                    operator="bench", reason="benchmark", ttl_ms=30_000,
                    timeout=CALL_TIMEOUT_S, on_issued=issued, on_result=on_result,
                )
                ended = time.monotonic()
                if outcome.status != "done":
                    key_ = f"{outcome.status}:{outcome.reason}"
                    failures[key_] = failures.get(key_, 0) + 1
                    await asyncio.sleep(0.5)  # let the cell settle
                    continue
                if i < WARMUP:
                    continue
                totals.append((ended - started) * 1000)
                ms = 1000
                parts["call_to_issued"].append((marks["issued"] - started) * ms)
                if "accepted" in marks:
                    parts["issued_to_accepted"].append((marks["accepted"] - marks["issued"]) * ms)
                    parts["accepted_to_done"].append((ended - marks["accepted"]) * ms)
                t_unlock = _line_time(d, mark, lambda r, c=cell: r.get("kind") == "unlock"
                                      and r.get("cell") == c)
                t_opened = _line_time(d, mark, lambda r, c=cell: r.get("kind") == "event"
                                      and r.get("type") == "door_opened" and r.get("cell") == c)
                if t_unlock is not None and t_opened is not None:
                    parts["issued_to_unlock"].append((t_unlock - marks["issued"]) * ms)
                    parts["unlock_to_door_opened"].append((t_opened - t_unlock) * ms)
                    parts["door_opened_to_done"].append((ended - t_opened) * ms)
                if i % 64 == 63:
                    with d._cond:  # keep the log short: nothing before `mark` is read again
                        del d.lines[:mark]
    finally:
        ack_task.cancel()
        await asyncio.gather(ack_task, return_exceptions=True)
    return {
        "total_ms": summary(totals),
        # The locker's store (replay cache, 24 h) grows with every command and is rewritten
        # whole on each commit: the first and last hundred opens show what that costs.
        "first_100_ms": summary(totals[:100]),
        "last_100_ms": summary(totals[-100:]),
        "components_ms": {k: summary(v) for k, v in parts.items() if v},
        "failures": failures,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opens", type=int, default=1000, help="timed opens per poll interval")
    ap.add_argument("--raw", type=int, default=1000, help="timed raw round trips")
    ap.add_argument("--poll-ms", type=int, nargs="+", default=[20, 50],
                    help="board poll intervals to run (the first one is judged)")
    ap.add_argument("--auto-close-ms", type=int, default=40)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-remote-open-"))
    fleet = FleetBroker(work / "registry.json", work / "broker")
    if fleet.kind != "mosquitto":
        sys.exit("Mosquitto is not installed: run make test (it installs mosquitto)")
    fleet.start()
    key = generate_private_key()
    results: dict[str, Any] = {
        "opens": args.opens, "warmup": WARMUP, "auto_close_ms": args.auto_close_ms,
        "board": "kerong-cu16 simulator over a pty", "cells": LOCKS,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "runs": [],
    }
    sim: SimProcess | None = None
    try:
        console_pw = fleet.add_console("bench-console")
        mqtt = ConsoleMqtt(host=fleet.host, port=fleet.console_port, username="bench-console",
                           password=console_pw)
        print(f"Mosquitto on {fleet.host}:{fleet.port}; raw QoS 1 request/response x {args.raw}")
        raw = summary(await raw_round_trips(mqtt, args.raw))
        results["raw_qos1_round_trip_ms"] = raw
        print(f"  raw round trip      p50 {raw['p50']:7.2f} ms  p99 {raw['p99']:7.2f} ms")
        for poll_ms in args.poll_ms:
            # Doors stay open long enough for a poll to see them whatever the phase.
            auto_close = max(args.auto_close_ms, 2 * poll_ms + 10)
            sim = SimProcess(LOCKS, auto_close)
            locker = f"BENCH-OPEN-{poll_ms}"
            password = fleet.add_locker(locker)
            d = start_locker(fleet, work, sim, locker, password, public_key_b64(key), poll_ms)
            try:
                print(f"lockerd, CU16 polled every {poll_ms} ms, doors auto-close after "
                      f"{auto_close} ms; {args.opens} remote opens")
                run = await remote_opens(mqtt, d, locker, key, args.opens)
            finally:
                d.terminate()
                sim.stop()
                sim = None
            store = work / f"data-{poll_ms}" / "lockerd.json"
            run.update(poll_interval_ms=poll_ms, auto_close_ms=auto_close,
                       store_bytes_at_end=store.stat().st_size if store.exists() else None)
            tot = run["total_ms"]
            half = poll_ms / 2
            run["total_minus_half_poll_ms"] = {"p50": round(tot["p50"] - half, 3),
                                               "p99": round(tot["p99"] - half, 3)}
            run["ratio_p50_to_raw"] = round(tot["p50"] / raw["p50"], 2)
            results["runs"].append(run)
            print(f"  remote open         p50 {tot['p50']:7.2f} ms  p99 {tot['p99']:7.2f} ms  "
                  f"({tot['n']} opens, failures {run['failures'] or 'none'})")
            print(f"  minus half a poll   p50 {tot['p50'] - half:7.2f} ms  "
                  f"p99 {tot['p99'] - half:7.2f} ms")
            print(f"  first/last 100 opens p50 {run['first_100_ms']['p50']:7.2f} / "
                  f"{run['last_100_ms']['p50']:7.2f} ms (store {run['store_bytes_at_end']} "
                  f"bytes at the end)")
            for name, s in run["components_ms"].items():
                print(f"    {name:<22} p50 {s['p50']:7.2f} ms  p99 {s['p99']:7.2f} ms  "
                      f"mean {s['mean']:7.2f} ms")
    finally:
        if sim is not None:
            sim.stop()
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)  # leave nothing in the system's temp directory
    judged = results["runs"][0]
    ratio = judged["total_ms"]["p50"] / raw["p50"]
    met = ratio <= TARGET_RATIO
    results["target"] = {
        "rule": f"remote-open p50 <= {TARGET_RATIO:g} x raw QoS 1 round-trip p50",
        "poll_interval_ms": judged["poll_interval_ms"], "ratio": round(ratio, 2), "met": met,
    }
    print(f"target: remote-open p50 {judged['total_ms']['p50']:.2f} ms <= {TARGET_RATIO:g} x raw "
          f"p50 {raw['p50']:.2f} ms (poll {judged['poll_interval_ms']} ms): ratio {ratio:.2f} -> "
          f"{'MET' if met else 'NOT MET'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
