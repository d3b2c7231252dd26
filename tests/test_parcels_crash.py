"""kill -9 of lockerd at random instants of parcel deposit and pickup cycles (issue 12).

A real lockerd process, its kiosk API over HTTP, a pty relay board and a real SMTP server. Each
cycle leaves a parcel for its own recipient and picks it up with the code from the e-mail, while a
timer kills lockerd at a random instant. Then: no parcel is lost (each one deposited is picked up
with the code its recipient received), no code is lost or replaced (every arrival e-mail to a
recipient carries the same code: it is derived again, never drawn anew, after a crash), and every
cell is true to its door (all free, closed, with no parcel left in the books).
"""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.control import ControlError
from tests.fixtures.messaging import SmtpCollector
from tests.fixtures.parcel_lockerd import mailed_codes, parcel_lockerd, smtp_notifier, wait_until

CYCLES = 6
RECIPIENTS = [f"r{i}" for i in range(CYCLES)]
PARCEL_CELLS = (2, 3, 4, 5)


def _parcels_toml() -> str:
    from contract.pin_hash import hash_pin

    lines = ['address = "1 Crash Street"', "[[staff]]", 'id = "c1"', 'name = "Carl"',
             'role = "courier"', 'code = "1001"', f'pin_hash = "{hash_pin("2468", n=16)}"',
             "[[staff]]", 'id = "a1"', 'name = "Ann"', 'role = "administrator"',
             'code = "4004"', f'pin_hash = "{hash_pin("9753", n=16)}"']
    for rid in RECIPIENTS:
        lines += ["[[recipients]]", f'id = "{rid}"', f'name = "Person {rid}"',
                  f'email = "{rid}@example.org"']
    return "\n".join(lines) + "\n"


def _codes(mailbox: SmtpCollector, rid: str) -> list[str]:
    return mailed_codes(mailbox, f"{rid}@example.org")


def test_kill9_during_deposits_and_pickups_loses_no_parcel_and_no_code(
        board_sim: Any, lockerd: Any, tmp_path: Path) -> None:
    rng = random.Random(12)
    mailbox = SmtpCollector()
    locker = parcel_lockerd(board_sim, lockerd, tmp_path, _parcels_toml(), smtp_notifier(mailbox),
                            wait=False)
    sim, d, http = locker.sim, locker.d, locker.http
    kills = 0

    def ready() -> bool:
        return bool(http.get("/api/v1/health").json()["ready"])

    def settle() -> None:
        """After a kill: lockerd back, every door closed, no open pending."""
        nonlocal kills
        if d.proc.poll() is not None:
            kills += 1
            d.start()
        for cell in PARCEL_CELLS:
            sim.close_door(0, cell)
        wait_until(ready)
        wait_until(lambda: all(c["pending"] is None and c["door"] == "closed"
                          for c in d.ctl("cells")["cells"]))

    def killer(after: float) -> threading.Timer:
        timer = threading.Timer(after, lambda: d.proc.poll() is None and d.kill9())
        timer.start()
        return timer

    def door_cycle(cell: int) -> None:
        wait_until(lambda: d.cell(cell)["door"] == "open", 5)
        sim.close_door(0, cell)

    wait_until(ready)
    for rid in RECIPIENTS:
        timer = killer(rng.uniform(0.0, 1.2))
        with contextlib.suppress(httpx.TransportError, AssertionError, OSError, ControlError,
                                 KeyError):
            session = http.post("/api/v1/parcels/staff/login",
                                json={"code": "1001", "pin": "2468"}).json()["session"]
            placed = http.post("/api/v1/parcels/deposits", json={
                "session": session, "recipient_id": rid, "size": "S"}).json()
            door_cycle(placed["cell"])
            code = wait_until(lambda rid=rid: _codes(mailbox, rid), 5)[0]
            opened = http.post("/api/v1/parcels/pickup", json={"code": code}).json()
            door_cycle(opened["cell"])
        timer.join()
        settle()

    # Whatever a kill interrupted: each parcel deposited is picked up with the code received.
    deposited = {r["parcel_id"]: r for r in d.lines
                 if r.get("kind") == "event" and r.get("type") == "parcel_deposited"}
    picked = {r["parcel_id"] for r in d.lines
              if r.get("kind") == "event" and r.get("type") == "parcel_picked_up"}
    for pid, record in deposited.items():
        if pid in picked:
            continue
        rid = record["recipient_id"]
        code = wait_until(lambda rid=rid: _codes(mailbox, rid))[0]
        mark = d.mark
        opened = http.post("/api/v1/parcels/pickup", json={"code": code})
        assert opened.status_code == 200, (rid, opened.text)
        door_cycle(opened.json()["cell"])
        d.wait_event("parcel_picked_up", parcel_id=pid, since=mark)

    assert kills >= 3, kills
    assert deposited, "no deposit completed at all"
    for record in deposited.values():
        codes = _codes(mailbox, record["recipient_id"])
        assert codes and len(set(codes)) == 1, (record["recipient_id"], codes)
    admin = http.post("/api/v1/parcels/staff/login",
                      json={"code": "4004", "pin": "9753"}).json()["session"]
    cells = http.get("/api/v1/parcels/admin/cells", params={"session": admin}).json()["cells"]
    for cell in cells:
        if cell["business"] == "parcels":
            assert (cell["state"], cell["door"], cell["parcels"]) == ("free", "closed", []), cell
    d.terminate()
    mailbox.close()


