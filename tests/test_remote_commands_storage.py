"""Remote force-majeure commands (waive, reveal-pin, evict) through RemoteCommands.check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.messages import CommandResult, Reason, SignedCommand
from contract.signing import make_command, private_key_from_seed, public_key_b64
from daemon.remote_commands import (
    COMMAND_ARGS,
    DEFAULT_RETENTION_MS,
    SERVICE_COMMANDS,
    Answer,
    Execute,
    RemoteCommands,
)

KEY = private_key_from_seed(b"\x01" * 32)
OTHER_KEY = private_key_from_seed(b"\x02" * 32)
TRUSTED = {"console-1": public_key_b64(KEY)}
NOW = 1_767_225_600_000
CMD_ID = "5d0a7f3e-8c1b-4f2a-9e6d-3b7c1a2f4e5d"
LOCKER = "L1"
CELLS = (1, 2, 3)
NOTE = "abandoned 40 days, photos in ticket 1234"


def payload(type_: str, args: dict[str, Any], **overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "operator": "carol",
        "reason": "force majeure",
        "key_id": "console-1",
        "private_key": KEY,
        "now_ms": NOW,
        "cmd_id": CMD_ID,
    }
    kwargs.update(overrides)
    return json.dumps(make_command(LOCKER, type_, args, **kwargs)).encode()


def check(data: bytes, stored: dict[str, dict] | None = None, now: int = NOW + 1_000
          ) -> Answer | Execute:
    remote = RemoteCommands(LOCKER, TRUSTED, CELLS)
    return remote.check(data, LOCKER, now, (stored or {}).get)


def rejected(reason: str) -> Answer:
    return Answer([{"cmd_id": CMD_ID, "status": "rejected", "reason": reason, "data": {}}])


# -- accepted -----------------------------------------------------------------------------------
def test_the_force_majeure_commands_and_their_args() -> None:
    assert set(SERVICE_COMMANDS) == {"waive", "reveal-pin"}
    assert COMMAND_ARGS["waive"] == COMMAND_ARGS["reveal-pin"] == frozenset({"cell"})
    assert COMMAND_ARGS["evict"] == frozenset({"cell", "note"})


@pytest.mark.parametrize("type_", ["waive", "reveal-pin"])
def test_signed_service_commands_are_executed(type_: str) -> None:
    out = check(payload(type_, {"cell": 3}))
    assert isinstance(out, Execute)
    assert (out.kind, out.cell) == (type_, 3)
    assert out.command == SignedCommand.from_payload(payload(type_, {"cell": 3}))
    assert out.record == {
        "cmd_id": CMD_ID, "type": type_, "args": {"cell": 3}, "operator": "carol",
        "results": [], "received_at": NOW + 1_000,
        "keep_until": NOW + 30_000 + DEFAULT_RETENTION_MS,
    }


def test_signed_evict_with_a_note_is_executed_on_the_cell_machine() -> None:
    out = check(payload("evict", {"cell": 2, "note": NOTE}))
    assert isinstance(out, Execute)
    assert (out.kind, out.cell) == ("evict", 2)
    assert out.command.args == {"cell": 2, "note": NOTE}
    assert out.record["type"] == "evict"
    assert out.record["args"] == {"cell": 2, "note": NOTE}


def test_a_note_with_surrounding_spaces_is_still_a_note() -> None:
    assert isinstance(check(payload("evict", {"cell": 1, "note": "  x  "})), Execute)


# -- malformed ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        {"cell": 3},  # no note
        {"cell": 3, "note": ""},
        {"cell": 3, "note": "   "},
        {"cell": 3, "note": "\n\t"},
        {"cell": 3, "note": None},
        {"cell": 3, "note": 42},
        {"cell": 3, "note": ["abandoned"]},
        {"cell": 3, "note": NOTE, "extra": 1},
        {"cell": 3, "note": NOTE, "reason": "x"},
        {"note": NOTE},  # no cell
        {"cell": "3", "note": NOTE},
        {"cell": True, "note": NOTE},
        {"cell": 3.0, "note": NOTE},
        {},
    ],
)
def test_evict_without_a_proper_note_or_with_other_args_is_malformed(args: dict) -> None:
    assert check(payload("evict", args)) == rejected(Reason.MALFORMED)


@pytest.mark.parametrize("type_", ["waive", "reveal-pin"])
@pytest.mark.parametrize(
    "args",
    [{}, {"cell": 3, "note": NOTE}, {"cell": 3, "amount": 100}, {"cell": "3"}, {"cell": None},
     {"cell": False}],
)
def test_service_commands_with_other_args_are_malformed(type_: str, args: dict) -> None:
    assert check(payload(type_, args)) == rejected(Reason.MALFORMED)


# -- unsupported, unknown cell, signature -------------------------------------------------------
@pytest.mark.parametrize("type_", ["waive-all", "reveal_pin", "Evict", "format-disk", "seize"])
def test_unknown_types_are_unsupported(type_: str) -> None:
    assert check(payload(type_, {"cell": 3})) == rejected(Reason.UNSUPPORTED)


@pytest.mark.parametrize(("type_", "args"), [("waive", {"cell": 9}), ("reveal-pin", {"cell": 0}),
                                             ("evict", {"cell": 99, "note": NOTE})])
def test_a_cell_the_locker_does_not_have_is_unknown(type_: str, args: dict) -> None:
    assert check(payload(type_, args)) == rejected(Reason.UNKNOWN_CELL)


@pytest.mark.parametrize("type_", ["waive", "reveal-pin", "evict"])
def test_a_command_signed_by_an_untrusted_key_is_rejected(type_: str) -> None:
    args = {"cell": 3, "note": NOTE} if type_ == "evict" else {"cell": 3}
    assert check(payload(type_, args, private_key=OTHER_KEY)) == rejected(Reason.BAD_SIGNATURE)


def test_a_note_changed_after_signing_breaks_the_signature() -> None:
    cmd = json.loads(payload("evict", {"cell": 3, "note": NOTE}))
    cmd["args"]["note"] = "nothing to see"
    assert check(json.dumps(cmd).encode()) == rejected(Reason.BAD_SIGNATURE)


def test_an_expired_evict_is_rejected() -> None:
    out = check(payload("evict", {"cell": 3, "note": NOTE}), now=NOW + 30_000 + 5_001)
    assert out == rejected(Reason.EXPIRED)


def test_a_redelivered_evict_gets_the_first_answer_and_is_not_executed() -> None:
    first = [{"cmd_id": CMD_ID, "status": "done", "data": {"door": "open", "cell": 3}}]
    out = check(payload("evict", {"cell": 3, "note": NOTE}), stored={CMD_ID: {"results": first}})
    assert out == Answer(first)


def test_rejections_are_valid_command_results() -> None:
    out = check(payload("evict", {"cell": 3}))
    assert isinstance(out, Answer) and out.unattributed_reason is None
    assert [CommandResult.from_dict(r).reason for r in out.results] == [Reason.MALFORMED]


# -- settling ------------------------------------------------------------------------------------
def test_an_evict_is_settled_by_the_door_and_a_waiver_is_not() -> None:
    out = check(payload("evict", {"cell": 3, "note": NOTE}))
    assert isinstance(out, Execute)
    done = RemoteCommands.settled_by(out.record, "door_opened", {"ref": CMD_ID})
    assert done == {"cmd_id": CMD_ID, "status": "done", "data": {"door": "open", "cell": 3}}
    failed = RemoteCommands.settled_by(out.record, "lock_fault", {})
    assert failed is not None and failed["status"] == "failed"
    assert failed["reason"] == Reason.LOCK_FAULT
    # Nobody opened the door in time: the eviction is cancelled and the command failed.
    cancelled = RemoteCommands.settled_by(out.record, "eviction_cancelled",
                                          {"reason": "not_opened"})
    assert cancelled is not None and cancelled["status"] == "failed"
    assert cancelled["reason"] == "not_opened"
    waive = check(payload("waive", {"cell": 3}))
    assert isinstance(waive, Execute)
    assert RemoteCommands.settled_by(waive.record, "door_opened", {}) is None


# -- properties ----------------------------------------------------------------------------------
@given(st.text(max_size=40))
def test_evict_runs_exactly_when_the_note_has_non_space_text(note: str) -> None:
    out = check(payload("evict", {"cell": 1, "note": note}))
    if note.strip():
        assert isinstance(out, Execute) and out.command.args["note"] == note
    else:
        assert out == rejected(Reason.MALFORMED)


@given(st.dictionaries(st.sampled_from(["cell", "note", "x", "amount"]),
                       st.integers(1, 3) | st.just(NOTE), max_size=4))
def test_waive_runs_only_with_exactly_a_cell(args: dict[str, Any]) -> None:
    out = check(payload("waive", args))
    if set(args) == {"cell"} and isinstance(args["cell"], int):
        assert isinstance(out, Execute) and out.cell == args["cell"]
    else:
        assert out == rejected(Reason.MALFORMED)


def test_a_parcel_command_on_a_locker_without_the_parcel_business_is_refused_at_once() -> None:
    args = {"parcel_id": "P-1", "barcode": "BC-1", "recipient_id": "r1"}
    storage_only = RemoteCommands(LOCKER, TRUSTED, CELLS, locker_commands=())
    assert storage_only.check(payload("expect-parcel", args), LOCKER, NOW + 1_000,
                              {}.get) == rejected("no_parcels_business")
    # Malformed args are still malformed, whatever business the locker runs.
    assert storage_only.check(payload("expect-parcel", {}), LOCKER, NOW + 1_000,
                              {}.get) == rejected(Reason.MALFORMED)
    parcels = RemoteCommands(LOCKER, TRUSTED, CELLS, locker_commands=["expect-parcel"])
    out = parcels.check(payload("expect-parcel", args), LOCKER, NOW + 1_000, {}.get)
    assert isinstance(out, Execute) and out.kind == "expect-parcel"
