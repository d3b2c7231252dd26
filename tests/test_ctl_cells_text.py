"""`lockerd ctl cells` in text says what the README promises: pending opens and the backlog.

A real lockerd over a simulated board and the real `lockerd ctl` program. A deposit whose door
has not opened yet (a stuck lock) must not read just "free, closed"; events the console has not
acknowledged are counted; `since` is local time, not epoch milliseconds.
"""

from __future__ import annotations

import re
import subprocess
import time

from tests.fixtures.lockerd import LOCKERD

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 4)]


def _ctl_cells(d) -> list[str]:
    out = subprocess.run([LOCKERD, "ctl", "--config", str(d.config_path), "cells"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_ctl_cells_shows_pending_opens_the_backlog_and_local_times(board_sim, lockerd) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, timing={"unlock_confirm_s": 30, "open_timeout_s": 60})
    sim.set_stuck(0, 2, True)  # the deposit is paid for, the door has not sprung yet
    assert d.ctl("deposit", 2)["ok"]
    assert sim.wait_for_unlock(0, 2, timeout=5)
    backlog = d.ctl("cells")["events"]["unacknowledged"]
    assert backlog > 0  # no console here: nothing is ever acknowledged

    lines = _ctl_cells(d)
    header = lines[0].split()
    assert header == ["cell", "state", "door", "size", "pending", "since"], lines
    rows = {int(line.split()[0]): line.split() for line in lines[1:4]}
    assert rows[2][:5] == ["2", "free", "closed", "M", "deposit"], lines
    assert rows[1][:5] == ["1", "free", "closed", "M", "-"], lines
    since = " ".join(rows[2][5:])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", since), lines
    assert since == time.strftime("%Y-%m-%d %H:%M:%S",
                                  time.localtime(d.cell(2)["since"] / 1000)), lines
    assert f"outbox: {backlog} events not yet acknowledged by the console" in "\n".join(lines)
