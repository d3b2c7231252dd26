"""kill -9 of lockerd at random moments of 100 deposit/pickup cycles: nothing is lost.

After every restart, each tenancy the daemon had confirmed is still there, an operation that was
in flight either completed or left the cell as it was, and every door state agrees with the
simulated boards.
"""

from __future__ import annotations

import random
import time

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 9)]
KILL_POINTS = ("after_command", "after_unlock", "after_close", "after_confirmed")


def test_kill_9_during_100_cycles_loses_nothing(board_sim, lockerd) -> None:
    rng = random.Random(20261122)
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 25}
    # unlock_confirm long enough that a restart does not by itself exhaust the retry
    d = lockerd([board], CELLS, timing={"unlock_confirm_s": 2.0, "open_timeout_s": 30})
    confirmed = {c["id"]: "free" for c in CELLS}
    kills = 0

    def maybe_kill(point: str) -> bool:
        nonlocal kills
        if rng.random() >= 0.05:
            return False
        time.sleep(rng.uniform(0, 0.03))  # land anywhere in the daemon's next steps
        d.kill9()
        kills += 1
        d.start()
        return True

    def settle(in_flight: int, target: str) -> None:
        """After a restart: let pending opens finish (closing doors as a person would), then
        check the invariants."""
        deadline = time.monotonic() + 20
        while True:
            for c in CELLS:
                if sim.door_open(0, c["lock"]) and d.cell(c["id"])["door"] == "open":
                    sim.close_door(0, c["lock"])
            cells = {c["cell"]: c for c in d.ctl("cells")["cells"]}
            settled = all(
                c["door"] == "closed" and not sim.door_open(0, cid) and c["pending"] is None
                for cid, c in cells.items()
            )
            if settled:
                break
            assert time.monotonic() < deadline, f"locker did not settle: {cells}"
            time.sleep(0.02)
        for cid, c in cells.items():
            allowed = {confirmed[cid]} | ({target} if cid == in_flight else set())
            assert c["state"] in allowed, f"cell {cid}: {c} (expected one of {allowed})"
            confirmed[cid] = c["state"]

    for cycle in range(100):
        cell = CELLS[cycle % len(CELLS)]["id"]
        for op, target in (("deposit", "occupied"), ("pickup", "free")):
            if confirmed[cell] != ("free" if op == "deposit" else "occupied"):
                continue
            unlocks = sim.unlock_count(0, cell)
            reply = d.ctl(op, cell)
            assert reply["ok"], reply
            if maybe_kill("after_command"):
                settle(cell, target)
                continue
            assert sim.wait_for_unlock(0, cell, timeout=10, count=unlocks + 1)
            if maybe_kill("after_unlock"):
                settle(cell, target)
                continue
            d.wait_cell(cell, door="open")
            sim.close_door(0, cell)
            if maybe_kill("after_close"):
                settle(cell, target)
                continue
            d.wait_cell(cell, state=target, door="closed")
            confirmed[cell] = target
            if maybe_kill("after_confirmed"):
                settle(cell, target)
    print(f"{kills} kills during 100 cycles")
    assert kills >= 10, "the random schedule should kill the daemon many times"
    settle(0, "")
    d.terminate()
