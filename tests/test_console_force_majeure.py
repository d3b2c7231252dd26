"""The force majeure commands of `locker-console` (waive, reveal-pin, evict) as real processes.

Same setting as tests/test_console_cli.py: a real Mosquitto and a scripted locker on the locker's
own account that verifies every command with the console's public key (contract.signing.verify)
and answers with the results the test scripts for it (or none at all). Exit codes are those of
`open`: 0 done, 1 failed/rejected, 2 unusable request, 3 no answer in time (outcome unknown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.console_cli import (
    audit_row,
    config,
    done,
    failed,
    locker,
    rejected,
    signing_key,
    silent,
    the_command,
)
from tests.test_console_cli import console

__all__ = ["config", "locker", "signing_key"]

TENANCY = "t-20260101-0042"


# -- waive ------------------------------------------------------------------------------------
def test_waive_done_prints_the_amount_waived(config: Path, locker: Any, tmp_path: Path) -> None:
    lk = locker(done({"cell": 3, "tenancy_id": TENANCY,
                      "waived": {"amount": 19050, "currency": "RUB"}}))
    out = console(config, "waive", "--locker", lk.locker, "--cell", "3",
                  "--reason", "terminal broken", "--operator", "alice", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "accepted", f"done: waived 190.50 RUB for cell 3 on {lk.locker} (tenancy {TENANCY})"]
    cmd = the_command(lk)
    assert (cmd["type"], cmd["args"], cmd["operator"], cmd["reason"]) == (
        "waive", {"cell": 3}, "alice", "terminal broken")
    row = audit_row(tmp_path, cmd["cmd_id"])
    assert (row.type, row.reason, row.status) == ("waive", "terminal broken", "done")


def test_waive_formats_by_the_currency_minor_unit(config: Path, locker: Any) -> None:
    lk = locker(done({"cell": 1, "tenancy_id": TENANCY,
                      "waived": {"amount": 1200, "currency": "JPY"}}))
    out = console(config, "waive", "--locker", lk.locker, "--cell", "1", "--reason", "outage",
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert "done: waived 1200 JPY for cell 1" in out.stdout


def test_waive_done_without_an_amount_says_so(config: Path, locker: Any) -> None:
    lk = locker(done({"cell": 3, "tenancy_id": TENANCY, "waived": {"amount": "190"}}))
    out = console(config, "waive", "--locker", lk.locker, "--cell", "3", "--reason", "outage",
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert "does not give the amount waived" in out.stdout


def test_waive_json_prints_the_final_result(config: Path, locker: Any) -> None:
    data = {"cell": 2, "tenancy_id": TENANCY, "waived": {"amount": 100, "currency": "EUR"}}
    lk = locker(done(data))
    out = console(config, "waive", "--locker", lk.locker, "--cell", "2", "--reason", "outage",
                  "--json", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["status"], result["locker"], result["data"]) == ("done", lk.locker, data)


# -- reveal-pin -------------------------------------------------------------------------------
def test_reveal_pin_prints_the_pin_and_a_warning(
    config: Path, locker: Any, tmp_path: Path
) -> None:
    lk = locker(done({"cell": 3, "tenancy_id": TENANCY, "pin": "123456"}))
    out = console(config, "reveal-pin", "--locker", lk.locker, "--cell", "3",
                  "--reason", "abandoned, police present", "--operator", "bob", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "accepted", f"done: PIN of cell 3 on {lk.locker} (tenancy {TENANCY}): 123456"]
    [warning] = out.stderr.splitlines()
    assert "warning: the PIN is secret" in warning and "recorded" in warning
    assert "'bob'" in warning and "abandoned, police present" in warning
    cmd = the_command(lk)
    assert (cmd["type"], cmd["args"], cmd["operator"], cmd["reason"]) == (
        "reveal-pin", {"cell": 3}, "bob", "abandoned, police present")
    row = audit_row(tmp_path, cmd["cmd_id"])
    assert (row.type, row.operator, row.status) == ("reveal-pin", "bob", "done")
    assert row.result_data == {"cell": 3, "tenancy_id": TENANCY, "pin": "redacted"}


def test_reveal_pin_json_keeps_stdout_json_and_warns_on_stderr(
    config: Path, locker: Any
) -> None:
    lk = locker(done({"cell": 3, "tenancy_id": TENANCY, "pin": "000042"}))
    out = console(config, "reveal-pin", "--locker", lk.locker, "--cell", "3", "--reason", "x",
                  "--json", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"]["pin"] == "000042"
    assert "the PIN is secret" in out.stderr


@pytest.mark.parametrize("reason", ["not_occupied", "no_pin"])
def test_reveal_pin_rejected_exits_1_with_the_reason(
    config: Path, locker: Any, reason: str
) -> None:
    lk = locker(rejected(reason))
    out = console(config, "reveal-pin", "--locker", lk.locker, "--cell", "4", "--reason", "x",
                  "--timeout", "5")
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [f"rejected: {reason}"]
    assert "PIN" not in out.stderr


# -- evict ------------------------------------------------------------------------------------
NOTE = "bag, 2 coats; witnesses A, B"


def test_evict_done_says_the_door_is_open(config: Path, locker: Any, tmp_path: Path) -> None:
    lk = locker(done({"cell": 3, "door": "open"}))
    out = console(config, "evict", "--locker", lk.locker, "--cell", "3", "--note", NOTE,
                  "--reason", "abandoned 40 days", "--operator", "carol", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "accepted",
        f"done: the door of cell 3 on {lk.locker} is open; its tenancy is closed as seized"]
    cmd = the_command(lk)
    assert (cmd["type"], cmd["args"], cmd["operator"], cmd["reason"]) == (
        "evict", {"cell": 3, "note": NOTE}, "carol", "abandoned 40 days")
    row = audit_row(tmp_path, cmd["cmd_id"])
    assert (row.type, row.args, row.status) == ("evict", {"cell": 3, "note": NOTE}, "done")


@pytest.mark.parametrize("reason", ["lock_fault", "not_opened"])
def test_evict_failed_exits_1_with_the_reason(config: Path, locker: Any, reason: str) -> None:
    lk = locker(failed(reason))
    out = console(config, "evict", "--locker", lk.locker, "--cell", "3", "--note", NOTE,
                  "--reason", "abandoned", "--timeout", "5")
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == ["accepted", f"failed: {reason}"]


# -- the three alike --------------------------------------------------------------------------
def argv(command: str, locker_id: str, cell: int = 3) -> list[str]:
    extra = ["--note", NOTE] if command == "evict" else []
    return [command, "--locker", locker_id, "--cell", str(cell), "--reason", "test", *extra]


@pytest.mark.parametrize("command", ["waive", "reveal-pin", "evict"])
def test_rejected_not_occupied_exits_1(config: Path, locker: Any, command: str) -> None:
    lk = locker(rejected("not_occupied"))
    out = console(config, *argv(command, lk.locker), "--timeout", "5")
    assert out.returncode == 1, out.stderr
    assert "rejected: not_occupied" in out.stdout
    assert the_command(lk)["type"] == command


@pytest.mark.parametrize("command", ["waive", "reveal-pin", "evict"])
def test_no_answer_exits_3_outcome_unknown(config: Path, locker: Any, command: str) -> None:
    lk = locker(silent)
    out = console(config, *argv(command, lk.locker, cell=5), "--timeout", "0.5")
    assert out.returncode == 3, out.stderr
    assert f"unknown: no final result for {command} of cell 5" in out.stdout
    assert "may still execute until it expires at" in out.stdout
    assert the_command(lk)["type"] == command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evict", "--cell", "3", "--reason", "abandoned"], "--note"),
        (["evict", "--cell", "3", "--reason", "abandoned", "--note", "  "], "--note"),
        (["waive", "--cell", "3"], "--reason"),
        (["reveal-pin", "--cell", "3"], "--reason"),
        (["evict", "--cell", "3", "--note", NOTE], "--reason"),
        (["waive", "--cell", "3", "--reason", " "], "--reason"),
        (["reveal-pin", "--cell", "0", "--reason", "x"], "--cell"),
    ],
)
def test_unusable_request_exits_2_and_sends_nothing(
    config: Path, locker: Any, args: list[str], message: str
) -> None:
    lk = locker(done({"cell": 3, "door": "open"}))
    command, *rest = args
    out = console(config, command, "--locker", lk.locker, *rest, "--timeout", "5")
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert out.stdout == ""
    # A command that had been sent would have been answered `done` (exit 0) before we got here.
    assert lk.verdicts == []
