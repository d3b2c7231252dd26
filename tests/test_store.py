"""The store commits state and events together, atomically, and survives kill -9 at any instant."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from daemon.io.store import STORE_FILE, LockerStore, StoreCorrupt


def test_commit_numbers_events_across_restarts(tmp_path: Path) -> None:
    store = LockerStore(tmp_path)
    first = store.commit({"cells": [1]}, [("deposit_started", {"cell": 1})], now_ms=1000)
    assert [e["seq"] for e in first] == [1]
    store.close()
    store = LockerStore(tmp_path)
    assert store.machine_state() == {"cells": [1]}
    more = store.commit({"cells": [2]}, [("a", {}), ("b", {"x": 1})], now_ms=2000)
    assert [e["seq"] for e in more] == [2, 3]
    assert [e["type"] for e in store.outbox()] == ["deposit_started", "a", "b"]
    assert len({e["id"] for e in store.outbox()}) == 3


def test_the_outbox_bound_drops_the_oldest_a_tenth_at_a_time_and_says_which(
    tmp_path: Path,
) -> None:
    store = LockerStore(tmp_path, outbox_max=20)
    store.commit(None, [(f"e{i}", {}) for i in range(20)], now_ms=1)
    assert store.take_dropped() == [] and len(store.outbox()) == 20
    store.commit(None, [("e20", {})], now_ms=2)  # one over: down to 18
    assert store.take_dropped() == [(1, 3)] and store.take_dropped() == []
    assert [e["seq"] for e in store.outbox()] == list(range(4, 22))
    store.acknowledge(10)
    store.commit(None, [(f"f{i}", {}) for i in range(30)], now_ms=3)  # new ones past it too
    assert store.take_dropped() == [(11, 33)]
    store.close()
    store = LockerStore(tmp_path, outbox_max=0)  # the drops are durable; 0 keeps none
    assert [e["seq"] for e in store.outbox()] == list(range(34, 52)) and store.last_seq == 51
    assert [e["seq"] for e in store.commit(None, [("g", {})], now_ms=4)] == [52]
    assert store.take_dropped() == [(34, 52)] and store.outbox() == []


def test_acknowledge_drops_only_up_to_seq(tmp_path: Path) -> None:
    store = LockerStore(tmp_path)
    store.commit(None, [(f"e{i}", {}) for i in range(5)], now_ms=1)
    assert store.acknowledge(3) == 3
    store.close()
    store = LockerStore(tmp_path)
    assert [e["seq"] for e in store.outbox()] == [4, 5]
    assert store.last_seq == 5  # acknowledged events never make seq go back


def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path: Path) -> None:
    store = LockerStore(tmp_path)
    store.commit({"v": 1}, [("e", {})], now_ms=1)
    store.close()
    (tmp_path / f".{STORE_FILE}.999.tmp").write_text('{"half": ')
    store = LockerStore(tmp_path)
    assert store.machine_state() == {"v": 1}
    assert not list(tmp_path.glob("*.tmp"))


def test_damaged_store_is_refused_not_guessed(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).write_text('{"state": {"1": ')
    with pytest.raises(StoreCorrupt, match="damaged"):
        LockerStore(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys
    from daemon.io.store import LockerStore
    store = LockerStore(sys.argv[1])
    n = (store.machine_state() or {"n": 0})["n"]
    print("up", flush=True)
    while True:
        n += 1
        # state n is announced by exactly one event carrying n: both land or neither
        store.commit({"n": n, "pad": "x" * 20000}, [("step", {"n": n})], now_ms=n)
    """
)


def test_kill_9_at_random_instants_leaves_old_or_new_state(tmp_path: Path) -> None:
    rng = random.Random(7)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(15):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = LockerStore(data)  # must open: never a torn file
        n = store.machine_state()["n"]
        events = store.outbox()
        assert store.last_seq == n == len(events)
        assert [e["data"]["n"] for e in events] == list(range(1, n + 1))
        store.close()
    raw = json.loads((data / STORE_FILE).read_text())
    assert set(raw) >= {"state", "meta", "outbox"}


