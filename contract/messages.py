"""Payload models of every MQTT topic (docs/architecture.md, "MQTT contract"; docs/asyncapi.yaml).

Every model is strict (no "5" for 5, no true for 1) and forbids unknown fields: a payload either
is exactly what the contract says or it is rejected with `MalformedPayload`, whose message names
the field and what is wrong. That one exception is all a receiver has to catch, so bad input from
the network can never crash the daemon's or the console's loop.

Every number and string has bounds a database column can hold (docs/asyncapi.yaml gives them as
minimum/maximum/maxLength): sequence numbers and versions up to 2^53-1, times up to the last
millisecond of year 9999, cell ids 1..MAX_CELL_ID, and any integer in a payload (even inside
free `data`) within int64; non-finite floats, numbers of more than MAX_NUMBER_CHARS characters
and nesting deeper than MAX_DEPTH are refused by the decoder itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from contract.config_file import describe_validation_error
from contract.topics import LOCKER_ID_PATTERN, MAX_CELL_ID, TopicKind

M = TypeVar("M", bound="Message")

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: An Ed25519 signature: 64 bytes in base64url without padding.
SIG_PATTERN = r"^[A-Za-z0-9_-]{86}$"
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"
_UUID_RE = re.compile(UUID_PATTERN)

#: Largest integer every JSON reader (and a BIGINT column) holds exactly: seq, versions, counts.
MAX_SAFE_INT = 2**53 - 1
#: 9999-12-31T23:59:59.999Z: the last time a datetime (and a BIGINT column) can show.
MAX_EPOCH_MS = 253_402_300_799_999
#: Any integer anywhere in a payload (free `data` included) must fit a signed 64-bit column.
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1
#: A JSON number longer than this is refused before Python converts it (a 5000-digit integer
#: would raise ValueError inside json.loads: Python's integer-digit limit).
MAX_NUMBER_CHARS = 32
#: Deepest nesting of objects and arrays accepted in a payload.
MAX_DEPTH = 32
#: Lengths of the contract's strings: identifiers and codes, versions, free texts.
MAX_TOKEN = 64
MAX_TEXT = 1000
#: A relayed SMS or e-mail (a receipt fits; a novel does not).
MAX_NOTIFICATION_TEXT = 20_000
#: Lock boards a status may report.
MAX_BOARDS = 64


class MalformedPayload(ValueError):
    """A payload that is not valid JSON or does not match its model; str() says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reason(StrEnum):
    """Reason codes of `rejected`/`failed` command results (and of config rejections)."""

    #: Signature does not verify with the named key.
    BAD_SIGNATURE = "bad_signature"
    #: key_id is not among the locker's trusted keys.
    UNKNOWN_KEY = "unknown_key"
    #: `locker` is not this locker, or does not match the topic it came on.
    WRONG_LOCKER = "wrong_locker"
    #: now > expires_at (+ skew).
    EXPIRED = "expired"
    #: issued_at is further in the future than the allowed clock skew.
    NOT_YET_VALID = "not_yet_valid"
    #: cmd_id was executed before and its result is no longer stored.
    REPLAYED = "replayed"
    #: Not JSON, missing or mistyped fields, unknown version, undecodable signature.
    MALFORMED = "malformed"
    #: The cell named in args is not in the locker's configuration.
    UNKNOWN_CELL = "unknown_cell"
    #: Unknown command type (or unsupported args for it).
    UNSUPPORTED = "unsupported"
    #: The cell is in the middle of another operation; retry later.
    BUSY = "busy"
    #: The command makes no sense in the cell's state (e.g. unblock a cell that is not blocked).
    INVALID_STATE = "invalid_state"
    #: A configuration whose version is not newer than the applied one.
    STALE_VERSION = "stale_version"
    #: The board driving the cell does not answer.
    BOARD_OFFLINE = "board_offline"
    #: The lock was pulsed (and retried) but the sensor never reported the door open.
    LOCK_FAULT = "lock_fault"
    #: The locker could not carry out the command for a reason of its own (see its logs).
    INTERNAL_ERROR = "internal_error"
    #: The cell has no tenancy to act on (`waive`, `reveal-pin`, `evict`).
    NOT_OCCUPIED = "not_occupied"
    #: The tenancy has no PIN to reveal (`reveal-pin`).
    NO_PIN = "no_pin"
    #: The lock was released but the door was never seen open (`evict`).
    NOT_OPENED = "not_opened"
    #: A configuration whose body is not a valid profile for the locker's cells.
    BAD_PROFILE = "bad_profile"
    #: The locker cannot store anything now (disk full, quota, I/O error): nothing was done.
    STORAGE_FULL = "storage_full"
    #: expires_at - issued_at is longer than the locker accepts (`[trust] max_command_ttl_s`).
    TTL_TOO_LONG = "ttl_too_long"
    #: The cell's tenancy is not a storage rental (a parcel): `waive`, `reveal-pin`.
    NOT_A_RENTAL = "not_a_rental"
    #: A parcel command (`expect-parcel`, `create-return`, `report-cells`) sent to a locker that
    #: runs no parcel business (no `parcels` cells in its profile, no parcels configuration).
    NO_PARCELS_BUSINESS = "no_parcels_business"


