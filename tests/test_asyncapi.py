"""docs/asyncapi.yaml and the code say the same thing.

Fails when a model gains, loses or changes a field and the document is not updated (or the
other way round), when a topic has no channel, or when QoS/retain/direction drift apart.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from contract.messages import PAYLOAD_MODELS, MalformedPayload, Message, Reason, Status
from contract.signing import config_hash, private_key_from_seed, public_key_b64, verify
from contract.signing import verify_config as verify_cfg
from contract.topics import TOPIC_SPECS, Direction, TopicKind, Topics
from tests.test_contract_messages import samples

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
DOC_URI = "urn:asyncapi"
REGISTRY = Registry().with_resource(DOC_URI, Resource.from_contents(DOC, DRAFT7))

#: Keywords whose values must agree between a model's JSON schema and the document.
CONSTRAINTS = ("enum", "const", "minimum", "maximum", "pattern", "minLength", "maxLength")


def resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def doc_schema(name: str) -> dict[str, Any]:
    return DOC["components"]["schemas"][name]


def channel_payload_schema_names(channel: dict[str, Any]) -> set[str]:
    names = set()
    for ref in channel["messages"].values():
        message = resolve(ref["$ref"], DOC)
        names.add(message["payload"]["$ref"].rsplit("/", 1)[1])
    return names


def shape(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A comparable summary of a schema: types, constraints, and nested shapes."""
    if "$ref" in schema:
        return shape(resolve(schema["$ref"], root), root)
    types: set[str] = set()
    merged: dict[str, Any] = {}
    variants = schema.get("anyOf", [schema])
    for variant in variants:
        if "$ref" in variant:
            variant = resolve(variant["$ref"], root)
        t = variant.get("type")
        types.update(t if isinstance(t, list) else [t] if t else [])
        for key in ("properties", "items", "additionalProperties", "required", *CONSTRAINTS):
            if key in variant:
                merged[key] = variant[key]
    out: dict[str, Any] = {"types": frozenset(types)}
    for key in CONSTRAINTS:
        if key in merged:
            out[key] = merged[key]
    if "object" in types:
        props = merged.get("properties", {})
        out["properties"] = {k: shape(v, root) for k, v in props.items()}
        out["required"] = frozenset(merged.get("required", []))
        out["additionalProperties"] = merged.get("additionalProperties", True)
    if "array" in types:
        out["items"] = shape(merged["items"], root)
    return out


def model_of(schema_name: str) -> type[Message]:
    by_name = {m.__name__: m for m in PAYLOAD_MODELS.values()}
    return by_name[schema_name]


def validate(instance: Any, schema_name: str) -> None:
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"}
    jsonschema.Draft7Validator(schema, registry=REGISTRY).validate(instance)


# -- channels and operations ------------------------------------------------------------------
def substitute(address: str) -> str:
    return address.replace("{lockerId}", "L1").replace("{cell}", "7")


def channels_by_kind() -> dict[TopicKind, dict[str, Any]]:
    t = Topics()
    by_topic = {substitute(c["address"]): c for c in DOC["channels"].values()}
    out = {}
    for kind in TopicKind:
        topic = t.topic(kind, "L1", 7 if kind is TopicKind.CELL else None)
        assert topic in by_topic, f"no channel in asyncapi.yaml for {topic}"
        out[kind] = by_topic[topic]
    return out


def test_document_is_asyncapi_3() -> None:
    assert DOC["asyncapi"] == "3.0.0"


def test_every_topic_has_a_channel_and_every_channel_a_topic() -> None:
    by_kind = channels_by_kind()
    assert len(DOC["channels"]) == len(TopicKind) == len(by_kind)
    for channel in DOC["channels"].values():
        for param in channel.get("parameters", {}):
            assert "{" + param + "}" in channel["address"]


def test_channel_payload_is_the_model_of_its_topic() -> None:
    for kind, channel in channels_by_kind().items():
        assert channel_payload_schema_names(channel) == {PAYLOAD_MODELS[kind].__name__}


def test_operations_match_direction_qos_and_retain() -> None:
    by_kind = channels_by_kind()
    seen: set[TopicKind] = set()
    for name, op in DOC["operations"].items():
        channel = resolve(op["channel"]["$ref"], DOC)
        kind = next(k for k, c in by_kind.items() if c is channel)
        spec = TOPIC_SPECS[kind]
        want = "send" if spec.direction is Direction.FROM_LOCKER else "receive"
        assert op["action"] == want, name
        mqtt = op["bindings"]["mqtt"]
        assert (mqtt["qos"], mqtt["retain"]) == (spec.qos, spec.retain), name
        for ref in op["messages"]:
            assert ref["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), name
            resolve(ref["$ref"], DOC)
        seen.add(kind)
    assert seen == set(TopicKind)


def test_last_will_in_server_binding() -> None:
    will = DOC["servers"]["fleet"]["bindings"]["mqtt"]["lastWill"]
    assert substitute(will["topic"]) == Topics().status("L1")
    assert (will["qos"], will["retain"]) == (1, True)
    assert will["message"].encode() == Status.offline().to_payload()


# -- schemas ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", sorted(PAYLOAD_MODELS.values(), key=lambda m: m.__name__), ids=lambda m: m.__name__
)
def test_document_schema_matches_model(model: type[Message]) -> None:
    model_schema = model.model_json_schema()
    mine = shape(model_schema, model_schema)
    theirs = shape(doc_schema(model.__name__), DOC)
    assert set(theirs["properties"]) == set(mine["properties"]), "property names differ"
    assert theirs["required"] == mine["required"], "required fields differ"
    assert theirs["additionalProperties"] is False
    for prop in mine["properties"]:
        assert theirs["properties"][prop] == mine["properties"][prop], f"{prop} differs"