def test_replay_cache_entries_are_pruned_after_keep_until(tmp_path: Path) -> None:
    store = LockerStore(tmp_path)
    store.commit(None, commands=[{"cmd_id": "a", "results": [], "keep_until": 100},
                                 {"cmd_id": "b", "results": [], "keep_until": 300}])
    assert store.prune_commands(200) == 1
    assert store.command_record("a") is None and store.command_record("b") is not None


def _snapshot(states: dict[int, str]) -> dict:
    return {"version": 1, "boards": {}, "cells": {str(c): {"state": s} for c, s in states.items()}}


def test_a_commit_writes_only_what_changed(tmp_path: Path) -> None:
    from daemon.io.store import JOURNAL_FILE

    store = LockerStore(tmp_path)
    store.commit(_snapshot({c: "free" for c in range(1, 481)}), now_ms=1)
    journal = tmp_path / JOURNAL_FILE
    before = journal.stat().st_size
    store.commit(_snapshot({**{c: "free" for c in range(1, 481)}, 7: "occupied"}), now_ms=2)
    line = journal.read_bytes()[before:]
    assert line.count(b"\n") == 1 and len(line) < 200  # one cell, not 480
    store.close()
    again = LockerStore(tmp_path)
    assert again.machine_state()["cells"]["7"] == {"state": "occupied"}
    assert len(again.machine_state()["cells"]) == 480


def test_torn_journal_tail_is_ignored_and_cut(tmp_path: Path) -> None:
    from daemon.io.store import JOURNAL_FILE

    store = LockerStore(tmp_path)
    store.commit(_snapshot({1: "free"}), [("e1", {})], now_ms=1)
    store.commit(_snapshot({1: "occupied"}), [("e2", {})], now_ms=2)
    journal = tmp_path / JOURNAL_FILE
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])  # the last commit was torn by a power cut
    store = LockerStore(tmp_path)
    assert store.machine_state()["cells"]["1"] == {"state": "free"}
    assert [e["type"] for e in store.outbox()] == ["e1"] and store.last_seq == 1
    store.commit(_snapshot({1: "blocked"}), [("e2b", {})], now_ms=3)  # appends after the cut
    store = LockerStore(tmp_path)
    assert [e["type"] for e in store.outbox()] == ["e1", "e2b"]
    assert store.machine_state()["cells"]["1"] == {"state": "blocked"}


def test_replaying_a_journal_over_a_newer_image_is_harmless(tmp_path: Path) -> None:
    from daemon.io.store import JOURNAL_FILE

    store = LockerStore(tmp_path)
    for i in range(5):
        store.commit(_snapshot({1: f"s{i}"}), [(f"e{i}", {})], now_ms=i)
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    store.compact()  # image has everything, journal emptied...
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # ...as if the crash came before the truncate
    store = LockerStore(tmp_path)
    assert store.machine_state()["cells"]["1"] == {"state": "s4"}
    assert [e["seq"] for e in store.outbox()] == [1, 2, 3, 4, 5]


def test_a_journal_written_before_checksums_is_still_read(tmp_path: Path) -> None:
    """Migration: bare JSON lines of an older lockerd are replayed; new lines carry a CRC."""
    from daemon.io.store import JOURNAL_FILE

    legacy = [["outbox", 1, {"seq": 1, "id": "x", "at": 1, "type": "old", "data": {}}],
              ["meta", 1, {"last_seq": 1}]]
    (tmp_path / JOURNAL_FILE).write_bytes(json.dumps(legacy).encode() + b"\n")
    store = LockerStore(tmp_path)
    assert store.last_seq == 1 and [e["type"] for e in store.outbox()] == ["old"]
    store.commit(None, [("new", {})], now_ms=2)
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    assert lines[0].startswith(b"[") and lines[1][8:9] == b" " and int(lines[1][:8], 16) >= 0
    again = LockerStore(tmp_path)
    assert [e["type"] for e in again.outbox()] == ["old", "new"] and again.last_seq == 2


