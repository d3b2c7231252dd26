"""lockerd end to end over a pseudo-terminal to a simulated KR-CU16 bus: docs/architecture.md's
rules 1-9."""

from __future__ import annotations

import time

import pytest

from daemon.io.store import LockerStore

BOARDS = [
    {"name": "b0", "protocol": "kerong-cu16", "address": 0, "poll_interval_ms": 40},
    {"name": "b1", "protocol": "kerong-cu16", "address": 1, "poll_interval_ms": 40},
]
CELLS = [
    {"id": 1, "board": "b0", "lock": 1, "size": "S"},
    {"id": 2, "board": "b0", "lock": 2, "size": "M"},
    {"id": 3, "board": "b0", "lock": 3, "size": "L"},
    {"id": 17, "board": "b1", "lock": 1, "size": "M"},
]


@pytest.fixture
def locker(board_sim, lockerd):
    sim = board_sim("kerong-cu16", boards=2, locks=16)
    boards = [{**b, "port": sim.path} for b in BOARDS]
    return sim, lockerd(boards, CELLS)


def test_deposit_then_pickup(locker) -> None:
    sim, d = locker
    assert d.ctl("deposit", 2)["ok"]
    assert sim.wait_for_unlock(0, 2, timeout=5)
    d.wait_event("door_opened", cell=2)
    sim.close_door(0, 2)
    d.wait_event("deposit_completed", cell=2)
    assert d.cell(2)["state"] == "occupied" and d.cell(2)["door"] == "closed"

    mark = d.mark
    assert d.ctl("pickup", 2)["ok"]
    d.wait_event("door_opened", cell=2, since=mark)
    sim.close_door(0, 2)
    d.wait_event("pickup_completed", cell=2)
    assert d.cell(2)["state"] == "free"
    assert sim.unlock_count(0, 2) == 2


def test_refused_commands_change_nothing(locker) -> None:
    sim, d = locker
    reply = d.ctl("pickup", 1)
    assert reply == {"ok": False, "error": "not_occupied", "message": reply["message"]}
    assert d.ctl("deposit", 99)["error"] == "unknown_cell"
    assert d.cell(1)["state"] == "free"
    assert sim.unlock_count(0, 1) == 0


def test_stuck_lock_retries_once_then_lock_fault(locker) -> None:
    sim, d = locker
    sim.set_stuck(0, 3, True)
    assert d.ctl("deposit", 3)["ok"]
    alarm = d.wait_event("lock_fault", cell=3, timeout=10)
    assert alarm["alarm"] is True
    d.wait_event("deposit_cancelled", cell=3)
    assert d.cell(3)["state"] == "blocked"
    assert sim.unlock_count(0, 3) == 2  # the first try and exactly one retry


def test_forced_open_blocks_the_cell(locker) -> None:
    sim, d = locker
    sim.force_open(1, 1)
    d.wait_event("forced_open", cell=17)
    assert d.cell(17)["state"] == "blocked"
    sim.close_door(1, 1)
    d.wait_cell(17, door="closed")
    assert d.ctl("unblock", 17)["ok"]
    assert d.cell(17)["state"] == "free"


def test_door_left_open_alarm(locker) -> None:
    sim, d = locker
    assert d.ctl("open", 1, reason="technician")["ok"]
    d.wait_event("door_opened", cell=1)
    d.wait_event("door_left_open", cell=1, timeout=5)
    sim.close_door(0, 1)
    d.wait_event("open_completed", cell=1)
    assert d.cell(1)["state"] == "free"


def test_silent_board_goes_unknown_and_recovers(locker) -> None:
    sim, d = locker
    mark = d.mark
    sim.set_silent(True)
    d.wait_event("board_offline", since=mark)
    d.wait_cell(1, door="unknown")
    assert d.ctl("deposit", 1)["error"] == "door_unknown"
    sim.set_silent(False)
    d.wait_event("board_online", since=mark)
    d.wait_cell(1, door="closed")
    assert d.cell(1)["state"] == "free"  # no transition was taken on unknown


@pytest.mark.parametrize("fault", ["garbage", "bad_checksum"])
def test_bad_frames_never_crash_the_daemon(locker, fault: str) -> None:
    sim, d = locker
    getattr(sim, f"set_{fault}")(True)
    d.wait_event("board_offline")
    getattr(sim, f"set_{fault}")(False)
    d.wait_event("board_online")
    assert d.proc.poll() is None
    assert d.ctl("deposit", 1)["ok"]
    assert sim.wait_for_unlock(0, 1, timeout=5)


def test_sigterm_flushes_state_and_restart_keeps_tenancy(locker) -> None:
    sim, d = locker
    assert d.ctl("deposit", 1)["ok"]
    d.wait_event("door_opened", cell=1)
    sim.close_door(0, 1)
    d.wait_event("deposit_completed", cell=1)
    assert d.terminate() == 0
    d.wait_line(lambda r: r.get("kind") == "stopped")
    data_dir = d.socket.parent
    store = LockerStore(data_dir)
    types = [e["type"] for e in store.outbox()]
    store.close()
    assert types.index("deposit_started") < types.index("deposit_completed")
    d.start()
    assert d.cell(1)["state"] == "occupied"


def test_door_found_open_at_boot_raises_an_alarm(locker) -> None:
    sim, d = locker
    d.terminate()
    sim.force_open(0, 2)  # someone opened a door while the daemon was down
    mark = d.mark
    d.start()
    alarm = d.wait_event("forced_open", cell=2, since=mark)
    assert alarm.get("at_boot") is True
    assert d.cell(2)["state"] == "blocked"


def test_unopenable_port_exits_2_naming_it(lockerd, tmp_path) -> None:
    d = lockerd(
        [{"name": "b0", "protocol": "kerong-cu16", "port": "/dev/ttyNOPE9"}],
        [{"id": 1, "board": "b0", "lock": 1}],
        start=False,
    )
    d.start(wait_ready=False)
    assert d.proc.wait(15) == 2
    deadline = time.monotonic() + 5
    while not any("/dev/ttyNOPE9" in r.get("text", "") for r in d.lines):
        assert time.monotonic() < deadline, d.lines
        time.sleep(0.02)