def test_shape_comparison_notices_a_new_field() -> None:
    """The comparison above would fail if a model gained a field the document lacks."""
    schema = copy.deepcopy(doc_schema("EventAck"))
    schema["properties"]["extra"] = {"type": "string"}
    model_schema = PAYLOAD_MODELS[TopicKind.EVENTS_ACK].model_json_schema()
    assert shape(schema, DOC) != shape(model_schema, model_schema)


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_model_samples_validate_against_document(msg: Message) -> None:
    validate(msg.to_dict(), type(msg).__name__)


@pytest.mark.parametrize(
    ("schema_name", "instance"),
    [
        ("Status", {"online": True}),
        ("Status", {"online": False, "pin": "1"}),
        (
            "CellSnapshot",
            {"cell": 1, "state": "free", "door": "closed", "size": "S", "since": 0, "code": "1234"},
        ),
        ("CommandResult", {"cmd_id": "5d0a7f3e-8c1b-4f2a-9e6d-3b7c1a2f4e5d", "status": "failed"}),
        ("EventAck", {"up_to_seq": -1}),
        ("ConfigApplied", {"version": 0, "hash": "0" * 64}),
        ("Notification", {"id": "n1", "channel": "fax", "to": "+1", "text": "t"}),
        ("Notification", {"id": "n1", "channel": "sms", "to": "+1", "text": ""}),
        ("Notification", {"id": "n1", "channel": "sms", "to": "+1"}),
    ],
)
def test_document_and_models_reject_the_same_bad_payloads(
    schema_name: str, instance: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(instance, schema_name)
    with pytest.raises(MalformedPayload):
        model_of(schema_name).from_dict(instance)


def test_examples_are_valid_for_document_and_models() -> None:
    count = 0
    for message in DOC["components"]["messages"].values():
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        for example in message.get("examples", []):
            validate(example["payload"], name)
            model_of(name).from_dict(example["payload"])
            count += 1
    assert count >= len(PAYLOAD_MODELS)


def test_signed_examples_verify_with_the_documented_test_key() -> None:
    key = public_key_b64(private_key_from_seed(b"\x01" * 32))
    assert key in DOC["info"]["description"]
    messages = DOC["components"]["messages"]
    cmd = messages["SignedCommand"]["examples"][0]["payload"]
    assert (
        verify(cmd, trusted_keys={"console-1": key}, locker_id="L1", now_ms=cmd["issued_at"])
        is None
    )
    cfg = messages["SignedConfig"]["examples"][0]["payload"]
    assert verify_cfg(cfg, trusted_keys={"console-1": key}, locker_id="L1") is None
    applied = messages["ConfigApplied"]["examples"][0]["payload"]
    assert applied["hash"] == config_hash(cfg["body"])


def test_every_reason_code_is_documented() -> None:
    text = doc_schema("CommandResult")["properties"]["reason"]["description"]
    missing = [r.value for r in Reason if r.value not in text]
    assert not missing, f"reason codes missing from asyncapi.yaml: {missing}"


def test_every_signed_command_example_verifies() -> None:
    key = public_key_b64(private_key_from_seed(b"\x01" * 32))
    examples = DOC["components"]["messages"]["SignedCommand"]["examples"]
    assert len(examples) >= 2
    for example in examples:
        cmd = example["payload"]
        verdict = verify(cmd, trusted_keys={"console-1": key}, locker_id="L1",
                         now_ms=cmd["issued_at"])
        assert verdict is None, example["name"]


def test_every_command_type_the_console_sends_is_documented() -> None:
    from fleet_console.cli import build_parser, cmd_cell_command

    parser = build_parser()
    [subparsers] = [a for a in parser._actions if a.dest == "command"]
    sent = {name for name, sub in subparsers.choices.items()
            if sub.get_default("handler") is cmd_cell_command}
    assert {"open", "block", "unblock", "waive", "reveal-pin", "evict"} <= sent
    schema = doc_schema("SignedCommand")
    assert sent <= set(schema["properties"]["type"]["examples"])
    assert all(f"`{name}`" in schema["description"] for name in sent)
    result = doc_schema("CommandResult")["description"]
    assert all(f"`{name}`" in result for name in sent)