def test_a_bit_flip_that_still_parses_is_caught_by_the_checksum(tmp_path: Path) -> None:
    from daemon.io.store import JOURNAL_FILE

    store = LockerStore(tmp_path)
    for i in range(3):
        store.commit({"n": i}, [("e", {"n": 10 + i})], now_ms=i)
    journal = tmp_path / JOURNAL_FILE
    raw = journal.read_bytes()
    journal.write_bytes(raw.replace(b'"n":10', b'"n":70', 1))  # valid JSON, wrong commit
    with pytest.raises(StoreCorrupt, match=r"line 1 is damaged \(checksum mismatch\)"):
        LockerStore(tmp_path)


def test_a_whole_last_line_that_fails_its_checksum_is_damage_not_a_torn_write(
    tmp_path: Path,
) -> None:
    """A line ends in its newline only once written whole and fsynced: its events may have been
    announced, so cutting it would hand its seq out again. Only a line cut short is torn."""
    from daemon.io.store import JOURNAL_FILE

    store = LockerStore(tmp_path)
    for i in range(3):
        store.commit({"n": i}, [("e", {"n": 10 + i})], now_ms=i)
    journal = tmp_path / JOURNAL_FILE
    raw = journal.read_bytes()
    journal.write_bytes(raw.replace(b'"n":12', b'"n":72', 1))  # the last, whole line rotted
    with pytest.raises(StoreCorrupt, match=r"line 3 is damaged \(checksum mismatch\)"):
        LockerStore(tmp_path)
    assert journal.read_bytes() == raw.replace(b'"n":12', b'"n":72', 1)  # nothing cut


def test_a_big_meta_key_is_not_written_again_with_every_event(tmp_path) -> None:
    """The fleet's configuration body (a parcel locker's directory: megabytes) and the parcel
    state live in meta documents of their own: an event's commit (last_seq moves) writes a
    short journal line, and every key is still there after a reopen."""
    from daemon.io.store import LockerStore

    store = LockerStore(tmp_path)
    body = {"parcels": {"recipients": [{"id": f"r{i}", "name": "x" * 40} for i in range(5000)]}}
    store.commit(None, [("config_applied", {"version": 1})], now_ms=1,
                 meta={"fleet_config": {"version": 1, "body": body}, "parcels": {"v": 1}})
    size = store._storage.journal_bytes
    store.commit(None, [("door_opened", {"cell": 1})], now_ms=2)
    grew = store._storage.journal_bytes - size
    assert 0 < grew < 2_000, grew
    store.commit(None, [], now_ms=3, meta={"parcels": {"v": 2}, "kiosk_limits": {"a": 1}})
    store.close()
    again = LockerStore(tmp_path)
    assert again.meta("fleet_config")["body"] == body
    assert again.meta("parcels") == {"v": 2} and again.meta("kiosk_limits") == {"a": 1}
    assert again.last_seq == 2
    again.close()


def test_a_store_from_before_moves_its_big_meta_keys_out_at_its_first_commit(tmp_path) -> None:
    from daemon.io.store import LockerStore

    store = LockerStore(tmp_path)
    store._write([("meta", 1, {"last_seq": 4, "fleet_config": {"version": 3}, "x": 1})])
    store.close()
    old = LockerStore(tmp_path)
    assert old.meta("fleet_config") == {"version": 3} and old.last_seq == 4
    old.commit(None, [("door_opened", {"cell": 1})], now_ms=2)
    assert "fleet_config" not in old._meta.get(doc_id=1)
    old.close()
    moved = LockerStore(tmp_path)
    assert moved.meta("fleet_config") == {"version": 3} and moved.meta("x") == 1
    assert moved.last_seq == 5
    moved.close()
