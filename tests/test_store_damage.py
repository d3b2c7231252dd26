"""A damaged store journal is never guessed around (issue 9, item 8), against a real lockerd.

Before: a damaged line in the middle was dropped silently with every good commit after it
(last seq 21 -> 16) and the file truncated, so event numbers were reused. Now each line proves
itself whole (a checksum); a torn last line is cut with a warning, damage anywhere else stops the
start with exit 2 naming the file and line, and `lockerd store check` / `lockerd store repair`
let an operator decide.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from daemon.control import ControlError
from daemon.io.store import JOURNAL_FILE, LockerStore
from tests.fixtures.lockerd import LOCKERD, LockerdProcess

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in (1, 2, 3)]


@pytest.fixture
def stopped(board_sim, lockerd) -> tuple[LockerdProcess, Path, int]:
    """A lockerd that made 21 events, one journal line each, then was killed (no compaction)."""
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 25}
    d = lockerd([board], CELLS)
    for i in range(21):
        assert d.ctl("block" if i % 2 == 0 else "unblock", 1, reason=f"r{i}")["ok"]
    last = d.ctl("cells")["events"]["last_seq"]
    assert last == 21
    d.kill9()
    return d, d.socket.parent / JOURNAL_FILE, last


def _lines(journal: Path) -> list[bytes]:
    return journal.read_bytes().splitlines(keepends=True)


def _damage(journal: Path, number: int) -> None:
    """Zeros over the middle of line `number` (1-based): a bad sector, a stray write."""
    lines = _lines(journal)
    line = lines[number - 1]
    mid = len(line) // 2
    lines[number - 1] = line[:mid] + b"\x00" * 6 + line[mid + 6 :]
    journal.write_bytes(b"".join(lines))


def _store(d: LockerdProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOCKERD, "store", *args, "--config", str(d.config_path)],
        capture_output=True, text=True, timeout=30,
    )


def _exit_or_running(d: LockerdProcess, timeout: float = 15.0) -> int | str:
    """lockerd's exit code, or what a running one says its last seq is."""
    assert d.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            d._drain()
            return d.proc.returncode
        with contextlib.suppress(ControlError):
            return f"running with last seq {d.ctl('cells')['events']['last_seq']}"
        time.sleep(0.05)
    raise AssertionError("lockerd neither exited nor answered")


def _text(d: LockerdProcess, since: int) -> str:
    return "\n".join(json.dumps(r) for r in d.lines[since:])


def test_a_damaged_middle_line_stops_the_start_with_exit_2_naming_file_and_line(stopped) -> None:
    d, journal, last = stopped
    count = len(_lines(journal))
    damaged = count - 4  # four good commits after it
    _damage(journal, damaged)
    before = journal.read_bytes()
    mark = d.mark
    d.start(wait_ready=False)
    code = _exit_or_running(d)
    out = _text(d, mark)
    assert code == 2, f"lockerd went on with a damaged journal ({code}, was {last}):\n{out}"
    assert str(journal) in out and f"line {damaged}" in out, out
    assert journal.read_bytes() == before, "the damaged journal was changed"


def test_a_torn_last_line_is_cut_with_a_warning_and_nothing_else_is_lost(stopped) -> None:
    d, journal, last = stopped
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[-1][:40])  # power cut mid-write
    mark = d.mark
    d.start()
    warning = d.wait_line(lambda r: r.get("kind") == "store_warning", 5, since=mark)
    assert warning["level"] == "warning" and "torn last line" in warning["message"]
    assert d.ctl("cells")["events"]["last_seq"] == last
    assert d.ctl("block", 2)["ok"]
    assert d.ctl("cells")["events"]["last_seq"] == last + 1
    d.kill9()
    assert _store(d, "check").returncode == 0


def test_store_check_reports_and_repair_keeps_a_copy_and_every_whole_commit(stopped) -> None:
    d, journal, last = stopped
    assert _store(d, "check").returncode == 0
    count = len(_lines(journal))
    damaged = count - 4
    _damage(journal, damaged)
    damaged_bytes = journal.read_bytes()

    check = _store(d, "check")
    assert check.returncode == 2, check
    assert f"line {damaged}" in check.stdout + check.stderr

    repair = _store(d, "repair")
    assert repair.returncode == 0, repair
    said = repair.stdout + repair.stderr
    assert f"dropped line {damaged}" in said, said
    copies = [p for p in journal.parent.rglob("*") if p.is_file() and p.read_bytes() ==
              damaged_bytes]
    assert copies, f"no copy of the damaged journal kept: {said}"
    assert _store(d, "check").returncode == 0

    # The commits after the damaged line are kept: seq never goes back, so never reused.
    store = LockerStore(journal.parent)
    assert store.last_seq == last
    assert store.warnings == []
    store.close()
    d.start()
    assert d.ctl("cells")["events"]["last_seq"] == last
    assert d.ctl("block", 3)["ok"]
    assert d.ctl("cells")["events"]["last_seq"] == last + 1


def test_store_repair_refuses_while_lockerd_runs(stopped) -> None:
    d, _, _ = stopped
    d.start()
    repair = _store(d, "repair")
    assert repair.returncode == 2 and "running" in repair.stderr, repair
