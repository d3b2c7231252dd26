"""Remote commands from the fleet: verified, executed at most once, answered from a replay cache.

Pure decisions, no I/O: the app hands in the payload, the clock and what the store remembers, and
gets back what to execute and what to answer. docs/architecture.md's rules: trusted key, valid
signature, this locker, not expired, never executed before; a cmd_id seen before gets the stored
result of its first delivery, never a second execution.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.commands import (
    COMMANDS,
    LOCKER_COMMANDS,
    Executor,
    UnknownCommand,
    parse_args,
)
from contract.messages import MalformedPayload, Reason, SignedCommand, peek_cmd_id
from contract.signing import verify

#: Command types executed through the cell machines, and the machine command each one runs.
CELL_COMMANDS = {str(t): str(t) for t, s in COMMANDS.items() if s.executor is Executor.CELL}
#: Force-majeure commands answered by the storage service (no lock moves).
SERVICE_COMMANDS = tuple(str(t) for t, s in COMMANDS.items() if s.executor is Executor.BUSINESS)
#: The args each command type takes (all required): the contract's argument models.
COMMAND_ARGS: dict[str, frozenset[str]] = {
    str(t): frozenset(s.args.model_fields) for t, s in COMMANDS.items()
}
#: Commands settled by the door (done once the sensor saw it open).
DOOR_COMMANDS = tuple(str(t) for t, s in COMMANDS.items() if s.settled_by_door)

#: How long a command's result stays in the replay cache after it expired. Past expiry (plus
#: the clock skew allowed) a redelivery is rejected as `expired` before the cache is consulted,
#: so the cache only has to outlive the expiry; the margin covers small clock errors. Clock steps
#: the daemon sees move every entry's times with them (store.commands_shifted), so a step
#: forward cannot prune an entry that a step back would make valid again. The TTL cap
#: (`max_ttl_ms`) bounds how long an entry lives, hence the cache's size.
DEFAULT_RETENTION_MS = 10 * 60 * 1000

#: Why a command on no cell is refused by a locker without the business that takes it.
_NO_BUSINESS = {Executor.PARCELS: Reason.NO_PARCELS_BUSINESS}

#: Events that settle a pending remote open (the event's data carries the command's ref).
_OPEN_DONE = {"door_opened"}
_OPEN_FAILED = {"lock_fault": Reason.LOCK_FAULT, "open_cancelled": None, "eviction_cancelled": None}


@dataclass(frozen=True)
class Answer:
    """Answer without executing: a rejection, or the stored result of an earlier delivery."""

    results: list[dict]
    #: Set when the command could not even be attributed (no usable cmd_id): log it only.
    unattributed_reason: str | None = None


@dataclass(frozen=True)
class Execute:
    """A verified, never-seen command to run on a cell."""

    command: SignedCommand
    kind: str
    cell: int
    record: dict[str, Any] = field(default_factory=dict)


def result(cmd_id: str, status: str, reason: str | None = None, **data: Any) -> dict:
    out: dict[str, Any] = {"cmd_id": cmd_id, "status": status, "data": data}
    if reason is not None:
        out["reason"] = str(reason)
    return out


class RemoteCommands:
    def __init__(
        self,
        locker_id: str,
        trusted_keys: Mapping[str, str],
        cell_ids: Collection[int],
        retention_ms: int = DEFAULT_RETENTION_MS,
        max_ttl_ms: int | None = None,
        locker_commands: Collection[str] | None = None,
    ) -> None:
        """`max_ttl_ms`: commands signed to live longer are rejected `ttl_too_long`.
        `locker_commands`: the commands on no cell a business of this locker takes (None: all);
        another is rejected at once, `no_parcels_business` for a parcel command."""
        self.locker_id = locker_id
        self.trusted_keys = dict(trusted_keys)
        self.cell_ids = set(cell_ids)
        self.retention_ms = retention_ms
        self.max_ttl_ms = max_ttl_ms
        self.locker_commands = None if locker_commands is None else frozenset(locker_commands)

    def check(
        self,
        payload: bytes,
        topic_locker: str,
        now_ms: int,
        stored: Callable[[str], dict | None],
    ) -> Answer | Execute:
        cmd_id = peek_cmd_id(payload)
        reason = verify(
            payload,
            trusted_keys=self.trusted_keys,
            locker_id=self.locker_id,
            now_ms=now_ms,
            topic_locker=topic_locker,
            max_ttl_ms=self.max_ttl_ms,
        )
        if reason is not None:
            if cmd_id is None:
                return Answer([], unattributed_reason=reason)
            return Answer([result(cmd_id, "rejected", reason)])
        command = SignedCommand.from_payload(payload)
        previous = stored(command.cmd_id)
        if previous is not None:
            # A QoS 1 duplicate or a replay: repeat what the first delivery got, never execute.
            return Answer(
                list(
                    previous.get("results") or [result(command.cmd_id, "rejected", Reason.REPLAYED)]
                )
            )
        if command.type in LOCKER_COMMANDS:  # on no cell: a business answers it at once
            try:
                parse_args(command.type, command.args)
            except MalformedPayload:
                return self._refuse(command, now_ms, Reason.MALFORMED)
            if self.locker_commands is not None and command.type not in self.locker_commands:
                executor = LOCKER_COMMANDS[command.type].executor
                return self._refuse(command, now_ms,
                                    _NO_BUSINESS.get(executor, Reason.UNSUPPORTED))
            return Execute(command, command.type, 0, self.record(command, [], now_ms))
        try:
            args = parse_args(command.type, command.args)
        except UnknownCommand:
            return self._refuse(command, now_ms, Reason.UNSUPPORTED)
        except MalformedPayload:
            return self._refuse(command, now_ms, Reason.MALFORMED)
        kind = CELL_COMMANDS.get(command.type, command.type)
        cell = getattr(args, "cell", None)
        if not isinstance(cell, int):  # a parcel command: until a business here carries it out
            return self._refuse(command, now_ms, Reason.UNSUPPORTED)
        if cell not in self.cell_ids:
            return self._refuse(command, now_ms, Reason.UNKNOWN_CELL)
        return Execute(command, kind, cell, self.record(command, [], now_ms))

    def verified(self, payload: bytes, topic_locker: str, now_ms: int) -> bool:
        """The payload passes every check of the signature, key, locker and time."""
        return verify(
            payload, trusted_keys=self.trusted_keys, locker_id=self.locker_id, now_ms=now_ms,
            topic_locker=topic_locker, max_ttl_ms=self.max_ttl_ms,
        ) is None

    def _refuse(self, command: SignedCommand, now_ms: int, reason: str) -> Answer:
        return Answer([result(command.cmd_id, "rejected", reason)])

    def record(self, command: SignedCommand, results: list[dict], now_ms: int) -> dict:
        """The replay-cache entry: kept well past expiry so a late duplicate is recognised."""
        return {
            "cmd_id": command.cmd_id,
            "type": command.type,
            "args": dict(command.args),
            "operator": command.operator,
            "results": results,
            "received_at": now_ms,
            "keep_until": max(command.expires_at, now_ms) + self.retention_ms,
        }

    @staticmethod
    def settled_by(
        record: Mapping[str, Any], event_type: str, data: Mapping[str, Any]
    ) -> dict | None:
        """The final result an event brings to an accepted remote open, if it settles it."""
        if record["type"] not in DOOR_COMMANDS:
            return None
        cmd_id = record["cmd_id"]
        if event_type in _OPEN_DONE:
            return result(cmd_id, "done", door="open", cell=record["args"]["cell"])
        if event_type in _OPEN_FAILED:
            reason = _OPEN_FAILED[event_type] or data.get("reason") or Reason.INTERNAL_ERROR
            return result(cmd_id, "failed", reason, cell=record["args"]["cell"])
        return None
