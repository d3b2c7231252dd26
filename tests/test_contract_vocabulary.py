"""The contract owns the vocabulary: command types, event types and reason codes.

The locker's dispatcher, the console's CLI, the broker's ACL and docs/asyncapi.yaml all follow
contract/commands.py, contract/events.py, contract.messages.Reason and contract.topics: each
test here fails when a name exists in one of them and not in the others.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import yaml

from broker.mosquitto_conf import render_acl
from broker.registry import Registry
from contract.commands import COMMANDS, parse_args
from contract.events import COMMON_FIELDS, EVENTS, event_fields
from contract.messages import MalformedPayload, Reason
from contract.topics import TOPIC_SPECS, Direction, TopicKind
from daemon.fleet import _reason_code
from daemon.fsm.actions import REFUSAL_REASONS
from daemon.remote_commands import COMMAND_ARGS, DOOR_COMMANDS, SERVICE_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
DOC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
SCHEMAS = DOC["components"]["schemas"]


# -- commands ---------------------------------------------------------------------------------
def test_dispatcher_console_and_document_know_the_same_commands() -> None:
    from fleet_console.cli import build_parser, cmd_cell_command

    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    console = {str(n) for n, sub in subparsers.choices.items()
               if sub.get_default("handler") is cmd_cell_command}
    table = {str(t) for t in COMMANDS}
    cell_commands = {str(t) for t, s in COMMANDS.items() if "cell" in s.args.model_fields}
    assert console == cell_commands
    # The others (the parcel business's) are sent by a sub-subcommand: parcels expect, ...
    assert _sent_by_subcommands(parser) == table - cell_commands
    assert set(COMMAND_ARGS) == table
    assert set(SCHEMAS["SignedCommand"]["properties"]["type"]["examples"]) == table
    documented = SCHEMAS["SignedCommand"]["x-commands"]
    assert set(documented) == table
    for t, spec in COMMANDS.items():
        row = documented[str(t)]
        assert row["args"] == list(spec.args.model_fields), t
        assert row["executor"] == str(spec.executor), t
        assert (row["settled_by_door"], row["audited"]) == (spec.settled_by_door, spec.audited)
        assert row["done"] == list(spec.done_data), t
        assert (str(t) in DOOR_COMMANDS) == spec.settled_by_door
        assert (str(t) in SERVICE_COMMANDS) == (spec.executor == "business")


def _sent_by_subcommands(parser: argparse.ArgumentParser) -> set[str]:
    """The command types set as `command_type` by subcommands of subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for inner in sub._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        found.update(str(p.get_default("command_type"))
                                     for p in inner.choices.values()
                                     if p.get_default("command_type"))
    return found


def test_parcel_command_args_are_strict() -> None:
    assert parse_args("create-return", {"return_id": "R1", "recipient_id": None})
    for type_, bad in (
        ("expect-parcel", {"parcel_id": "p", "barcode": "has space", "recipient_id": "r"}),
        ("expect-parcel", {"parcel_id": "p", "barcode": "B1"}),
        ("create-return", {"return_id": "R1"}),
        ("create-return", {"return_id": "R1", "recipient_id": None, "return_code": "1"}),
        ("report-cells", {"email": "not-an-address"}),
        ("report-cells", {"email": 5}),
    ):
        try:
            parse_args(type_, bad)
        except MalformedPayload:
            continue
        raise AssertionError(f"{type_} accepted {bad}")


def test_argument_models_refuse_what_the_locker_refused_before() -> None:
    assert parse_args("open", {"cell": 3}).cell == 3
    assert parse_args("open", {"cell": 0}).cell == 0  # unknown_cell is the locker's to say
    for bad in ({}, {"cell": "3"}, {"cell": True}, {"cell": 3.0}, {"cell": 3, "x": 1}):
        try:
            parse_args("block", bad)
        except MalformedPayload:
            continue
        raise AssertionError(f"accepted {bad}")
    for note in (" ", 5, None):
        try:
            parse_args("evict", {"cell": 3, "note": note})
        except MalformedPayload:
            continue
        raise AssertionError(f"accepted note {note!r}")


# -- events -----------------------------------------------------------------------------------
def _daemon_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in (ROOT / "daemon").rglob("*.py")}


