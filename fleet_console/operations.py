"""What an operator asks of a locker, carried out: sign, audit, publish, wait, say how it ended.

The CLI today and the web back office next call these functions; each returns a typed outcome
that carries its exit code (0 done, 1 failed or rejected or broker unreachable, 2 unusable
request, 3 outcome unknown). Nothing here parses arguments or prints: warnings go to the
`warn` callback the caller gives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from contract.commands import COMMANDS, CommandType
from contract.messages import CommandResult
from contract.signing import KeyFormatError, load_private_key_file
from contract.topics import Topics
from fleet_console.config import ConsoleConfig
from fleet_console.db import queries
from fleet_console.db.engine import Database, open_database
from fleet_console.db.writes import record_command_issued, record_command_results
from fleet_console.mqtt import login_refused, make_client
from fleet_console.remote import CommandOutcome, ConfigOutcome, Remote

Warn = Callable[[str], None]


class ExitCode(IntEnum):
    """The console's exit codes (README, "Exit codes")."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNKNOWN = 3


class Unusable(Exception):
    """The request cannot be carried out as given (exit 2); str() says why."""


@dataclass(frozen=True)
class Signer:
    """The console's signing key, its id and the lifetime it gives commands."""

    key: Ed25519PrivateKey
    key_id: str
    ttl_ms: int


def signer(cfg: ConsoleConfig, path: Path | str) -> Signer:
    """The configured signing key; Unusable without a usable [signing]."""
    if cfg.signing is None:
        raise Unusable(
            f"{path}: no [signing] section: add key_file and key_id "
            "(create the key with `locker-console keygen`)"
        )
    try:
        key = load_private_key_file(cfg.signing.key_file)
    except KeyFormatError as exc:
        raise Unusable(f"[signing] key_file: {exc}") from None
    return Signer(key, cfg.signing.key_id, int(cfg.signing.command_ttl_s * 1000))


def command_args(type_: str, cell: int, reason: str, note: str | None = None) -> dict[str, Any]:
    """The `args` of a command of `type_`; Unusable for what the locker would refuse anyway."""
    spec = COMMANDS[CommandType(type_)]
    if spec.audited and not reason.strip():
        raise Unusable(f"--reason must not be blank: {type_} is an audited act")
    out: dict[str, Any] = {"cell": cell}
    if "note" in spec.args.model_fields:
        if note is None or not note.strip():
            raise Unusable("--note must not be blank: say what is in the cell and who witnessed it")
        out["note"] = note
    return out


