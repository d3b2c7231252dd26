"""Payload models: every message survives the wire, and bad payloads get one clear exception."""

from __future__ import annotations

import json

import pytest

from contract.messages import (
    PAYLOAD_MODELS,
    BoardHealth,
    CellSnapshot,
    CommandResult,
    ConfigApplied,
    Delivered,
    Event,
    EventAck,
    EventResend,
    EventsGone,
    MalformedPayload,
    Message,
    Notification,
    Reason,
    ResultKey,
    ResyncRequest,
    SignedCommand,
    SignedConfig,
    Status,
    decode_json_object,
    peek_cmd_id,
)
from contract.topics import TopicKind

CMD_ID = "5d0a7f3e-8c1b-4f2a-9e6d-3b7c1a2f4e5d"
SIG = "A" * 85 + "w"


def samples() -> list[Message]:
    """One or more instances of every model (used by test_asyncapi too)."""
    return [
        Status(
            online=True,
            version="0.1.0",
            boot_id="b1",
            started_at=1_700_000_000_000,
            boards=[
                BoardHealth(name="main", online=True, last_ok_at=1_700_000_000_500, failures=0),
                BoardHealth(name="top", online=False, last_ok_at=None, failures=3),
            ],
        ),
        Status.offline(),
        CellSnapshot(cell=3, state="occupied", door="closed", size="M", since=1_700_000_000_000),
        CellSnapshot(cell=12, state="blocked", door="unknown", size="L", since=0),
        Event(seq=1, id=CMD_ID, at=1_700_000_000_000, type="deposit", data={"cell": 3, "x": None}),
        EventAck(up_to_seq=41),
        EventResend(from_seq=7, to_seq=9),
        EventsGone(from_seq=7, to_seq=7),
        ResyncRequest(at=1_700_000_000_000, spread_ms=20_000),
        ResyncRequest(at=0, spread_ms=0, what=["cells", "config"]),
        SignedCommand(
            v=1,
            cmd_id=CMD_ID,
            locker="L1",
            type="open",
            args={"cell": 3},
            issued_at=1_000,
            expires_at=31_000,
            operator="alice",
            reason="ячейка заела",
            key_id="console-1",
            sig=SIG,
        ),
        CommandResult(cmd_id=CMD_ID, status="accepted"),
        CommandResult(cmd_id=CMD_ID, status="rejected", reason=Reason.EXPIRED, data={"a": [1]}),
        SignedConfig(
            v=1,
            locker="L1",
            version=7,
            issued_at=1_000,
            key_id="console-1",
            body={"profile": "p", "tariffs": {"t": [1, 2]}},
            sig=SIG,
        ),
        ConfigApplied(version=7, hash="0" * 64),
        Notification(id="n-1", channel="sms", to="+79001234567", text="Код 123456"),
        Notification(
            id="n-2", channel="email", to="c@example.org", text="Чек", subject="Receipt 42"
        ),
        Delivered(results=[ResultKey(cmd_id=CMD_ID, status="done")], notifications=["n-1"]),
        Delivered(notifications=["n-2"]),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    payload = msg.to_payload()
    assert isinstance(payload, bytes)
    back = type(msg).from_payload(payload)
    assert back == msg
    assert back.to_payload() == payload


def test_every_topic_kind_has_a_model_with_samples() -> None:
    assert set(PAYLOAD_MODELS) == set(TopicKind)
    assert set(PAYLOAD_MODELS.values()) <= {type(m) for m in samples()}


def test_last_will_is_exactly_online_false() -> None:
    assert Status.offline().to_payload() == b'{"online":false}'
    assert Status.from_payload(b'{"online": false}') == Status.offline()


def test_non_ascii_is_sent_as_utf8() -> None:
    cmd = next(m for m in samples() if isinstance(m, SignedCommand))
    assert "ячейка".encode() in cmd.to_payload()


@pytest.mark.parametrize("field", ["pin", "code", "pickup_code"])
def test_cell_snapshot_never_carries_a_pin_or_code(field: str) -> None:
    obj = {"cell": 3, "state": "occupied", "door": "closed", "size": "M", "since": 1, field: "1234"}
    with pytest.raises(MalformedPayload, match=field):
        CellSnapshot.from_payload(json.dumps(obj).encode())


GOOD_CELL = {"cell": 3, "state": "free", "door": "closed", "size": "S", "since": 5}


@pytest.mark.parametrize(
    ("model", "payload", "why"),
    [
        (CellSnapshot, b"", "not JSON"),
        (CellSnapshot, b"{", "not JSON"),
        (CellSnapshot, b"\xff\xfe", "UTF-8"),
        (CellSnapshot, b"[1, 2]", "JSON object"),
        (CellSnapshot, b"null", "JSON object"),
        (CellSnapshot, b'{"cell": NaN}', "NaN"),
        (CellSnapshot, b'{"cell": 1, "cell": 2}', "duplicate key"),
        (CellSnapshot, b"[" * 100_000 + b"]" * 100_000, "nested"),
        (CellSnapshot, json.dumps({**GOOD_CELL, "cell": "3"}).encode(), "cell"),
        (CellSnapshot, json.dumps({**GOOD_CELL, "cell": 0}).encode(), "cell"),
        (CellSnapshot, json.dumps({**GOOD_CELL, "cell": 3.0}).encode(), "cell"),
        (CellSnapshot, json.dumps({**GOOD_CELL, "state": "lost"}).encode(), "state"),
        (CellSnapshot, json.dumps({**GOOD_CELL, "door": None}).encode(), "door"),
        (
            CellSnapshot,
            json.dumps({k: v for k, v in GOOD_CELL.items() if k != "size"}).encode(),
            "size",
        ),
        (Event, b'{"seq": 1, "id": "x", "at": 1, "type": "\\ud800"}', "surrogate"),
        (Status, b'{"online": true}', "version"),
        (Status, b'{"online": "yes"}', "online"),
        (Event, b'{"seq": 0, "id": "x", "at": 1, "type": "t"}', "seq"),
        (Event, json.dumps({"seq": 1, "id": "nope", "at": 1, "type": "t"}).encode(), "id"),
        (EventAck, b'{"up_to_seq": -1}', "up_to_seq"),
        (EventAck, b'{"up_to_seq": true}', "up_to_seq"),
        (CommandResult, json.dumps({"cmd_id": CMD_ID, "status": "failed"}).encode(), "reason"),
        (CommandResult, json.dumps({"cmd_id": CMD_ID, "status": "ok"}).encode(), "status"),
        (ConfigApplied, b'{"version": 1, "hash": "abc"}', "hash"),
    ],
)
def test_malformed_payloads_raise_malformed_payload(
    model: type[Message], payload: bytes, why: str
) -> None:
    with pytest.raises(MalformedPayload, match=why) as info:
        model.from_payload(payload)
    assert info.value.reason == str(info.value)


def _command(**changes: object) -> bytes:
    cmd = next(m for m in samples() if isinstance(m, SignedCommand)).to_dict()
    cmd.update(changes)
    return json.dumps(cmd).encode()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"v": 2}, "v"),
        ({"v": True}, "v"),
        ({"v": "1"}, "v"),
        ({"expires_at": 999}, "expires_at is before issued_at"),
        ({"sig": "not base64!"}, "sig"),
        ({"sig": SIG + "A"}, "sig"),
        ({"locker": "a/b"}, "locker"),
        ({"args": [3]}, "args"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_commands(changes: dict[str, object], why: str) -> None:
    with pytest.raises(MalformedPayload, match=why):
        SignedCommand.from_payload(_command(**changes))


def test_wrong_input_types_are_malformed_not_type_errors() -> None:
    with pytest.raises(MalformedPayload):
        EventAck.from_payload(42)  # type: ignore[arg-type]
    with pytest.raises(MalformedPayload):
        EventAck.from_dict([1])


def test_models_are_immutable() -> None:
    ack = EventAck(up_to_seq=1)
    with pytest.raises(ValueError, match="frozen"):
        ack.up_to_seq = 2  # type: ignore[misc]


def test_peek_cmd_id_for_rejections() -> None:
    assert peek_cmd_id(_command(v=99)) == CMD_ID
    assert peek_cmd_id({"cmd_id": CMD_ID}) == CMD_ID
    assert peek_cmd_id(b"garbage") is None
    assert peek_cmd_id(b'{"cmd_id": 5}') is None
    assert peek_cmd_id(b'{"cmd_id": "../../etc"}') is None


def test_reason_codes() -> None:
    required = {
        "bad_signature",
        "unknown_key",
        "wrong_locker",
        "expired",
        "replayed",
        "malformed",
        "unknown_cell",
        "unsupported",
        "not_yet_valid",
        "busy",
    }
    assert required <= {r.value for r in Reason}
    assert Reason.EXPIRED == "expired"


# -- bounds a database can hold (issue 9, item 1) -----------------------------------------------
def _event(**fields: object) -> dict[str, object]:
    return {"seq": 1, "id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "at": 1, "type": "t"} | fields


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"seq": 2**63}, "out of range"),  # refused by the decoder already
        ({"seq": 2**53}, "seq"),
        ({"at": 10**30}, "out of range"),
        ({"at": 253_402_300_800_000}, "at"),
        ({"type": "t" * 65}, "type"),
    ],
)
def test_event_numbers_and_strings_are_bounded(fields: dict[str, object], why: str) -> None:
    with pytest.raises(MalformedPayload, match=why):
        Event.from_payload(json.dumps(_event(**fields)))