def _recorded_event_types() -> set[str]:
    """Every literal event type the daemon's code hands to Event(...), batch.event(...),
    record_event(...), update_tenancy(event=(...)), and the purposes' event names."""
    found: set[str] = set()
    constants: dict[str, str] = {}
    trees = [ast.parse(text) for text in _daemon_sources().values()]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        constants[target.id] = node.value.value
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("Event", "event", "record_event") and node.args:
                    first = node.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        found.add(first.value)
                    elif isinstance(first, ast.Name) and first.id in constants:
                        found.add(constants[first.id])
                for kw in node.keywords:
                    if kw.arg == "event" and isinstance(kw.value, ast.Tuple):
                        head = kw.value.elts[0]
                        if isinstance(head, ast.Constant) and isinstance(head.value, str):
                            found.add(head.value)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"[a-z]+(_[a-z]+)*_(started|completed|cancelled)", node.value
            ):
                found.add(node.value)
    return found


def test_every_event_the_locker_records_is_in_the_table() -> None:
    recorded = _recorded_event_types()
    assert len(recorded) > 30  # the scan sees the code at all
    assert recorded - set(EVENTS) == set()


def test_every_event_in_the_table_is_recorded_by_the_locker() -> None:
    text = "\n".join(_daemon_sources().values())
    missing = []
    for name in EVENTS:
        if f'"{name}"' in text:
            continue
        status = name.removeprefix("payment_")
        if status != name and 'f"payment_{' in text and f'"{status}"' in text:
            continue
        missing.append(name)
    assert not missing, f"in contract/events.py but recorded nowhere: {missing}"


def test_document_lists_every_event_type_with_its_fields() -> None:
    documented = SCHEMAS["Event"]["x-event-types"]
    assert set(documented) == set(EVENTS)
    for name, spec in EVENTS.items():
        fields = [f for f in event_fields(name) if f not in COMMON_FIELDS]
        assert documented[name] == {"alarm": spec.alarm, "fields": fields}, name
    for example in DOC["components"]["messages"]["Event"]["examples"]:
        assert example["payload"]["type"] in EVENTS


# -- reason codes -----------------------------------------------------------------------------
def test_reason_codes_agree_with_document_and_dispatcher() -> None:
    text = SCHEMAS["CommandResult"]["properties"]["reason"]["description"]
    documented = set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b|\bexpired\b|\breplayed\b|\bmalformed\b"
                                r"|\bunsupported\b|\bbusy\b", text))
    assert {r.value for r in Reason} <= documented
    assert documented - {r.value for r in Reason} <= {"config_rejected", "expires_at", "issued_at"}
    # Whatever the cell machines refuse with reaches the console as a code of the contract.
    assert {_reason_code(r) for r in REFUSAL_REASONS} <= set(Reason)


# -- the broker's access rules ----------------------------------------------------------------
def test_every_topic_has_an_access_rule() -> None:
    acl = render_acl(Registry(Path("unused.json")), "lockers")
    for kind, spec in TOPIC_SPECS.items():
        suffix = f"{kind.value}/+" if kind is TopicKind.CELL else kind.value
        access = "write" if spec.direction is Direction.FROM_LOCKER else "read"
        assert f"pattern {access} lockers/%u/{suffix}\n" in acl, kind
    assert set(TOPIC_SPECS) == set(TopicKind)



def test_parcel_commands_go_to_the_business_with_no_cell() -> None:
    """A parcel command names no cell: the dispatcher hands it on whole (before, reading its
    cell raised); lockerd answers `unsupported` when no business takes it (daemon/fleet.py)."""
    from contract.signing import generate_private_key, make_command, public_key_b64
    from daemon.remote_commands import Execute, RemoteCommands

    key = generate_private_key()
    remote = RemoteCommands("L1", {"k1": public_key_b64(key)}, [1])
    for type_, args in (("expect-parcel", {"parcel_id": "p", "barcode": "B", "recipient_id": "r"}),
                        ("create-return", {"return_id": "R", "recipient_id": None}),
                        ("report-cells", {"email": "a@example.org"})):
        cmd = make_command("L1", type_, args, operator="o", reason="r", key_id="k1",
                           private_key=key, now_ms=1_800_000_000_000)
        answer = remote.check(json.dumps(cmd).encode(), "L1", 1_800_000_000_000, lambda _: None)
        assert isinstance(answer, Execute), type_
        assert (answer.command.type, answer.command.args) == (type_, args)
