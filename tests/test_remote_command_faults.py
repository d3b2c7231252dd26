"""Remote commands that the locker cannot carry out are answered at once, never left to time out.

Real lockerd, real Mosquitto, signed commands (the `fleet` rig of tests/test_fleet_e2e.py). A
force-majeure command on a tenancy that is not a storage rental (a parcel deposited with `lockerd
ctl deposit`) is rejected `not_a_rental`; and a handler that raises, whatever the cause, answers
`failed` / `internal_error` at once and logs the fault at level error with its traceback.
"""

from __future__ import annotations

import json
import time

import pytest

from contract.messages import Reason
from contract.signing import make_command
from tests.test_command_replay_clock import KEY as TRUSTED_KEY  # what _fleet_locker trusts
from tests.test_command_replay_clock import _fleet_locker, _results, signed
from tests.test_fleet_e2e import (  # noqa: F401 (fixture)
    KEY,
    TOPICS,
    command,
    fleet,
    now_ms,
    results_for,
)


def _parcel(sim, d, cell: int) -> None:
    """A deposit through the control socket: a tenancy without a tariff (not a rental)."""
    assert d.ctl("deposit", cell)["ok"]
    d.wait_cell(cell, door="open")
    sim.close_door(0, cell)
    d.wait_cell(cell, state="occupied", door="closed")


@pytest.mark.parametrize("type_", ["waive", "reveal-pin"])
def test_force_majeure_on_a_parcel_is_rejected_not_a_rental(fleet, type_: str) -> None:  # noqa: F811
    sim, d, console, locker = fleet
    _parcel(sim, d, 2)
    cmd = command(locker, type_, cell=2)
    sent = time.monotonic()
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    answers = results_for(console, cmd["cmd_id"], 2, timeout=5)
    took = time.monotonic() - sent
    assert [(a["status"], a.get("reason")) for a in answers] == [
        ("accepted", None), ("rejected", Reason.NOT_A_RENTAL)]
    assert took < 2, took
    d.wait_event("command_rejected", cmd_id=cmd["cmd_id"], reason="not_a_rental")
    assert not [r for r in d.lines if r.get("level") == "error"], d.lines
    assert d.cell(2)["state"] == "occupied"  # nothing changed
    assert d.proc.poll() is None


def test_evict_of_a_parcel_opens_it_and_ends_the_tenancy(fleet) -> None:  # noqa: F811
    """Eviction is a door command: an abandoned parcel can be cleared like a rental."""
    sim, d, console, locker = fleet
    _parcel(sim, d, 3)
    cmd = make_command(locker, "evict", {"cell": 3, "note": "parcel left 40 days"},
                       operator="alice", reason="abandoned", key_id="console-1",
                       private_key=KEY, now_ms=now_ms())
    console.publish(TOPICS.cmd(locker), json.dumps(cmd))
    answers = results_for(console, cmd["cmd_id"], 2, timeout=5)
    assert [a["status"] for a in answers] == ["accepted", "done"]
    sim.close_door(0, 3)
    d.wait_cell(3, state="free", door="closed")
    assert not [r for r in d.lines if r.get("level") == "error"], d.lines


# -- a handler that raises: a real LockerDaemon on the real broker, a fault put into it ---------
@pytest.mark.parametrize("type_", ["waive", "open"])
async def test_a_handler_that_raises_answers_failed_internal_error_at_once(
    storage_locker, mqtt_broker, type_: str
) -> None:
    locker_id, rig, console = await _fleet_locker(storage_locker, mqtt_broker)
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("a fault nobody foresaw")

    try:
        if type_ == "waive":
            rental = await rig.rent("S", period_s=3600)
            cell = rental["cell"]
            rig.daemon.storage.waive = broken  # type: ignore[method-assign]
        else:
            cell = 3
            rig.daemon.machine.command = broken  # type: ignore[method-assign]
        payload = signed(locker_id, rig.daemon.clock(), 30_000, cell=cell, type_=type_)
        cmd_id = json.loads(payload)["cmd_id"]
        sent = time.monotonic()
        console.publish(TOPICS.cmd(locker_id), payload)
        want = (["accepted"] if type_ == "waive" else []) + ["failed"]
        answers = await _results(console, cmd_id, len(want), timeout=5)
        took = time.monotonic() - sent
        assert [a["status"] for a in answers] == want
        assert answers[-1]["reason"] == Reason.INTERNAL_ERROR
        assert took < 2, took
        crash = await rig.wait_log("command_crashed")
        assert crash["level"] == "error" and crash["cmd_id"] == cmd_id
        assert "RuntimeError: a fault nobody foresaw" in crash["traceback"]
        await rig.wait_event("command_failed", cmd_id=cmd_id)

        # A redelivery is answered from the replay cache: the broken handler is not run again.
        console.publish(TOPICS.cmd(locker_id), payload)
        again = await _results(console, cmd_id, len(want), timeout=5)
        assert [a["status"] for a in again] == want
        assert len(calls) == 1
    finally:
        console.close()


