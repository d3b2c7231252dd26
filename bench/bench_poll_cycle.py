"""Benchmark (not a test): how long one status poll of one board takes, per protocol.

Run:  .venv/bin/python bench/bench_poll_cycle.py [--polls 300]

For Kerong CU16 and CU48 at 19200 baud and a Modbus relay board at 9600 baud, a driver polls a
PtySimulator over a real pseudo-terminal, back to back, first framing replies by silence only
(the reply ends after quiet_gap_ms = 25 ms without a byte, the configuration default) and then
with early completion (the reply ends as soon as it decodes as a whole valid frame, silence as
the fallback). Each figure is compared with the theoretical time on a real RS485 line: request
plus reply at 10 bits per byte, plus the frame gap, plus the quiet gap when framing by silence.
A pty does not throttle to the baud rate, so measured wire time is near zero here: on a real bus
add the theoretical wire time to the overhead measured. Prints a table and writes
bench/results/poll_cycle.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import percentile  # noqa: E402
from board_sim.simulator import PtySimulator  # noqa: E402
from daemon.config import BoardConfig  # noqa: E402
from daemon.io.boards import SerialBus, make_driver  # noqa: E402

CASES = [("kerong-cu16", 19200), ("kerong-cu48", 19200), ("modbus-relay", 9600)]
QUIET_GAP_MS = 25
FRAME_GAP_MS = 5


async def measure(protocol: str, baud: int, polls: int, early: bool) -> dict[str, float]:
    with PtySimulator(protocol, boards=1) as sim:
        board = BoardConfig(
            name="bench",
            protocol=protocol,
            port=sim.path,
            address=sim.addresses[0],
            baudrate=baud,
            quiet_gap_ms=QUIET_GAP_MS,
            frame_gap_ms=FRAME_GAP_MS,
        )
        async with SerialBus(sim.path, baud, frame_gap_ms=FRAME_GAP_MS) as bus:
            driver = make_driver(board, bus, early_complete=early)
            for _ in range(10):  # warm up
                await driver.poll()
            times = []
            for _ in range(polls):
                started = time.perf_counter()
                readings = await driver.poll()
                times.append((time.perf_counter() - started) * 1000)
                if readings is None:
                    raise RuntimeError(f"{protocol}: poll failed: {driver.health.last_error}")
            request = len(driver.codec.status_request())
            reply = len(sim.bus.boards[0].handle(driver.codec.status_request(), 0).reply or b"")
    wire_ms = (request + reply) * 10 / baud * 1000
    theory = wire_ms + FRAME_GAP_MS + (0 if early else QUIET_GAP_MS)
    return {
        "polls": polls,
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "request_bytes": request,
        "reply_bytes": reply,
        "wire_ms": round(wire_ms, 3),
        "theory_on_rs485_ms": round(theory, 3),
    }


async def run(polls: int) -> dict[str, object]:
    results: dict[str, object] = {}
    for protocol, baud in CASES:
        silence = await measure(protocol, baud, polls, early=False)
        early = await measure(protocol, baud, polls, early=True)
        results[protocol] = {
            "baud": baud,
            "silence_framing": silence,
            "early_completion": early,
            "quiet_gap_cost_ms": round(silence["p50_ms"] - early["p50_ms"], 3),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=300)
    args = parser.parse_args()
    results = asyncio.run(run(args.polls))
    print(
        f"poll cycle of one board over a pty ({args.polls} polls each; quiet gap "
        f"{QUIET_GAP_MS} ms, frame gap {FRAME_GAP_MS} ms; pty not throttled to baud)"
    )
    head = (
        f"{'protocol':<13} {'baud':>5} {'framing':<9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'wire ms':>7} {'RS485 theory ms':>15}"
    )
    print(head)
    for protocol, r in results.items():
        assert isinstance(r, dict)
        for label, key in (("silence", "silence_framing"), ("early", "early_completion")):
            m = r[key]
            print(
                f"{protocol:<13} {r['baud']:>5} {label:<9} {m['p50_ms']:>7.2f} "
                f"{m['p99_ms']:>7.2f} {m['wire_ms']:>7.2f} {m['theory_on_rs485_ms']:>15.2f}"
            )
        print(
            f"{'':<13} {'':>5} the 25 ms quiet gap costs {r['quiet_gap_cost_ms']:.2f} ms per "
            f"poll (p50); a board polled back to back: "
            f"{1000 / r['silence_framing']['p50_ms']:.0f}/s vs "
            f"{1000 / r['early_completion']['p50_ms']:.0f}/s"
        )
    out = ROOT / "bench" / "results" / "poll_cycle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "poll_cycle",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "quiet_gap_ms": QUIET_GAP_MS,
                "frame_gap_ms": FRAME_GAP_MS,
                "note": "pty does not throttle to baud: on RS485 add wire_ms",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