def test_a_board_back_while_lockerd_was_stopped_lets_the_window_run_again(
        board_sim: Any, lockerd: Any, tmp_path: Path) -> None:
    """The board went offline (the window stopped), lockerd stopped, the board came back: the
    machine remembers the board offline and announces `board_online` at start, and the stored
    fault of that cause ends with it (a guard: the causes are kept across restarts)."""
    locker = parcel_lockerd(board_sim, lockerd, tmp_path, _parcels_toml(), wait=False)
    sim, d, http = locker.sim, locker.d, locker.http
    try:
        wait_until(locker.ready)
        session = http.post("/api/v1/parcels/staff/login",
                            json={"code": "1001", "pin": "2468"}).json()["session"]
        cell = http.post("/api/v1/parcels/deposits", json={
            "session": session, "recipient_id": RECIPIENTS[0], "size": "S"}).json()["cell"]
        wait_until(lambda: d.cell(cell)["door"] == "open", 5)
        sim.close_door(0, cell)
        d.wait_event("parcel_deposited", cell=cell)
        mark = d.mark
        sim.set_silent(True)
        d.wait_event("board_offline", since=mark)
        d.wait_event("parcel_window_paused", cell=cell, since=mark)
        d.terminate()
        sim.set_silent(False)
        mark = d.mark
        d.start()
        resumed = d.wait_event("parcel_window_resumed", cell=cell, since=mark)
        assert resumed["due_at"] is not None
    finally:
        http.close()
        d.terminate()


#: Runs lockerd (argv: the lockerd script, then its arguments) with a crash hook: kill -9 of
#: itself at the instant the parcel book would carry a fault's begin ("+fault") or end
#: ("-fault"): the cell machine's event is committed, the book's write comes next.
CRASH_AT_FAULT = """
import os, signal, sys
from daemon.parcels.service import ParcelsService
carry = ParcelsService._outcomes
def crash_at_fault(self, todo):
    if any(kind == "MARK" for kind, _, _ in todo):
        os.kill(os.getpid(), signal.SIGKILL)
    carry(self, todo)
ParcelsService._outcomes = crash_at_fault
sys.argv = ["lockerd", *sys.argv[2:]]
from daemon.cli import main
sys.exit(main())
"""


def _parcel_locker_crashing_at(mark: str, board_sim: Any, lockerd: Any,
                               tmp_path: Path) -> tuple[Any, Any, httpx.Client, int]:
    """lockerd with the crash hook at `mark`, and a parcel deposited: (lockerd, board, kiosk
    client, the parcel's cell)."""
    import sys

    hook = tmp_path / "crash_at_fault.py"
    hook.write_text(CRASH_AT_FAULT.replace("MARK", mark))
    locker = parcel_lockerd(board_sim, lockerd, tmp_path, _parcels_toml(),
                            wrapper=[sys.executable, str(hook)])
    sim, d, http = locker.sim, locker.d, locker.http
    session = http.post("/api/v1/parcels/staff/login",
                        json={"code": "1001", "pin": "2468"}).json()["session"]
    cell = http.post("/api/v1/parcels/deposits", json={
        "session": session, "recipient_id": RECIPIENTS[0], "size": "S"}).json()["cell"]
    wait_until(lambda: d.cell(cell)["door"] == "open", 5)
    sim.close_door(0, cell)
    d.wait_event("parcel_deposited", cell=cell)
    return d, sim, http, cell