# -- parcel commands on a locker without the parcel business ------------------------------------
PARCEL_COMMANDS = {
    "expect-parcel": {"parcel_id": "P-1", "barcode": "BC-1", "recipient_id": "r1"},
    "create-return": {"return_id": "RET-1", "recipient_id": None},
    "report-cells": {"email": "ops@example.org"},
}


async def test_a_storage_only_locker_refuses_parcel_commands_and_builds_no_parcel_business(
    storage_locker, mqtt_broker
) -> None:
    """No `parcels` cells in its profile and no parcels configuration: each parcel command is
    rejected `no_parcels_business` at once, and the parcel business is not there at all."""
    locker_id, rig, console = await _fleet_locker(storage_locker, mqtt_broker)
    try:
        for type_, args in PARCEL_COMMANDS.items():
            cmd = make_command(locker_id, type_, args, operator="olga", reason="",
                               key_id="console-1", private_key=TRUSTED_KEY,
                               now_ms=rig.daemon.clock())
            console.publish(TOPICS.cmd(locker_id), json.dumps(cmd))
            answers = await _results(console, cmd["cmd_id"], 1, timeout=5)
            assert [(a["status"], a.get("reason")) for a in answers] == [
                ("rejected", "no_parcels_business")], (type_, answers)
            await rig.wait_event("command_rejected", cmd_id=cmd["cmd_id"],
                                 reason="no_parcels_business")
        assert [b.name for b in rig.daemon.businesses] == ["storage"]
        assert rig.daemon.parcels is None
        assert not (rig.daemon.config.data_dir / "parcel-codes.key").exists()
        login = await rig.http.post("/api/v1/parcels/staff/login",
                                    json={"code": "1001", "pin": "2468"})
        assert login.status_code == 404
        assert not [r for r in rig.log if r.get("level") == "error"], rig.log
    finally:
        console.close()



async def test_a_configuration_that_gives_a_storage_only_locker_parcels_asks_for_a_restart(
    storage_locker, mqtt_broker
) -> None:
    """The configuration is applied; the parcel business (built at start, with its kiosk
    routes) begins at the next start, and lockerd says so instead of half-running it."""
    import tomllib

    from contract.signing import make_config
    from tests.test_parcels_locker import PROFILE

    locker_id, rig, console = await _fleet_locker(storage_locker, mqtt_broker)
    try:
        body = {"storage": tomllib.loads(PROFILE), "parcels": {"address": "1 Test Street"}}
        signed = make_config(locker_id, 2, body, key_id="console-1", private_key=TRUSTED_KEY,
                             now_ms=rig.daemon.clock())
        console.publish(TOPICS.config(locker_id), json.dumps(signed))
        await rig.wait_event("config_applied", version=2)
        warned = await rig.wait_log("parcels_need_restart")
        assert warned["level"] == "warning"
        assert rig.daemon.parcels is None and rig.daemon.parcels_wanted()
        cmd = make_command(locker_id, "report-cells", {"email": "ops@example.org"},
                           operator="olga", reason="", key_id="console-1",
                           private_key=TRUSTED_KEY, now_ms=rig.daemon.clock())
        console.publish(TOPICS.cmd(locker_id), json.dumps(cmd))
        answers = await _results(console, cmd["cmd_id"], 1, timeout=5)
        assert answers[0]["reason"] == "no_parcels_business"
    finally:
        console.close()