def test_the_largest_values_inside_the_bounds_pass() -> None:
    ev = Event.from_payload(json.dumps(_event(seq=2**53 - 1, at=253_402_300_799_999,
                                              data={"n": 2**63 - 1, "m": -(2**63)})))
    assert ev.seq == 2**53 - 1
    snap = CellSnapshot.from_payload(json.dumps(
        {"cell": 9999, "state": "free", "door": "closed", "size": "S", "since": 0}))
    assert snap.cell == 9999


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"n": ' + b"9" * 5000 + b"}", "5000 characters"),
        (b'{"n": 9223372036854775808}', "out of range"),
        (b'{"n": 1e400}', "out of range"),
        (b'{"n": -1e400}', "out of range"),
        (b'{"n": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
        (b'{"n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ],
)
def test_the_decoder_refuses_numbers_and_nesting_no_database_holds(
    payload: bytes, why: str
) -> None:
    with pytest.raises(MalformedPayload, match=why):
        Event.from_payload(payload)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"seq": 1, "data": {"a": 1, "a": 2}}', "duplicate key 'a'"),
        (b'{"seq": 1, "data": {"k": "\\ud800x"}}', "surrogate"),
        ('{"seq": 1, "data": {"k": "\ud800"}}', "surrogate"),  # a str may hold one raw
        (b'{"n": {"a": [[[' + b"[" * 30 + b"]" * 30 + b"]]]}}", "nested deeper"),
    ],
)
def test_the_decoders_shortcuts_keep_every_check(payload: bytes | str, why: str) -> None:
    """The decoder skips walks the text shows it cannot need; these need them."""
    with pytest.raises(MalformedPayload, match=why):
        decode_json_object(payload)