def _reject_bool(value: Any) -> Any:
    # Literal[1] accepts True even in strict mode because True == 1; the wire format must not.
    if isinstance(value, bool):
        raise ValueError("must be the integer 1, not a boolean")
    return value


EpochMs = Annotated[int, Field(ge=0, le=MAX_EPOCH_MS, description="Unix epoch milliseconds")]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Seq = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
Uuid = Annotated[str, Field(pattern=UUID_PATTERN, description="UUID, canonical text form")]
LockerId = Annotated[str, Field(pattern=f"^{LOCKER_ID_PATTERN}$", max_length=128)]
CellId = Annotated[int, Field(ge=1, le=MAX_CELL_ID)]
Version1 = Annotated[Literal[1], BeforeValidator(_reject_bool)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
#: An identifier or code: a board name, a version, a boot id, an event type, a reason code.
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN)]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)  # in C; only a payload with a duplicate key pays for finding which
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedPayload(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise MalformedPayload(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedPayload(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = int(text)
    if not MIN_INT64 <= value <= MAX_INT64:
        raise MalformedPayload(f"integer {text} out of range (signed 64-bit)")
    return value


def _finite_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise MalformedPayload(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise MalformedPayload(f"number {text} out of range")
    return value


def decode_json_object(data: bytes | bytearray | str) -> dict[str, Any]:
    """Decode a payload into a JSON object, refusing what other parsers might read differently.

    The console decodes thousands of these a second, so the checks that need a walk over the
    result run only when the text could fail them: nesting only when it has more than MAX_DEPTH
    brackets, lone surrogates only when it has a \\u escape (UTF-8 input holds none otherwise).
    """
    if not isinstance(data, bytes | bytearray | str):
        raise MalformedPayload(f"payload must be bytes, not {type(data).__name__}")
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("payload is not UTF-8 text") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
            parse_int=_bounded_int, parse_float=_finite_float,
        )
    except MalformedPayload:
        raise
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise MalformedPayload(f"not JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise MalformedPayload("JSON nested too deeply") from None
    except ValueError as exc:  # defensively: no decoding error may pass this function
        raise MalformedPayload(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise MalformedPayload(f"expected a JSON object, got {type(obj).__name__}")
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        raise MalformedPayload(f"JSON nested deeper than {MAX_DEPTH} levels")
    if "\\u" in text or (isinstance(data, str) and not text.isascii()):
        try:  # a \ud800 escape decodes to a lone surrogate that no UTF-8 writer can send on
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise MalformedPayload(
                "text contains an unpaired surrogate escape (\\udXXX)") from None
    return obj


def _depth(obj: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]  # only dicts and lists are pushed
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _describe(exc: ValidationError) -> str:
    """Like config_file's description, but a field validator's own message keeps its field."""
    text = describe_validation_error(exc)
    err = exc.errors()[0]
    if err["type"] == "value_error" and err["loc"]:
        text = f"{'.'.join(str(part) for part in err['loc'])}: {text}"
    return text


class Message(BaseModel):
    """Base of every payload: strict, closed, immutable, with the wire helpers."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def to_payload(self) -> bytes:
        """UTF-8 JSON for publishing; top-level fields that are None are left out."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this message (top-level None fields left out)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}

    @classmethod
    def from_payload(cls: type[M], data: bytes | bytearray | str) -> M:
        """Parse a received payload; raises MalformedPayload (only) if it does not fit."""
        return cls.from_dict(decode_json_object(data))

    @classmethod
    def from_dict(cls: type[M], obj: Any) -> M:
        """Validate an already decoded JSON object; raises MalformedPayload (only)."""
        if not isinstance(obj, dict):
            raise MalformedPayload(f"expected a JSON object, got {type(obj).__name__}")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise MalformedPayload(f"{cls.__name__}: {_describe(exc)}") from None
        except (ValueError, TypeError) as exc:  # a validator's own error, defensively
            raise MalformedPayload(f"{cls.__name__}: {exc}") from None


# -- lockers/{id}/status ----------------------------------------------------------------------
class BoardHealth(Message):
    """How one lock board answers polls."""

    name: Token
    online: bool
    #: Last successful poll; None if the board never answered since boot.
    last_ok_at: EpochMs | None = None
    #: Consecutive failed polls.
    failures: Count = 0


class OutboxSummary(Message):
    """A locker's durable outbox as its status reports it: how many events wait for the
    console's ack, and the `at` of the oldest (None when empty). Events wait here, not in a
    broker queue, when the console falls behind."""

    depth: Count
    oldest_at: EpochMs | None = None


class Status(Message):
    """Retained presence of a locker; the last will is `Status.offline()` = `{"online": false}`."""

    online: bool
    version: Token | None = None
    #: Random id per process start: a change tells the console the locker restarted.
    boot_id: Token | None = None
    started_at: EpochMs | None = None
    boards: Annotated[list[BoardHealth], Field(max_length=MAX_BOARDS)] | None = None
    #: The cell ids of the locker's configuration: the console stores snapshots of these cells
    #: only. Optional (lockers before it send none; the console then caps how many it keeps).
    cells: Annotated[list[CellId], Field(max_length=MAX_CELL_ID)] | None = None
    #: Its outbox (optional: lockers before it send none); refreshed at most every 60 s while
    #: events wait in it, so a console sees a backlog without asking.
    outbox: OutboxSummary | None = None

    @model_validator(mode="after")
    def _online_needs_details(self) -> Status:
        if self.online:
            missing = [f for f in ("version", "boot_id", "started_at") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"an online status needs {', '.join(missing)}")
        return self

    @classmethod
    def offline(cls) -> Status:
        """The last-will payload."""
        return cls(online=False)


# -- lockers/{id}/cells/{cell} ----------------------------------------------------------------
class CellSnapshot(Message):
    """Retained state of one cell. Never carries a PIN or pickup code: the topic is readable by
    every console user and retained on the broker."""

    cell: CellId
    state: Literal["free", "occupied", "overdue", "blocked"]
    door: Literal["closed", "open", "unknown"]
    size: Literal["S", "M", "L"]
    #: When `state` was entered.
    since: EpochMs


# -- lockers/{id}/events, events/ack ----------------------------------------------------------
class Event(Message):
    """One entry of the locker's durable outbox; `seq` grows by one per event across restarts."""

    seq: Seq
    id: Uuid
    at: EpochMs
    type: Token
    data: dict[str, Any] = Field(default_factory=dict)


class EventAck(Message):
    """The console stored every event up to and including `up_to_seq`."""

    up_to_seq: Count


#: The longest range one `events/resend` (or `events/gone`) may name: a locker answers a
#: request with at most this many events, so a hostile console cannot make it flood.
MAX_RESEND_RANGE = 1000


class _SeqRange(Message):
    """`from_seq..to_seq`, both included, at most MAX_RESEND_RANGE long."""

    from_seq: Seq
    to_seq: Seq

    @model_validator(mode="after")
    def _ordered(self) -> _SeqRange:
        if self.to_seq < self.from_seq:
            raise ValueError("to_seq must not be below from_seq")
        if self.to_seq - self.from_seq >= MAX_RESEND_RANGE:
            raise ValueError(f"a range spans at most {MAX_RESEND_RANGE} seqs")
        return self


class EventResend(_SeqRange):
    """The console misses these seqs (a hole past its ack watermark): send them again."""


class EventsGone(_SeqRange):
    """The locker's outbox no longer holds these seqs (never written, or dropped): the console
    may acknowledge past them and records a `seq_gap_permanent` alarm."""


# -- lockers/{id}/cmd, cmd/result -------------------------------------------------------------
class SignedCommand(Message):
    """A remote command; `sig` signs the canonical JSON of every other field (contract.signing)."""

    v: Version1
    cmd_id: Uuid
    locker: LockerId
    type: Token
    args: dict[str, Any]
    issued_at: EpochMs
    expires_at: EpochMs
    operator: Annotated[str, Field(max_length=MAX_TEXT)]
    reason: Annotated[str, Field(max_length=MAX_TEXT)]
    key_id: Token
    sig: Annotated[str, Field(pattern=SIG_PATTERN)]

    @model_validator(mode="after")
    def _window(self) -> SignedCommand:
        if self.expires_at < self.issued_at:
            raise ValueError("expires_at is before issued_at")
        return self


class CommandResult(Message):
    """The locker's answer: `accepted` at once, then `done` or `failed`; or `rejected`."""

    cmd_id: Uuid
    status: Literal["accepted", "done", "rejected", "failed"]
    #: A `Reason` code; required for rejected and failed. Kept a plain string so that a console
    #: can show codes added by newer lockers.
    reason: Token | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reason_when_negative(self) -> CommandResult:
        if self.status in ("rejected", "failed") and self.reason is None:
            raise ValueError(f"a {self.status!r} result needs a reason")
        return self


# -- lockers/{id}/config, config/applied ------------------------------------------------------
#: A compressed body: base64url without padding.
BODY_Z_PATTERN = r"^[A-Za-z0-9_-]+$"
#: At most this many characters of `body_z` (a 16 MiB packet, far above any broker limit).
MAX_BODY_Z_CHARS = 16 * 2**20
#: A body inflates to at most this many bytes: a small `body_z` cannot become a memory bomb
#: (10,000 recipients and 500 staff are about 1.6 MB of JSON).
MAX_INFLATED_BODY = 32 * 2**20


def deflate_body(canonical: bytes) -> str:
    """`body_z` for the canonical JSON bytes of a body."""
    return base64.urlsafe_b64encode(zlib.compress(canonical, 6)).rstrip(b"=").decode("ascii")


def inflate_body(body_z: str, max_bytes: int = MAX_INFLATED_BODY) -> dict[str, Any]:
    """The body a `body_z` carries; ValueError if it is not base64url zlib of a JSON object
    of at most `max_bytes` bytes."""
    try:
        packed = base64.urlsafe_b64decode(body_z + "=" * (-len(body_z) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, max_bytes)
    except (binascii.Error, zlib.error, ValueError):
        raise ValueError("body_z is not base64url of zlib data") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"body_z inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise ValueError("body_z is truncated")
    try:
        return decode_json_object(raw)
    except MalformedPayload as exc:
        raise ValueError(f"body_z: {exc}") from None


class SignedConfig(Message):
    """Retained, versioned configuration (profile, tariffs, scenario switches) for one locker.

    Signed exactly like a command. It has no expiry (it stays retained for lockers that boot
    later); replay is prevented by the locker applying only a `version` newer than the one it
    applied (the same version with the same hash is a harmless re-delivery).
    """

    v: Version1
    locker: LockerId
    version: Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
    issued_at: EpochMs
    key_id: Token
    body: dict[str, Any] | None = None
    #: Instead of `body`: base64url (no padding) of the zlib-compressed canonical JSON of the
    #: body, for a body too large for one MQTT packet as JSON (a `parcels` section with
    #: thousands of recipients). An extension: lockers before it refuse such a config as
    #: malformed (and keep running theirs), so consoles send `body` whenever it fits.
    body_z: Annotated[str, Field(pattern=BODY_Z_PATTERN, max_length=MAX_BODY_Z_CHARS)] | None = None
    sig: Annotated[str, Field(pattern=SIG_PATTERN)]

    _content: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_body(self) -> SignedConfig:
        if (self.body is None) == (self.body_z is None):
            raise ValueError("exactly one of body and body_z")
        self._content = self.body if self.body is not None else inflate_body(self.body_z or "")
        return self

    @property
    def content(self) -> dict[str, Any]:
        """The configuration body, whichever way it travelled (`body` or `body_z`)."""
        return self._content


class ConfigApplied(Message):
    """Retained: the configuration the locker runs; `hash` is contract.signing.config_hash(body)."""

    version: Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
    hash: Annotated[str, Field(pattern=SHA256_HEX_PATTERN)]


class Notification(Message):
    """A message to a client the console sends for the locker (its text holds codes and PINs:
    it travels only on the locker's own authenticated link and is never stored by the console)."""

    id: NonEmpty
    channel: Literal["sms", "email"]
    to: Annotated[str, Field(min_length=1, max_length=320)]
    text: Annotated[str, Field(min_length=1, max_length=MAX_NOTIFICATION_TEXT)]
    subject: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


# -- lockers/{id}/delivered ------------------------------------------------------------------
#: At most this many keys in one `delivered` message (the console sends more messages).
DELIVERED_MAX_ITEMS = 500


class ResultKey(Message):
    """One command result: a command has at most one result of each status."""

    cmd_id: Uuid
    status: Literal["accepted", "done", "rejected", "failed"]


class Delivered(Message):
    """The console committed these command results and recorded these notifications (as sent
    or finally failed): the locker drops them from its store and stops re-sending them."""

    results: list[ResultKey] = Field(default_factory=list, max_length=DELIVERED_MAX_ITEMS)
    #: Notification ids (`Notification.id`).
    notifications: list[NonEmpty] = Field(default_factory=list, max_length=DELIVERED_MAX_ITEMS)


# -- lockers/{id}/resync ---------------------------------------------------------------------
#: The longest window a resync request may spread a locker's answer over (10 minutes).
MAX_RESYNC_SPREAD_MS = 600_000
#: What a resync request may ask for: the retained topics a locker publishes.
ResyncPart = Literal["status", "cells", "config"]
RESYNC_PARTS: tuple[ResyncPart, ...] = ("status", "cells", "config")


class ResyncRequest(Message):
    """The console lacks some of this locker's retained state: publish it again (retained,
    QoS 1) after a random delay in [0, spread_ms], so a thousand answers do not arrive at once.
    A locker answers at most once per its minimum interval, however often it is asked."""

    #: When the console asked (its clock): for logs; the locker never compares it with its own.
    at: EpochMs
    spread_ms: Annotated[int, Field(ge=0, le=MAX_RESYNC_SPREAD_MS)]
    #: The parts to publish again; absent: all of them.
    what: Annotated[list[ResyncPart], Field(min_length=1, max_length=3)] | None = None

    def parts(self) -> frozenset[str]:
        """The parts asked for (all when `what` is absent)."""
        return frozenset(self.what if self.what is not None else RESYNC_PARTS)


#: The payload model of each kind of topic.
PAYLOAD_MODELS: dict[TopicKind, type[Message]] = {
    TopicKind.STATUS: Status,
    TopicKind.CELL: CellSnapshot,
    TopicKind.EVENTS: Event,
    TopicKind.EVENTS_ACK: EventAck,
    TopicKind.EVENTS_RESEND: EventResend,
    TopicKind.EVENTS_GONE: EventsGone,
    TopicKind.CMD: SignedCommand,
    TopicKind.CMD_RESULT: CommandResult,
    TopicKind.CONFIG: SignedConfig,
    TopicKind.NOTIFY: Notification,
    TopicKind.CONFIG_APPLIED: ConfigApplied,
    TopicKind.DELIVERED: Delivered,
    TopicKind.RESYNC: ResyncRequest,
}


def peek_cmd_id(data: bytes | bytearray | str | dict[str, Any]) -> str | None:
    """Best-effort cmd_id of a command that may be malformed, so a rejection can name it."""
    try:
        obj = data if isinstance(data, dict) else decode_json_object(data)
    except MalformedPayload:
        return None
    cmd_id = obj.get("cmd_id")
    if isinstance(cmd_id, str) and _UUID_RE.match(cmd_id):
        return cmd_id
    return None