def _stored_faults(d: Any, cell: int) -> tuple[str, list[list[Any]]]:
    """What the kill left on disk: the last event, and the book's faults of the cell."""
    from daemon.io.store import LockerStore

    store = LockerStore(Path(d.socket).parent)
    try:
        faults = store.meta("parcels")["book"]["faults"].get(str(cell), [])
        return store.outbox()[-1]["type"], faults
    finally:
        store.close()


@pytest.mark.parametrize("fault", ["forced_open", "board_offline"])
def test_a_crash_between_a_fault_end_and_the_book_lets_the_window_run_again(
        board_sim: Any, lockerd: Any, tmp_path: Path, fault: str) -> None:
    """Two writes: the cell machine's `unblocked` (or `board_online`), then the book's end of
    the fault. lockerd killed between them: the book still kept the fault, and the window
    stayed paused for ever. Now lockerd compares the book's faults with the restored cells and
    boards at start and ends those that are over."""
    d, sim, http, cell = _parcel_locker_crashing_at("-fault", board_sim, lockerd, tmp_path)
    try:
        mark = d.mark
        if fault == "forced_open":  # the machine blocks the cell, the window stops
            sim.open_door(0, cell)
            d.wait_event("parcel_window_paused", cell=cell, since=mark)
            sim.close_door(0, cell)
            d.wait_cell(cell, door="closed")
            with contextlib.suppress(ControlError):  # the answer may die with lockerd
                d.ctl("unblock", cell, reason="fixed")
        else:
            sim.set_silent(True)
            d.wait_event("parcel_window_paused", cell=cell, since=mark)
            sim.set_silent(False)
        assert d.proc.wait(10) == -9
        ended = "unblocked" if fault == "forced_open" else "board_online"
        last, faults = _stored_faults(d, cell)  # the book still keeps the fault going on
        assert last == ended and [f[1] for f in faults] == [None], (last, faults)

        d.wrapper = []
        mark = d.mark
        d.start()
        resumed = d.wait_event("parcel_window_resumed", cell=cell, since=mark)
        assert resumed["reason"] == "fault_ended_before_restart"
        assert resumed["due_at"] is not None
        assert not any(r.get("type") == "parcel_window_paused" for r in d.lines[mark:])
    finally:
        http.close()
        if d.proc.poll() is None:
            d.terminate()


@pytest.mark.parametrize("fault", ["forced_open", "board_offline"])
def test_a_crash_between_a_fault_and_the_book_pauses_the_window_at_start(
        board_sim: Any, lockerd: Any, tmp_path: Path, fault: str) -> None:
    """The other side of the same two writes: the cell machine's `forced_open` (or
    `board_offline`) committed, lockerd killed before the book's pause. Before: the window ran
    on while nobody could open the cell. Now lockerd pauses it at start, and the fault's end
    (here the board back) lets it run again as usual."""
    d, sim, http, cell = _parcel_locker_crashing_at("+fault", board_sim, lockerd, tmp_path)
    try:
        if fault == "forced_open":
            sim.open_door(0, cell)
        else:
            sim.set_silent(True)
        assert d.proc.wait(10) == -9
        last, faults = _stored_faults(d, cell)
        began = "blocked" if fault == "forced_open" else fault  # forced_open, then blocked
        assert last == began and faults == [], (last, faults)

        if fault == "forced_open":
            sim.close_door(0, cell)  # the cell stays blocked: forced open
        d.wrapper = []
        mark = d.mark
        d.start()
        paused = d.wait_event("parcel_window_paused", cell=cell, since=mark)
        assert paused["reason"] == "fault_began_before_restart"
        if fault == "board_offline":
            mark = d.mark
            sim.set_silent(False)
            resumed = d.wait_event("parcel_window_resumed", cell=cell, since=mark)
            assert resumed["due_at"] is not None and "reason" not in resumed
    finally:
        http.close()
        if d.proc.poll() is None:
            d.terminate()