def test_brackets_and_escapes_inside_strings_are_only_text() -> None:
    text = '{"note": "' + "[{" * 40 + '", "esc": "\\u00e9 \\ud83d\\ude00", "deep": [[1]]}'
    assert decode_json_object(text.encode()) == {
        "note": "[{" * 40, "esc": "\u00e9 \U0001f600", "deep": [[1]]}


@pytest.mark.parametrize(
    "body",
    [
        {"online": True, "version": "1", "boot_id": "b", "started_at": 2**64},
        {"online": True, "version": "v" * 65, "boot_id": "b", "started_at": 1},
        {"online": True, "version": "1", "boot_id": "b", "started_at": 1, "cells": [2**40]},
        {"online": True, "version": "1", "boot_id": "b", "started_at": 1,
         "boards": [{"name": "b", "online": True, "failures": 2**53}]},
    ],
)
def test_status_is_bounded(body: dict[str, object]) -> None:
    with pytest.raises(MalformedPayload):
        Status.from_payload(json.dumps(body))


def test_status_may_declare_its_cells() -> None:
    body = {"online": True, "version": "1", "boot_id": "b", "started_at": 1, "cells": [1, 2]}
    assert Status.from_payload(json.dumps(body)).cells == [1, 2]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"at": 1, "spread_ms": 600001}',
        b'{"at": 1, "spread_ms": -1}',
        b'{"at": 1, "spread_ms": 0, "what": []}',
        b'{"at": 1, "spread_ms": 0, "what": ["pins"]}',
        b'{"at": 1, "spread_ms": 0, "now": true}',
        b'{"spread_ms": 0}',
    ],
)
def test_resync_request_is_bounded(payload: bytes) -> None:
    """A console cannot make a locker wait past ten minutes or republish what is not its."""
    with pytest.raises(MalformedPayload):
        ResyncRequest.from_payload(payload)


def test_resync_request_defaults_to_every_part() -> None:
    assert ResyncRequest.from_payload(b'{"at": 1, "spread_ms": 5}').parts() == {
        "status", "cells", "config"}
    assert ResyncRequest(at=1, spread_ms=0, what=["cells"]).parts() == {"cells"}
