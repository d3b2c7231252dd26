"""A full disk never leaves memory ahead of disk (issue 9, item 9), on a real small file system.

A real lockerd keeps its data_dir on a 2 MB tmpfs that the test fills. Before: `ctl block` got no
answer, a kiosk rental a 500, the cell stayed blocked in memory, and after space came back and a
later commit a kill -9 brought the cell back free with an event gone. Now: operations are refused
at once with `storage_full` and change nothing; door events are held (not announced) until the
disk takes them; an error line at once, a `storage_full` alarm event once space returns; the
locker recovers by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daemon.control import ControlError, request
from daemon.io.store import JOURNAL_FILE, LockerStore
from tests.fixtures.lockerd import LockerdProcess, locker_toml
from tests.fixtures.messaging import free_port
from tests.fixtures.storage_locker import profile_toml

CELLS = [
    {"id": 1, "board": "b0", "lock": 1, "size": "S"},
    {"id": 2, "board": "b0", "lock": 2, "size": "S"},
    {"id": 3, "board": "b0", "lock": 3, "size": "M"},
]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Write until the file system says ENOSPC; the file is what frees the space again."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    return filler


def _ctl(d: LockerdProcess, op: str, cell: int | None = None, **extra) -> dict:
    message = {"op": op, **extra, **({"cell": cell} if cell is not None else {})}
    try:
        return request(d.socket, message, timeout=5.0)
    except ControlError as exc:
        return {"ok": False, "error": "no answer", "message": str(exc)}


def test_a_full_disk_refuses_operations_holds_door_events_and_recovers(board_sim, small_fs,
                                                                       tmp_path) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 25}
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_toml())
    port = free_port()
    extra = (f'profile = "{profile}"\n[kiosk]\nenabled = true\nport = {port}\n'
             '[payment]\nadapter = "simulator"\n')
    data_dir = small_fs / "data"
    config = tmp_path / "L1.toml"
    config.write_text(locker_toml("L1", data_dir, [board], CELLS, extra=extra))
    d = LockerdProcess(config)
    try:
        d.start()
        for i in range(4):
            assert _ctl(d, "block" if i % 2 == 0 else "unblock", 3, reason="setup")["ok"]
        assert d.terminate() == 0  # a clean stop compacts: the journal is empty...
        d.start()
        assert (data_dir / JOURNAL_FILE).stat().st_size == 0  # ...so a commit needs new space
        last = _ctl(d, "cells")["events"]["last_seq"]

        filler = _fill(small_fs)
        mark = d.mark
        started = time.monotonic()
        refused = _ctl(d, "block", 1, reason="cleaning")
        took = time.monotonic() - started
        assert refused.get("error") == "storage_full", refused
        assert took < 1.0, f"refusal took {took:.2f}s"
        assert d.cell(1)["state"] == "free", "the refused block stayed in memory"
        d.wait_line(lambda r: r.get("kind") == "storage_full" and r.get("level") == "error",
                    2, since=mark)

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            draft = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600})
            assert draft.status_code == 201, draft.text
            start = http.post(f"/api/v1/rentals/{draft.json()['rental_id']}/start")
            assert start.status_code == 507, (start.status_code, start.text)
            assert start.json()["error"]["code"] == "storage_full"
        assert d.cell(1)["state"] == "free" and d.cell(2)["state"] == "free"
        assert sim.total_unlocks() == 0, "a lock moved on an operation that was not stored"

        # A door forced while the disk is full: seen at once, held, announced only when stored.
        sim.force_open(0, 2)
        d.wait_cell(2, door="open", state="blocked")
        sim.close_door(0, 2)
        d.wait_cell(2, door="closed")
        time.sleep(0.3)
        assert not any(r.get("kind") == "event" for r in d.lines[mark:]), "announced unstored"

        freed = time.monotonic()
        filler.unlink()
        alarm = d.wait_event("storage_full", 5, since=mark)
        recovered = time.monotonic() - freed
        d.wait_event("door_closed", 5, since=mark, cell=2)
        assert alarm["alarm"] is True and alarm["refused"] >= 2 and alarm["held_events"] >= 3
        assert recovered < 2.0, f"recovery took {recovered:.2f}s"
        assert _ctl(d, "block", 1, reason="cleaning")["ok"]  # a later commit

        d.kill9()
        store = LockerStore(data_dir)
        events = store.outbox(after_seq=last)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(last + 1, last + 1 + len(seqs))), seqs
        types = [e["type"] for e in events]
        assert types[:1] == ["storage_full"], types
        for wanted in ("forced_open", "blocked", "door_closed"):
            assert wanted in types, types
        cells = store.machine_state()["cells"]
        assert cells["2"]["state"] == "blocked" and cells["1"]["state"] == "blocked"
        store.close()
        print(f"\nrefusal {took * 1000:.0f} ms; recovered {recovered * 1000:.0f} ms after space "
              f"returned; {len(events)} events, seq {seqs[0]}..{seqs[-1]}, none missing")
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(small_fs / "filler")


def test_a_commit_the_disk_refuses_changes_nothing_and_leaves_no_half_line(small_fs) -> None:
    from daemon.io.store import StoreWriteFailed

    store = LockerStore(small_fs / "data")
    store.commit({"cells": {"1": {"state": "free"}}}, [("e", {})], now_ms=1)
    store.compact()  # empty journal: the next line needs a fresh page
    filler = _fill(small_fs)
    with pytest.raises(StoreWriteFailed) as failed:
        store.commit({"cells": {"1": {"state": "blocked"}}}, [("blocked", {"pad": "x" * 9000})],
                     now_ms=2, payments=[{"op_id": "p1", "settled": False}])
    assert failed.value.errno == errno.ENOSPC
    assert store.last_seq == 1 and [e["type"] for e in store.outbox()] == ["e"]
    assert store.machine_state()["cells"]["1"] == {"state": "free"} and store.payments() == []
    assert (small_fs / "data" / JOURNAL_FILE).stat().st_size == 0
    filler.unlink()
    store.commit({"cells": {"1": {"state": "blocked"}}}, [("blocked", {})], now_ms=3)
    again = LockerStore(small_fs / "data")
    assert again.last_seq == 2 and again.machine_state()["cells"]["1"] == {"state": "blocked"}


def test_remote_commands_on_a_full_disk_are_rejected_storage_full(
    mqtt_broker, locker_credentials, board_sim, small_fs, tmp_path
) -> None:
    """Before: the command handler raised on the failed write and no result came back."""
    import json

    from tests.test_fleet_e2e import TOPICS, command, locker_extra, results_for

    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    locker = locker_credentials.locker_id
    data_dir = small_fs / "data"
    config = tmp_path / "L.toml"
    config.write_text(locker_toml(locker, data_dir, [board], CELLS,
                                  extra=locker_extra(mqtt_broker, locker_credentials)))
    d = LockerdProcess(config)
    console = mqtt_broker.console_client()
    console.subscribe(TOPICS.cmd_result(locker))
    try:
        d.start()
        assert d.terminate() == 0
        mark = d.mark
        d.start()
        d.wait_line(lambda r: r.get("kind") == "mqtt_connected", since=mark)
        assert (data_dir / JOURNAL_FILE).stat().st_size == 0
        filler = _fill(small_fs)
        for type_, cell in (("open", 1), ("block", 2)):
            cmd = command(locker, type_, cell=cell)
            console.publish(TOPICS.cmd(locker), json.dumps(cmd))
            (answer,) = results_for(console, cmd["cmd_id"], 1, timeout=5)
            assert answer["status"] == "rejected" and answer["reason"] == "storage_full", answer
        assert sim.total_unlocks() == 0
        assert d.cell(1)["state"] == "free" and d.cell(2)["state"] == "free"
        filler.unlink()
        d.wait_event("storage_full", 5, since=mark)
        cmd = command(locker, "block", cell=2)
        console.publish(TOPICS.cmd(locker), json.dumps(cmd))
        assert [r["status"] for r in results_for(console, cmd["cmd_id"], 2)] == ["accepted",
                                                                                 "done"]
    finally:
        console.close()
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
