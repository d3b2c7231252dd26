"""MQTT topic names shared by the locker and the console (docs/architecture.md, "MQTT contract").

Both sides build and parse topics here so that a typo cannot split the fleet in two. The prefix
(`lockers` by default) is configurable; every topic is `{prefix}/{locker}/{kind}`, with the cell id
appended for cell snapshots. Parsing returns None for a topic that is not ours, so an ingest loop
subscribed to `{prefix}/#` can skip strangers without a try/except.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PREFIX = "lockers"

#: What a locker id may contain: no `/`, `+` or `#`, so it is always exactly one topic level.
LOCKER_ID_PATTERN = r"[A-Za-z0-9_.-]+"
_LOCKER_ID_RE = re.compile(rf"^{LOCKER_ID_PATTERN}$")
#: Cell ids are the integers 1..MAX_CELL_ID of the locker configuration, written in decimal:
#: small enough for any database column (a topic `cells/18446744073709551616` is not ours).
MAX_CELL_ID = 9999
_CELL_RE = re.compile(r"^[1-9][0-9]{0,3}$")


class TopicError(ValueError):
    """A topic cannot be built from these parts (bad locker id, cell id or prefix)."""


class TopicKind(StrEnum):
    """The part of a topic after the locker id; the value is the literal topic suffix."""

    STATUS = "status"
    CELL = "cells"
    EVENTS = "events"
    EVENTS_ACK = "events/ack"
    #: The console asks a locker to send a missing range of its events again (a hole it will
    #: not acknowledge past); a new topic, as `EventAck` forbids unknown fields.
    EVENTS_RESEND = "events/resend"
    #: The locker's answer for the part of such a range its outbox no longer holds: only then
    #: does the console move its ack watermark past the hole.
    EVENTS_GONE = "events/gone"
    CMD = "cmd"
    CMD_RESULT = "cmd/result"
    CONFIG = "config"
    CONFIG_APPLIED = "config/applied"
    #: SMS / e-mail a locker without its own provider hands to the console to send.
    NOTIFY = "notify"
    #: The console stored these command results and handled these notifications: the locker
    #: stops re-sending them (what `events/ack` is for events).
    DELIVERED = "delivered"
    #: The console lacks some of the locker's retained state (a broker dropped it from the
    #: ingest's queue in a connect storm): publish status, cells and config/applied again.
    RESYNC = "resync"


class Direction(StrEnum):
    """Who publishes on a topic."""

    FROM_LOCKER = "locker->console"
    TO_LOCKER = "console->locker"


@dataclass(frozen=True)
class TopicSpec:
    """Delivery rules of one kind of topic, as in the table of docs/architecture.md."""

    direction: Direction
    qos: int
    retain: bool


#: The table of docs/architecture.md in code: publishers must use these QoS and retain flags.
TOPIC_SPECS: dict[TopicKind, TopicSpec] = {
    TopicKind.STATUS: TopicSpec(Direction.FROM_LOCKER, 1, True),
    TopicKind.CELL: TopicSpec(Direction.FROM_LOCKER, 1, True),
    TopicKind.EVENTS: TopicSpec(Direction.FROM_LOCKER, 1, False),
    TopicKind.EVENTS_ACK: TopicSpec(Direction.TO_LOCKER, 1, False),
    TopicKind.EVENTS_RESEND: TopicSpec(Direction.TO_LOCKER, 1, False),
    TopicKind.EVENTS_GONE: TopicSpec(Direction.FROM_LOCKER, 1, False),
    TopicKind.CMD: TopicSpec(Direction.TO_LOCKER, 1, False),
    TopicKind.CMD_RESULT: TopicSpec(Direction.FROM_LOCKER, 1, False),
    TopicKind.CONFIG: TopicSpec(Direction.TO_LOCKER, 1, True),
    TopicKind.CONFIG_APPLIED: TopicSpec(Direction.FROM_LOCKER, 1, True),
    TopicKind.NOTIFY: TopicSpec(Direction.FROM_LOCKER, 1, False),
    TopicKind.DELIVERED: TopicSpec(Direction.TO_LOCKER, 1, False),
    TopicKind.RESYNC: TopicSpec(Direction.TO_LOCKER, 1, False),
}

_SUFFIX_TO_KIND = {kind.value: kind for kind in TopicKind if kind is not TopicKind.CELL}


def is_valid_locker_id(locker_id: object) -> bool:
    """True if `locker_id` can stand as one topic level (and as a broker user name)."""
    return isinstance(locker_id, str) and bool(_LOCKER_ID_RE.match(locker_id))


def check_locker_id(locker_id: str) -> str:
    """Return `locker_id` unchanged, or raise TopicError saying what is wrong with it."""
    if not is_valid_locker_id(locker_id):
        raise TopicError(
            f"invalid locker id {locker_id!r}: use only letters, digits, '_', '.' and '-'"
        )
    return locker_id


def check_prefix(prefix: str) -> str:
    """Return `prefix` unchanged, or raise TopicError: non-empty levels without wildcards."""
    if not isinstance(prefix, str) or not prefix:
        raise TopicError("topic prefix must be a non-empty string")
    for level in prefix.split("/"):
        if not level or "+" in level or "#" in level:
            raise TopicError(
                f"invalid topic prefix {prefix!r}: levels must be non-empty and contain no "
                "'+' or '#' (and no leading, trailing or doubled '/')"
            )
    return prefix


def _check_cell(cell: int) -> int:
    if isinstance(cell, bool) or not isinstance(cell, int) or not 1 <= cell <= MAX_CELL_ID:
        raise TopicError(f"invalid cell id {cell!r}: must be an integer in 1..{MAX_CELL_ID}")
    return cell


@dataclass(frozen=True)
class ParsedTopic:
    """A topic of ours, taken apart. `cell` is set only for kind CELL."""

    locker: str
    kind: TopicKind
    cell: int | None = None


@dataclass(frozen=True)
class Topics:
    """Topic builder bound to one prefix: `Topics().cmd("L1") == "lockers/L1/cmd"`."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # -- one locker's topics ------------------------------------------------------------------
    def topic(self, kind: TopicKind, locker: str, cell: int | None = None) -> str:
        """The topic of `kind` for `locker`; `cell` is required for CELL and refused otherwise."""
        check_locker_id(locker)
        kind = TopicKind(kind)
        if kind is TopicKind.CELL:
            if cell is None:
                raise TopicError("a cell topic needs a cell id")
            return f"{self.prefix}/{locker}/cells/{_check_cell(cell)}"
        if cell is not None:
            raise TopicError(f"a {kind.value!r} topic takes no cell id")
        return f"{self.prefix}/{locker}/{kind.value}"

    def status(self, locker: str) -> str:
        return self.topic(TopicKind.STATUS, locker)

    def cell(self, locker: str, cell: int) -> str:
        return self.topic(TopicKind.CELL, locker, cell)

    def events(self, locker: str) -> str:
        return self.topic(TopicKind.EVENTS, locker)

    def events_ack(self, locker: str) -> str:
        return self.topic(TopicKind.EVENTS_ACK, locker)

    def events_resend(self, locker: str) -> str:
        return self.topic(TopicKind.EVENTS_RESEND, locker)

    def events_gone(self, locker: str) -> str:
        return self.topic(TopicKind.EVENTS_GONE, locker)

    def cmd(self, locker: str) -> str:
        return self.topic(TopicKind.CMD, locker)

    def cmd_result(self, locker: str) -> str:
        return self.topic(TopicKind.CMD_RESULT, locker)

    def config(self, locker: str) -> str:
        return self.topic(TopicKind.CONFIG, locker)

    def config_applied(self, locker: str) -> str:
        return self.topic(TopicKind.CONFIG_APPLIED, locker)

    def notify(self, locker: str) -> str:
        return self.topic(TopicKind.NOTIFY, locker)

    def delivered(self, locker: str) -> str:
        return self.topic(TopicKind.DELIVERED, locker)

    def resync(self, locker: str) -> str:
        return self.topic(TopicKind.RESYNC, locker)

    # -- subscriptions ------------------------------------------------------------------------
    def wildcard(self, kind: TopicKind) -> str:
        """Subscription matching `kind` for every locker, e.g. `lockers/+/status`."""
        kind = TopicKind(kind)
        if kind is TopicKind.CELL:
            return f"{self.prefix}/+/cells/+"
        return f"{self.prefix}/+/{kind.value}"

    def everything(self) -> str:
        """Subscription matching every topic under the prefix (the console's ACL)."""
        return f"{self.prefix}/#"

    def console_subscriptions(self) -> list[str]:
        """What the console subscribes to: every topic a locker publishes, for all lockers."""
        return [
            self.wildcard(kind)
            for kind, spec in TOPIC_SPECS.items()
            if spec.direction is Direction.FROM_LOCKER
        ]

    def locker_subscriptions(self, locker: str) -> list[str]:
        """What locker `locker` subscribes to: the topics the console publishes to it."""
        check_locker_id(locker)
        return [
            self.topic(kind, locker)
            for kind, spec in TOPIC_SPECS.items()
            if spec.direction is Direction.TO_LOCKER
        ]

    # -- parsing ------------------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic | None:
        """Take a topic apart; None if it is not one of ours under this prefix."""
        head = self.prefix + "/"
        if not isinstance(topic, str) or not topic.startswith(head):
            return None
        locker, sep, suffix = topic[len(head) :].partition("/")
        if not sep or not is_valid_locker_id(locker):
            return None
        kind = _SUFFIX_TO_KIND.get(suffix)
        if kind is not None:
            return ParsedTopic(locker, kind)
        first, sep, cell = suffix.partition("/")
        if first == "cells" and sep and _CELL_RE.match(cell):
            return ParsedTopic(locker, TopicKind.CELL, int(cell))
        return None


def locker_of(topic: str, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The locker id level of any topic under `prefix`, even one that is not ours (a locker can
    publish only under its own id, so a stray topic can still be charged to its locker)."""
    head = prefix + "/"
    if not isinstance(topic, str) or not topic.startswith(head):
        return None
    locker, sep, _ = topic[len(head) :].partition("/")
    return locker if sep and is_valid_locker_id(locker) else None


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> ParsedTopic | None:
    """Take a topic apart; None if it is not one of ours under `prefix`."""
    return Topics(prefix).parse(topic)