def parcel_command_args(type_: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The `args` of a parcel business command (expect-parcel, create-return, report-cells),
    checked against the contract's model; Unusable for what the locker would refuse."""
    try:
        COMMANDS[CommandType(type_)].args.model_validate(dict(args))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "args"
        raise Unusable(f"{type_}: {where}: {error['msg']}") from None
    return dict(args)


class Audit:
    """Best-effort record of commands in the database: never fails the command."""

    def __init__(self, url: str, warn: Warn) -> None:
        self.url = url
        self.db: Database | None = None
        self._warn_to = warn

    async def open(self) -> None:
        try:
            self.db = await asyncio.wait_for(asyncio.to_thread(open_database, self.url), 5.0)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        self.db = None
        self._warn_to(f"command not recorded in the database: {exc}")

    def issued(self, command: dict[str, Any]) -> None:
        if self.db is not None:
            try:
                with self.db.transaction() as s:
                    record_command_issued(s, command, int(time.time() * 1000))
            except SQLAlchemyError as exc:
                self._warn(exc)

    def result(self, locker: str, result: CommandResult) -> None:
        if self.db is not None:
            row = {"cmd_id": result.cmd_id, "locker": locker, "status": result.status,
                   "result_reason": result.reason, "result_data": dict(result.data),
                   "updated_at": int(time.time() * 1000)}
            try:
                with self.db.transaction() as s:
                    record_command_results(s, [row])
            except SQLAlchemyError as exc:
                self._warn(exc)

    def knows(self, locker: str) -> bool:
        """True when the ingest stored something of `locker` (False also without a database)."""
        if self.db is None:
            return False
        try:
            with self.db.transaction() as s:
                return queries.is_known_locker(s, locker)
        except SQLAlchemyError as exc:
            self._warn(exc)
            return False

    def close(self) -> None:
        if self.db is not None:
            self.db.dispose()


async def known_locker(audit: Audit, remote: Remote, locker: str) -> bool:
    """Whether the console has ever seen `locker`: a database row, else a retained status.

    A command to an id nobody ever heard of (a typo, L9 for L6) would otherwise wait its whole
    timeout and end "unknown"."""
    if audit.knows(locker):
        return True
    return bool(await remote.read_retained([remote.topics.status(locker)], max_s=2.0))


@dataclass(frozen=True)
class BrokerFailure:
    """The broker could not be used: it refused the login (exit 2) or was unreachable (1)."""

    error: Exception
    login_refused: bool

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.USAGE if self.login_refused else ExitCode.FAILED


def broker_failure(exc: Exception) -> BrokerFailure:
    return BrokerFailure(exc, login_refused(exc))


@dataclass(frozen=True)
class CommandRun:
    """How a remote command ended for the operator: exactly one of the three is set."""

    #: The locker's final answer, or its absence in time (`timeout`).
    outcome: CommandOutcome | None = None
    #: Nothing was published: the broker refused or could not be reached.
    broker: BrokerFailure | None = None
    #: The broker was lost after the command was published: the outcome is unknown.
    lost: Exception | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.broker is not None:
            return self.broker.exit_code
        if self.lost is not None or self.outcome is None:
            return ExitCode.UNKNOWN
        return {"done": ExitCode.OK, "timeout": ExitCode.UNKNOWN}.get(
            self.outcome.status, ExitCode.FAILED)


async def run_command(
    cfg: ConsoleConfig,
    sign: Signer,
    locker: str,
    type_: str,
    args: Mapping[str, Any],
    *,
    operator: str,
    reason: str,
    timeout: float,
    force: bool = False,
    warn: Warn,
    on_result: Callable[[CommandResult], None] | None = None,
) -> CommandRun:
    """Sign, record as issued, publish and wait for the final result; every result is
    recorded too. Unusable for a locker the console never saw (unless `force`)."""
    audit = Audit(cfg.database.url, warn)
    await audit.open()
    published = False

    def issued(command: dict[str, Any]) -> None:
        nonlocal published
        audit.issued(command)
        published = True

    def got(result: CommandResult) -> None:
        audit.result(locker, result)
        if on_result is not None:
            on_result(result)

    topics = Topics(cfg.mqtt.prefix)
    try:
        async with make_client(cfg.mqtt) as client, Remote(
            client, topics, private_key=sign.key, key_id=sign.key_id
        ) as remote:
            if not force and not await known_locker(audit, remote, locker):
                raise Unusable(
                    f"unknown locker {locker!r}: the console has never heard of it (no "
                    "row in the database, no retained status on the broker); check the id, "
                    "or send it anyway with --force"
                )
            outcome = await remote.send_command(
                locker, type_, args, operator=operator, reason=reason, ttl_ms=sign.ttl_ms,
                timeout=timeout, on_issued=issued, on_result=got,
            )
    except aiomqtt.MqttError as exc:
        if not published:
            return CommandRun(broker=broker_failure(exc))
        return CommandRun(lost=exc)
    finally:
        audit.close()
    return CommandRun(outcome=outcome)


@dataclass(frozen=True)
class ConfigRun:
    """How a configuration publication ended: its outcome, or the broker's failure."""

    outcome: ConfigOutcome | None = None
    broker: BrokerFailure | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.broker is not None:
            return self.broker.exit_code
        assert self.outcome is not None
        return {"applied": ExitCode.OK, "rejected": ExitCode.FAILED}.get(
            self.outcome.status, ExitCode.UNKNOWN)


async def publish_config(
    cfg: ConsoleConfig,
    sign: Signer,
    locker: str,
    body: Mapping[str, Any],
    *,
    version: int | None,
    timeout: float,
) -> ConfigRun:
    """Sign and publish `body` (retained) and wait until the locker applies or refuses it."""
    try:
        async with make_client(cfg.mqtt) as client, Remote(
            client, Topics(cfg.mqtt.prefix), private_key=sign.key, key_id=sign.key_id
        ) as remote:
            outcome = await remote.publish_config(locker, body, version=version, timeout=timeout)
    except aiomqtt.MqttError as exc:
        return ConfigRun(broker=broker_failure(exc))
    return ConfigRun(outcome=outcome)
