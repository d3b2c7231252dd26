"""The typed tenancy (daemon/fsm/tenancy.py): a core the machines know, a payload they never
read; and a store written before the split (snapshot version 1, flat tenancies) still loads."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from daemon.fsm import CellSpec, LockerMachine, Timing
from daemon.fsm.tenancy import Tenancy
from daemon.io.store import LockerStore
from tests.fixtures.fsm_actions import event

CELLS = (CellSpec(1, "A", 1, "S"), CellSpec(2, "A", 2, "M"))

#: What today's code (before the split) stored: cell 1 rented and waived (its due time emptied),
#: cell 2 with a deposit pending whose run time was left open. Written by that code's machine.
V1_SNAPSHOT = json.loads("""
{"version": 1, "cells": {"1": {"board": "A", "lock": 1, "state": "occupied", "since": 4000,
 "door": "closed", "last_door": "closed", "item_present": true, "door_open_since": null,
 "left_open_at": null, "paused_at": null, "pending": null, "tenancy": {"id": "1-abc",
 "kind": "rental", "mode": "prepaid", "paid": 100, "payments": [{"op_id": "o1",
 "paid_at": 1500}], "language": "en", "secret": {"pin": "1234", "phone": "+79990001122"},
 "started_at": 4000, "due_at": null, "billing_stopped_at": 5000}, "overdue_announced": false,
 "block_reason": null}, "2": {"board": "A", "lock": 2, "state": "free", "since": 1000,
 "door": "closed", "last_door": "closed", "item_present": false, "door_open_since": null,
 "left_open_at": null, "paused_at": null, "pending": {"purpose": "deposit", "ref": "r2",
 "attempt": 1, "opened": false, "confirm_at": 9000, "cancel_at": 66000, "tenancy": {"id": "2-def",
 "kind": "rental", "due_after_ms": null, "secret": {"pin": "9999"}}}, "tenancy": null,
 "overdue_announced": false, "block_reason": null}}, "boards": {"A": {"failures": 0,
 "offline": false}}}
""")


def test_a_store_written_before_the_split_loads_and_reads_the_same(tmp_path: Path) -> None:
    store = LockerStore(tmp_path)
    store.commit(V1_SNAPSHOT, now_ms=7000)
    store.close()
    store = LockerStore(tmp_path)
    m = LockerMachine(CELLS, Timing(), store.machine_state(), now_ms=8000)
    store.close()
    old = V1_SNAPSHOT["cells"]
    assert m.tenancy(1) == old["1"]["tenancy"]  # the business's view is what it was
    assert m.pending_tenancy(2) == old["2"]["pending"]["tenancy"]
    stored = m.snapshot()
    assert stored["version"] == 2
    core = stored["cells"]["1"]["tenancy"]
    assert (core["id"], core["business"], core["started_at"], core["due_at"]) == (
        "1-abc", "storage", 4000, None)
    assert core["secret"] == {"pin": "1234", "phone": "+79990001122"}
    assert "secret" not in core["payload"] and core["payload"]["paid"] == 100
    again = LockerMachine(CELLS, Timing(), copy.deepcopy(stored), now_ms=9000)
    assert again.snapshot() == stored and again.tenancy(1) == m.tenancy(1)
    # The first commit after the upgrade writes the new form (only the cells that changed,
    # with the version, in one journal line); the store then reads back the same.
    store = LockerStore(tmp_path)
    store.commit(stored, now_ms=9000)
    store.close()
    store = LockerStore(tmp_path)
    reread = store.machine_state()
    store.close()
    assert reread == stored
    assert LockerMachine(CELLS, Timing(), reread, now_ms=9500).tenancy(1) == m.tenancy(1)
    # A waived tenancy never becomes overdue, and its pickup announces no secret.
    m.board_polled("A", {1: (True, True), 2: (True, False)}, 9000)
    ticked = m.tick(10 ** 12)
    assert [a for a in ticked if getattr(a, "type", "") == "overdue"] == []
    m.command(1, "pickup", 10_000)
    m.board_polled("A", {1: (False, True), 2: (True, False)}, 11_000)
    done = event(m.board_polled("A", {1: (True, False), 2: (True, False)}, 12_000),
                 "pickup_completed")
    assert done.data["tenancy"] == {k: v for k, v in old["1"]["tenancy"].items()
                                    if k != "secret"}


def test_the_machines_read_the_core_and_never_the_payload() -> None:
    """A payload key named like a rule (`debt`, `due_at` inside it) changes nothing."""
    m = LockerMachine(CELLS, Timing(), now_ms=0)
    m.board_polled("A", {1: (True, False), 2: (True, False)}, 0)
    m.command(1, "deposit", 0, tenancy={"id": "t", "debt": 500, "due_after_ms": 60_000,
                                        "nested": {"due_at": 1}, "business": "parcels"})
    m.board_polled("A", {1: (False, False), 2: (True, False)}, 1_000)
    m.board_polled("A", {1: (True, True), 2: (True, False)}, 2_000)
    assert m.cell_view(1)["state"] == "occupied"
    m.command(1, "temporary", 3_000)  # no refusal for a `debt` key nothing writes
    stored = m.snapshot()["cells"]["1"]["tenancy"]
    assert stored["business"] == "parcels" and stored["due_at"] == 62_000
    assert stored["payload"] == {"debt": 500, "nested": {"due_at": 1}, "business": "parcels"}
    flat = Tenancy.from_flat(m.tenancy(1) or {}).flat()
    assert flat == m.tenancy(1)
