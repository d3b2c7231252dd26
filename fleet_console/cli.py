"""`locker-console`: the fleet console's one entry point, one subcommand per task.

Each subcommand registers itself with `_add_<name>(subparsers)` and sets `handler`, a function
taking the parsed arguments and returning the exit code. Exit codes: 0 success, 1 the operation
failed, 2 the request was unusable (bad arguments, refusing to overwrite, bad configuration),
3 the outcome is unknown (no answer in time). The fleet subcommands (ingest, open, block,
unblock, waive, reveal-pin, evict, status, alarms, watch, publish-config, recipients, couriers,
parcels, returns, report) read `--config`; the remote ones go through fleet_console.remote,
the API benchmarks time.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import aiomqtt
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from contract.commands import COMMANDS, CommandType
from contract.config_file import read_toml
from contract.messages import (
    CommandResult,
    ConfigApplied,
    Event,
    MalformedPayload,
    Message,
    Status,
)
from contract.money import Money
from contract.pin_hash import PinHashError, check_pin, hash_pin
from contract.profiles import is_sectioned, sectioned
from contract.recipients import masked_email, masked_phone
from contract.signing import (
    generate_private_key,
    public_key_b64,
)
from contract.topics import TopicKind, Topics, is_valid_locker_id
from fleet_console import collector, directory_publish, fleet_status, operations, recipients_import
from fleet_console.config import ConfigError, ConsoleConfig, ReplicaName, load_console_config
from fleet_console.db import directory, queries
from fleet_console.db.engine import Database, open_database
from fleet_console.fleet_status import FleetStatus
from fleet_console.ingest import Ingest, IngestSettings
from fleet_console.keys import KEY_ID_RE, KeyFileError, write_private_key
from fleet_console.mqtt import login_hint, make_client
from fleet_console.notify import ConsoleNotifier
from fleet_console.remote import Remote
from fleet_io.closed_pipe import run_quietly_on_closed_pipe

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Where `--config` comes from when not given on the command line.
CONFIG_ENV = "LOCKER_CONSOLE_CONFIG"

Handler = Callable[[argparse.Namespace], int]


def _error(message: str) -> int:
    print(f"locker-console: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- keygen -----------------------------------------------------------------------------------
def _add_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "keygen",
        help="create the console's Ed25519 signing key",
        description=(
            "Write a new Ed25519 private key (PEM, mode 0600) and print its public key for the "
            "lockers' [trust] keys."
        ),
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="private key file")
    p.add_argument(
        "--key-id",
        default="console-1",
        help="name the lockers will know this key by (default: console-1)",
    )
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(handler=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    if not KEY_ID_RE.match(args.key_id):
        return _error(
            f"invalid --key-id {args.key_id!r}: use only letters, digits, '_', '.' and '-'"
        )
    key = generate_private_key()
    try:
        path = write_private_key(args.out, key, force=args.force)
    except KeyFileError as exc:
        return _error(str(exc))
    public = public_key_b64(key)
    print(public)
    print("# add to each locker's configuration, in its [trust] table:")
    print(f'keys = {{ "{args.key_id}" = "{public}" }}')
    print(f"wrote private key {path} (mode 0600); keep it secret", file=sys.stderr)
    return EXIT_OK


# -- shared by the fleet subcommands ----------------------------------------------------------
EXIT_UNKNOWN = 3

# A string: `_SubParsersAction` is generic only in the type stubs, not at run time.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_T = TypeVar("_T")


class _Usage(Exception):
    """The request cannot be carried out as given; exit 2 with this message."""


def _config(args: argparse.Namespace) -> ConsoleConfig:
    if args.config is None:
        raise _Usage(f"no configuration: give --config FILE or set ${CONFIG_ENV}")
    try:
        return load_console_config(args.config)
    except ConfigError as exc:
        raise _Usage(str(exc)) from None


def _signing(cfg: ConsoleConfig, path: Path) -> operations.Signer:
    """The signing key; _Usage without a usable [signing]."""
    try:
        return operations.signer(cfg, path)
    except operations.Unusable as exc:
        raise _Usage(str(exc)) from None


def _run(
    args: argparse.Namespace, body: Callable[[ConsoleConfig], Coroutine[Any, Any, int]]
) -> int:
    """Load the configuration and run `body` in an event loop; map the usual failures."""
    try:
        cfg = _config(args)
        return asyncio.run(body(cfg))
    except (_Usage, operations.Unusable) as exc:
        return _error(str(exc))
    except IntegrityError as exc:  # a concurrent change took the same key first
        return _error(f"refused by the database (changed meanwhile?): {exc.orig}")
    except SQLAlchemyError as exc:
        print(f"locker-console: database error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _broker_error(cfg: ConsoleConfig, exc: Exception) -> int:
    """Exit 2 when the broker answered and refused the login (the configuration is wrong), 1
    when it could not be reached."""
    return _broker_failure(cfg, operations.broker_failure(exc))


def _command_not_answered(cfg: ConsoleConfig, run: operations.CommandRun) -> int | None:
    """The exit code of a command that got no outcome (broker refused, or lost after
    sending), said on stderr; None when the locker's outcome is in `run`."""
    if run.broker is not None:
        return _broker_failure(cfg, run.broker)
    if run.lost is not None:
        print(f"unknown: lost the broker after sending the command ({run.lost}); it may "
              "still execute until it expires", file=sys.stderr)
        return run.exit_code
    return None


def _broker_failure(cfg: ConsoleConfig, failure: operations.BrokerFailure) -> int:
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    exc = failure.error
    if failure.login_refused:
        print(f"locker-console: the broker refused the login for user {cfg.mqtt.username!r} "
              f"on {where} ({exc}){login_hint(exc)}", file=sys.stderr)
    else:
        print(f"locker-console: cannot reach the broker at {where}: {exc}", file=sys.stderr)
    return failure.exit_code


def _warning(message: str) -> None:
    print(f"locker-console: warning: {message}", file=sys.stderr)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=True))


# -- ingest -----------------------------------------------------------------------------------
def _add_ingest(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="store what lockers publish in the database and acknowledge their events",
        description=(
            "Run the MQTT ingest until SIGTERM or Ctrl-C; it also sends the SMS and e-mail "
            "that lockers relay on lockers/{id}/notify, through [notifier]."
        ),
    )
    defaults = IngestSettings()
    p.add_argument("--client-id", default=None,
                   help="stable MQTT client id of the persistent session "
                        f"({defaults.client_id}; a replica: ingest-NAME)")
    p.add_argument("--replica", default=None, metavar="NAME", type=_replica_name,
                   help="run as one of several ingests sharing the database and the work "
                        "(shared subscription; overrides [ingest] replica)")
    p.add_argument("--end-session", action="store_true",
                   help="end this ingest's persistent session on the broker and exit (a replica "
                        "taken out for good: the broker stops queueing its share; the lockers "
                        "send again what it held)")
    p.add_argument("--gap-timeout", type=float, default=defaults.gap_timeout_s, metavar="S",
                   help="seconds to wait for a missing event before acknowledging past it")
    p.set_defaults(handler=cmd_ingest)


async def _end_session(cfg: ConsoleConfig, args: argparse.Namespace) -> int:
    """Log in once with a clean start as the ingest's client id: the broker drops its session,
    its subscriptions (its place in the shared group) and what is queued for it."""
    _, client_id = _ingest_identity(cfg, args)
    try:
        async with make_client(cfg.mqtt, identifier=client_id):
            pass
    except aiomqtt.MqttError as exc:
        return _broker_error(cfg, exc)
    print(f"ended the broker session of {client_id}")
    return EXIT_OK


def _ingest_identity(cfg: ConsoleConfig, args: argparse.Namespace) -> tuple[str | None, str]:
    """The replica name (--replica, else [ingest] replica) and the client id (--client-id,
    else `ingest-NAME` for a replica, else the single ingest's)."""
    replica = args.replica or cfg.ingest.replica
    client_id = args.client_id or (f"ingest-{replica}" if replica else IngestSettings.client_id)
    return replica, client_id


def _replica_name(value: str) -> str:
    if not re.fullmatch(ReplicaName.pattern, value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: letters, digits, '-' and '_' (at most 64, a letter or digit first)")
    return value


def cmd_ingest(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def body(cfg: ConsoleConfig) -> int:
        if args.end_session:
            return await _end_session(cfg, args)
        try:
            db = await asyncio.to_thread(open_database, cfg.database.url)
        except SQLAlchemyError as exc:
            print(f"locker-console: cannot open the database {cfg.database.url}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILED
        limits = cfg.ingest.model_dump()
        del limits["replica"]
        replica, client_id = _ingest_identity(cfg, args)
        settings = IngestSettings(client_id=client_id, gap_timeout_s=args.gap_timeout,
                                  replica=replica, **limits)
        ingest = Ingest(cfg.mqtt, db, settings, notifier=ConsoleNotifier(cfg.notifier))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ingest.request_stop)
        collector.tune()
        try:
            await ingest.run()
        finally:
            db.dispose()
        return EXIT_OK

    return _run(args, body)


# -- open, block, unblock, waive, reveal-pin, evict ------------------------------------------------
def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def _add_cell_command(
    subparsers: SubParsers, name: str, help_text: str, *, done: str = "", note: bool = False
) -> None:
    p = subparsers.add_parser(
        name,
        help=f"{help_text} (signed remote command)",
        description=(
            f"Send a signed `{name}` command and wait for the locker's answer{done}. Exit 0 done, "
            "1 failed or rejected, 2 unusable request (an unknown locker too, unless --force), "
            "3 no answer in time (outcome unknown)."
        ),
    )
    p.add_argument("--locker", required=True, metavar="ID")
    p.add_argument("--cell", required=True, type=int, metavar="N")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit trail)")
    if note:
        p.add_argument("--note", required=True, metavar="TEXT",
                       help="what was found in the cell and who witnessed it (kept by the locker)")
    p.add_argument("--operator", default=_login_name(), metavar="NAME",
                   help="who asks (default: the login name)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the final result (default 10)")
    p.add_argument("--json", action="store_true", help="print the final result as JSON")
    p.add_argument("--force", action="store_true",
                   help="send it even to a locker the console has never seen (exit 2 without)")
    p.set_defaults(handler=cmd_cell_command, command_type=str(name))


# -- force majeure: waive, reveal-pin, evict --------------------------------------------------
def _where(args: argparse.Namespace, data: dict[str, Any]) -> str:
    where = f"cell {args.cell} on {args.locker}"
    tenancy = data.get("tenancy_id")
    return f"{where} (tenancy {tenancy})" if isinstance(tenancy, str) and tenancy else where


def _unexpected(args: argparse.Namespace, data: dict[str, Any], what: str) -> str:
    return (f"done: {args.command_type} of cell {args.cell} on {args.locker}, but the locker's "
            f"answer does not give {what}: {json.dumps(data, ensure_ascii=False)}")


def _done_waive(args: argparse.Namespace, data: dict[str, Any]) -> str:
    try:
        waived = Money.from_dict(data.get("waived"))
    except (ValueError, TypeError):
        return _unexpected(args, data, "the amount waived")
    return f"done: waived {waived.format()} for {_where(args, data)}"


def _done_reveal_pin(args: argparse.Namespace, data: dict[str, Any]) -> str:
    pin = data.get("pin")
    if not isinstance(pin, str) or not pin:
        return _unexpected(args, data, "the PIN")
    return f"done: PIN of {_where(args, data)}: {pin}"


def _done_evict(args: argparse.Namespace, data: dict[str, Any]) -> str:
    if data.get("door") != "open":
        return _unexpected(args, data, "that the door is open")
    return (f"done: the door of cell {args.cell} on {args.locker} is open; its tenancy is "
            "closed as seized")


#: What `done` prints per command type (the others print just `done`).
_DONE_LINES: dict[str, Callable[[argparse.Namespace, dict[str, Any]], str]] = {
    "waive": _done_waive,
    "reveal-pin": _done_reveal_pin,
    "evict": _done_evict,
}


def _pin_warning(args: argparse.Namespace) -> None:
    print("locker-console: warning: the PIN is secret: give it only to the person entitled to "
          f"the cell; this reveal is recorded (operator {args.operator!r}, reason "
          f"{args.reason!r})", file=sys.stderr)


def _command_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command's `args`; _Usage for what the locker would refuse anyway."""
    try:
        return operations.command_args(args.command_type, args.cell, args.reason,
                                       getattr(args, "note", None))
    except operations.Unusable as exc:
        raise _Usage(str(exc)) from None


def cmd_cell_command(args: argparse.Namespace) -> int:
    if not is_valid_locker_id(args.locker):
        return _error(f"invalid --locker {args.locker!r}")
    if args.cell < 1:
        return _error(f"invalid --cell {args.cell}: cell ids start at 1")
    try:
        command_args = _command_args(args)
    except _Usage as exc:
        return _error(str(exc))

    async def body(cfg: ConsoleConfig) -> int:
        sign = _signing(cfg, args.config)

        def on_result(result: CommandResult) -> None:
            if result.status == "accepted" and not args.json:
                print("accepted", flush=True)

        run = await operations.run_command(
            cfg, sign, args.locker, args.command_type, command_args, operator=args.operator,
            reason=args.reason, timeout=args.timeout, force=args.force, warn=_warning,
            on_result=on_result,
        )
        failed = _command_not_answered(cfg, run)
        if failed is not None:
            return failed
        outcome = run.outcome
        assert outcome is not None
        if args.json:
            _print_json(outcome.to_dict())
        if outcome.status == "done":
            if not args.json:
                done_line = _DONE_LINES.get(args.command_type)
                print(done_line(args, outcome.data) if done_line else "done")
            if args.command_type == "reveal-pin":
                _pin_warning(args)
            return run.exit_code
        if outcome.status == "timeout":
            print(
                f"unknown: no final result for {args.command_type} of cell {args.cell} on "
                f"{args.locker} within {args.timeout:g} s "
                f"({'accepted' if outcome.accepted else 'not even accepted'}); the outcome is "
                f"unknown: the command may still execute until it expires at "
                f"{_when(outcome.expires_at)} (cmd_id {outcome.cmd_id})",
                file=sys.stdout if not args.json else sys.stderr,
            )
            return run.exit_code
        if not args.json:
            print(f"{outcome.status}: {outcome.reason}")
        return run.exit_code

    return _run(args, body)


# -- status -----------------------------------------------------------------------------------
#: How long `status --live` collects retained messages at most (default of --max-wait).
LIVE_MAX_WAIT_S = 5.0


#: Lockers per page of `status` in text mode (--json lists all unless --limit).
STATUS_PAGE = 50


def _add_status(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "status",
        help="lockers online/offline, how fresh, their cells, and how the ingest keeps up",
        description=(
            "Read the lockers and cells the ingest stored in the database ([database] url): "
            "first the whole fleet's totals (lockers, online, offline, incomplete, with alarms), "
            "each ingest replica (heartbeat age, inbox depth, lag of the events it stores; STALE "
            "when its heartbeat is older than three intervals) and the console's open "
            "ingest_lag alarms; then one page of lockers, each with when it was last heard of, "
            "the age of its status, cells stored/declared, its outbox (events not yet "
            "acknowledged, and the oldest one's age) and its open alarms. Filters narrow the "
            "page, never the totals. "
            "With --live, or when the configuration has no [database] (or the database has no "
            "locker yet), read the broker's retained status and cell topics instead (works "
            "without the ingest, but collects for at most --max-wait seconds). Declared cells "
            "that are missing are named on stderr. Exit 0 listed; 1 the database or the broker "
            "failed; 2 bad configuration, bad arguments or a refused login; 3 (--live) the "
            "listing may be incomplete."
        ),
    )
    p.add_argument("--locker", metavar="ID", help="only this locker")
    p.add_argument("--offline", action="store_true", help="only lockers offline (or never "
                   "online)")
    p.add_argument("--alarms", action="store_true",
                   help="only lockers with open alarms (raised in the last 24 h, not ended)")
    p.add_argument("--incomplete", action="store_true",
                   help="only lockers with fewer cells stored than they declare")
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"lockers per page (default {STATUS_PAGE} in text, all with --json; "
                        "0: all)")
    paging = p.add_mutually_exclusive_group()
    paging.add_argument("--page", type=int, metavar="K", help="the K-th page (from 1)")
    paging.add_argument("--after", metavar="ID",
                        help="the page of lockers after this id (the next page of a listing "
                             "that ended at ID; stable while lockers are added)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--live", action="store_true",
                   help="read the broker's retained messages, not the database")
    p.add_argument("--max-wait", type=float, default=LIVE_MAX_WAIT_S, metavar="S",
                   help=f"--live: stop collecting after S seconds (default {LIVE_MAX_WAIT_S:g})")
    p.set_defaults(handler=cmd_status)


def _database_is_configured(cfg: ConsoleConfig) -> str | None:
    """None when `status` should read the database; else why it reads the broker instead."""
    if "database" not in cfg.model_fields_set:
        return "the configuration has no [database]"
    url = make_url(cfg.database.url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        return f"no database at {file} yet (is `locker-console ingest` running?)"
    return None


def _status_limit(args: argparse.Namespace) -> int | None:
    """Lockers per page: --limit (0: all), else 50 in text and all with --json."""
    if args.limit is not None:
        return args.limit or None
    return None if args.json else STATUS_PAGE


def _read_fleet_status(url: str, args: argparse.Namespace) -> FleetStatus:
    """Totals counted by the database; one page of lockers and their cells loaded."""
    which = queries.FleetFilter(locker=args.locker, offline=args.offline, alarms=args.alarms,
                                incomplete=args.incomplete)
    limit = _status_limit(args)
    offset = (args.page - 1) * (limit or 0) if args.page else 0
    now = int(time.time() * 1000)
    db = open_database(url)
    try:
        with db.transaction() as s:
            totals = queries.fleet_totals(s, now)
            rows, matching = queries.fleet_page(s, now, which, limit=limit, after=args.after,
                                                offset=offset)
            cells = queries.cells_of(s, [r.id for r in rows])
            replicas = queries.ingest_replicas(s)
            alarms = queries.open_console_alarms(s)
            first = offset + 1 if args.after is None else None
            page = {"matching": matching, "listed": len(rows), "first": first,
                    "limit": limit,
                    "next_after": rows[-1].id if limit and len(rows) == limit else None}
            return fleet_status.from_page(rows, cells, now=now, totals=totals,
                                          replicas=replicas, console_alarms=alarms, page=page)
    finally:
        db.dispose()


async def _live_fleet_status(cfg: ConsoleConfig, args: argparse.Namespace) -> FleetStatus:
    topics = Topics(cfg.mqtt.prefix)
    if args.locker:
        filters = [topics.status(args.locker), f"{topics.prefix}/{args.locker}/cells/+"]
    else:
        filters = [topics.wildcard(TopicKind.STATUS), topics.wildcard(TopicKind.CELL)]
    async with make_client(cfg.mqtt) as client, Remote(client, topics) as remote:
        read = await remote.collect_retained(filters, max_s=args.max_wait)
    found: list[tuple[str, fleet_status.TopicKindLike, bytes]] = []
    for message in read.messages:
        parsed = topics.parse(str(message.topic))
        if parsed is None:
            continue
        payload = message.payload if isinstance(message.payload, bytes) else b""
        found.append((parsed.locker,
                      "status" if parsed.kind is TopicKind.STATUS else "cell", payload))
    cut = None if read.quiet else (
        f"stopped collecting after {read.elapsed_s:.1f} s (--max-wait) with retained messages "
        f"still arriving ({len(read.messages)} received)")
    return fleet_status.from_retained(found, cut_short=cut)


def cmd_status(args: argparse.Namespace) -> int:
    if args.max_wait <= 0:
        return _error("--max-wait must be more than 0")
    if args.limit is not None and args.limit < 0:
        return _error("--limit must be 0 (all) or more")
    if args.page is not None and args.page < 1:
        return _error("--page counts from 1")

    async def body(cfg: ConsoleConfig) -> int:
        why_live = None if args.live else _database_is_configured(cfg)
        if args.live or why_live:
            if why_live:
                print(f"locker-console: {why_live}: reading the broker's retained messages "
                      "(as --live)", file=sys.stderr)
            try:
                report = await _live_fleet_status(cfg, args)
            except aiomqtt.MqttError as exc:
                return _broker_error(cfg, exc)
        else:
            try:
                report = await asyncio.to_thread(_read_fleet_status, cfg.database.url, args)
            except SQLAlchemyError as exc:
                print(f"locker-console: cannot read the database {cfg.database.url}: {exc}",
                      file=sys.stderr)
                return EXIT_FAILED
            nothing = not (report.totals or {}).get("lockers") or (
                args.locker and not report.lockers)
            if nothing:  # the ingest has stored no (such) locker: ask the broker
                what = f"no locker {args.locker}" if args.locker else "no lockers"
                print(f"locker-console: the database has {what} (is `locker-console ingest` "
                      "running?): reading the broker's retained messages (as --live)",
                      file=sys.stderr)
                try:
                    report = await _live_fleet_status(cfg, args)
                except aiomqtt.MqttError as exc:
                    return _broker_error(cfg, exc)
        _print_fleet_status(report, args)
        for line in report.skipped:
            print(f"locker-console: {line}", file=sys.stderr)
        for client_id in report.stale_replicas:
            print(f"locker-console: warning: ingest {client_id} has not written its heartbeat "
                  "for more than three intervals (stopped, hung or cut off from the database)",
                  file=sys.stderr)
        problems = report.problems
        for line in problems:
            print(f"locker-console: warning: {line}", file=sys.stderr)
        if problems and report.source == "broker":
            print("locker-console: warning: the listing may be incomplete; `status` without "
                  "--live reads what the ingest stored", file=sys.stderr)
            return EXIT_UNKNOWN
        return EXIT_OK

    return _run(args, body)


def _print_fleet_header(report: FleetStatus, now: int) -> list[str]:
    """The whole fleet's totals, the ingest replicas and the console's open alarms."""
    t = report.totals or {}
    out = [f"fleet: {t.get('lockers', 0)} lockers, {t.get('online', 0)} online, "
           f"{t.get('offline', 0)} offline, {t.get('unknown', 0)} unknown, "
           f"{t.get('incomplete', 0)} incomplete, {t.get('with_alarms', 0)} with alarms"]
    if not report.ingest:
        out.append("ingest: no replica has written a heartbeat (is `locker-console ingest` "
                   "running?)")
    for r in report.ingest or ():
        head = f"ingest {r['client_id']} ({r['host']} pid {r['pid']}): "
        beat = fleet_status.ago(r["last_beat_at"], now)
        if r["stale"]:
            out.append(head + f"STALE, last heartbeat {beat}")
            continue
        if r["stopped_at"] is not None:
            out.append(head + f"stopped {fleet_status.ago(r['stopped_at'], now)}")
            continue
        lag = ("no events" if r["lag_p50_ms"] is None else
               f"lag p50 {r['lag_p50_ms'] / 1000:.1f} s max {r['lag_max_ms'] / 1000:.1f} s")
        line = (head + f"heartbeat {beat}, inbox {r['inbox_depth']}, {lag}, "
                f"{r['events_per_s']:g} events/s")
        if r["lagging_since"] is not None:
            line += f", BEHIND since {fleet_status.ago(r['lagging_since'], now)}"
        out.append(line)
    for a in report.console_alarms or ():
        data = a["data"] or {}
        out.append(f"alarm {a['kind']} since {_when(a['at'])}: replica {data.get('replica')}, "
                   f"events {(data.get('lag_p50_ms') or 0) / 1000:.0f} s old (p50), above "
                   f"{data.get('threshold_s')} s for {data.get('for_s')} s")
    return out


def _freshness(d: dict[str, Any], now: int) -> str:
    """`heard 12 s ago  status 1 min ago  cells 16/16  outbox 3 (oldest 2 min ago)  alarms 1`"""
    parts = [f"heard {fleet_status.ago(d.get('last_heard_at'), now)}",
             f"status {fleet_status.ago(d.get('last_status_at'), now)}"]
    declared = d.get("cells_declared")
    parts.append(f"cells {d.get('cells_known', 0)}/{'?' if declared is None else declared}")
    box = d.get("outbox")
    if box is not None:
        parts.append(f"outbox {box['depth']}" + (
            f" (oldest {fleet_status.ago(box['oldest_at'], now)})" if box["depth"] else ""))
    stored, acked = d.get("stored_seq"), d.get("acked_seq")
    if stored is not None and acked is not None and stored > acked:
        parts.append(f"acked {acked} of {stored} (a hole)")
    if d.get("alarms_open"):
        parts.append(f"alarms {d['alarms_open']}")
    return "  ".join(parts)


def _print_fleet_status(report: FleetStatus, args: argparse.Namespace) -> None:
    if args.json:
        _print_json(report.to_dict())
        return
    now = int(time.time() * 1000)
    entries = sorted(report.lockers, key=lambda e: e.id)
    out: list[str] = []
    if report.totals is not None:
        out += _print_fleet_header(report, now)
    if not entries:
        where = "in the database" if report.source == "database" else "on the broker"
        filtered = report.totals is not None and (args.offline or args.alarms or args.incomplete)
        out.append(("no lockers match" if filtered else "no lockers")
                   + (f" named {args.locker}" if args.locker else "") + f" {where}")
    for entry in entries:
        d = entry.details
        online = {True: "online", False: "offline", None: "unknown"}[entry.online]
        line = f"{entry.id}  {online}"
        if d.get("version"):
            line += (f"  version {d['version']}  boot {d.get('boot_id')}  "
                     f"started {_when(d.get('started_at'))}")
        boards = d.get("boards") or []
        if boards:
            line += "  boards " + ", ".join(
                f"{b['name']} {'ok' if b['online'] else 'OFFLINE'}" for b in boards)
        if d.get("last_status_at"):
            line += f"  as of {_when(d['last_status_at'])}"
        if report.totals is not None:
            line += "  " + _freshness(d, now)
        out.append(line)
        for c in sorted(entry.cells, key=lambda c: c["cell"]):
            out.append(f"  cell {c['cell']:>3}  {c['state']:<9} door {c['door']:<8} "
                       f"size {c['size']}")
    page = report.page
    if page and entries and page["listed"] < page["matching"]:
        span = (f"lockers {page['first']}-{page['first'] + page['listed'] - 1}"
                if page["first"] else f"{page['listed']} lockers")
        more = (f"; next page: --after {page['next_after']}" if page["next_after"] else "")
        out.append(f"page: {span} of {page['matching']}{more}")
    if out:
        sys.stdout.write("\n".join(out) + "\n")


# -- alarms -----------------------------------------------------------------------------------
def _add_alarms(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "alarms",
        help="alarms the ingest raised (seq gaps, quarantined messages, floods), newest last",
        description="Read the database's alarms and, with --quarantine, the quarantined "
                    "messages (locker, topic, reason, the start of the payload).",
    )
    p.add_argument("--locker", metavar="ID", help="only this locker")
    p.add_argument("--last", type=int, default=50, metavar="N", help="the last N (50)")
    p.add_argument("--quarantine", action="store_true", help="quarantined messages instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_alarms)


def cmd_alarms(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        try:
            rows = await asyncio.to_thread(_read_alarms, cfg.database.url, args)
        except SQLAlchemyError as exc:
            print(f"locker-console: cannot read the database {cfg.database.url}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILED
        if args.json:
            _print_json({"quarantine" if args.quarantine else "alarms": rows})
            return EXIT_OK
        if not rows:
            print("no quarantined messages" if args.quarantine else "no alarms")
        for r in rows:
            if args.quarantine:
                print(f"{_when(r['at'])}  {r['locker']}  {r['reason']}  {r['topic']}  "
                      f"{r['size']} bytes: {r['detail']}  {r['excerpt']!r}")
            else:
                ended = f"  (ended {_when(r['ended_at'])})" if r["ended_at"] else ""
                print(f"{_when(r['at'])}  {r['locker'] or '(console)'}  {r['kind']}  "
                      f"{json.dumps(r['data'], sort_keys=True)}{ended}")
        return EXIT_OK

    return _run(args, body)


def _read_alarms(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    db = open_database(url)
    try:
        read = queries.latest_quarantine if args.quarantine else queries.latest_alarms
        with db.transaction() as s:
            found: list[Any] = read(s, last=args.last, locker=args.locker)
        rows = []
        for r in found:
            if args.quarantine:
                text = (r.excerpt or b"").decode("utf-8", "replace")
                rows.append({"locker": r.locker, "topic": r.topic, "reason": r.reason,
                             "detail": r.detail, "size": r.size, "at": r.at,
                             "excerpt": text if r.excerpt is not None else None})
            else:
                rows.append({"locker": r.locker, "kind": r.kind, "data": r.data, "at": r.at,
                             "ended_at": r.ended_at})
        return rows
    finally:
        db.dispose()


# -- watch ------------------------------------------------------------------------------------
def _add_watch(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "watch",
        help="live events, command results and status changes, one line each, until Ctrl-C",
    )
    p.add_argument("--locker", metavar="ID", help="only this locker")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_watch)


def _describe(kind: TopicKind, payload: bytes) -> str:
    obj = json.loads(payload)
    if kind is TopicKind.EVENTS:
        return f"event #{obj['seq']} {obj['type']} {json.dumps(obj.get('data', {}))}"
    if kind is TopicKind.CMD_RESULT:
        tail = f" {obj['reason']}" if obj.get("reason") else ""
        return f"command {obj['cmd_id']} {obj['status']}{tail}"
    if kind is TopicKind.STATUS:
        if not obj.get("online"):
            return "status offline"
        return f"status online version {obj.get('version')} boot {obj.get('boot_id')}"
    return f"config applied version {obj.get('version')}"


def cmd_watch(args: argparse.Namespace) -> int:
    models: dict[TopicKind, type[Message]] = {
        TopicKind.EVENTS: Event, TopicKind.CMD_RESULT: CommandResult,
        TopicKind.STATUS: Status, TopicKind.CONFIG_APPLIED: ConfigApplied,
    }

    async def body(cfg: ConsoleConfig) -> int:
        topics = Topics(cfg.mqtt.prefix)
        if args.locker:
            filters = [topics.topic(kind, args.locker) for kind in models]
        else:
            filters = [topics.wildcard(kind) for kind in models]
        try:
            async with make_client(cfg.mqtt) as client:
                await client.subscribe([(f, 1) for f in filters])
                async for message in client.messages:
                    parsed = topics.parse(str(message.topic))
                    if parsed is None or parsed.kind not in models:
                        continue
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    now = datetime.now().astimezone().strftime("%H:%M:%S.%f")[:-3]
                    try:
                        model = models[parsed.kind].from_payload(payload)
                    except MalformedPayload as exc:
                        print(f"{now} {parsed.locker} malformed {parsed.kind.value}: {exc}",
                              flush=True)
                        continue
                    if args.json:
                        _print_json({"at": now, "locker": parsed.locker, "kind": parsed.kind.value,
                                     "retained": message.retain, "payload": model.to_dict()})
                    else:
                        mark = " (retained)" if message.retain else ""
                        print(f"{now} {parsed.locker} {_describe(parsed.kind, payload)}{mark}",
                              flush=True)
        except aiomqtt.MqttError as exc:
            return _broker_error(cfg, exc)
        return EXIT_OK

    return _run(args, body)


# -- publish-config ---------------------------------------------------------------------------
def _add_publish_config(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "publish-config",
        help="sign and publish a locker's configuration, wait until it is applied",
        description=(
            "FILE is the configuration body: a storage profile (config/profile.example.toml), "
            "TOML (.toml) or JSON. A profile's `version` is the configuration's version (one "
            "number). Exit 0 applied, 1 rejected, 2 unusable request, 3 not applied in time."
        ),
    )
    p.add_argument("--locker", required=True, metavar="ID")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--version", type=int, metavar="N",
                   help="the configuration's version; default: the body's own `version` (a "
                        "profile's), else the version the locker runs (or was last sent) + 1")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S")
    p.add_argument("--form", choices=("auto", "sections", "flat"), default="auto",
                   help="how the body is sent: `sections` ({\"storage\": profile, ...}, read "
                        "by lockerd from this release on), `flat` (a bare profile, the form "
                        "every lockerd reads), `auto` (default: flat while the file holds only "
                        "a storage profile, so older lockers keep applying it; sections "
                        "otherwise)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_publish_config)


def _read_body(path: Path) -> dict[str, Any]:
    """The configuration body: a .toml file is read as lockerd reads its local profile file
    (contract.config_file.read_toml), so the same file serves both; anything else is JSON."""
    if path.suffix == ".toml":
        try:
            return read_toml(path, "configuration body")
        except ConfigError as exc:
            raise _Usage(str(exc)) from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Usage(f"{path}: cannot read: {exc.strerror}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Usage(f"{path}: not valid JSON (name it .toml for TOML): {exc}") from None
    if not isinstance(body, dict):
        raise _Usage(f"{path}: the configuration body must be an object/table")
    return body


def _body_in_form(body: dict[str, Any], form: str, path: Path) -> dict[str, Any]:
    """The body as `--form` asks: `auto` keeps a bare profile flat (every lockerd applies it)
    and a sectioned file in sections; a file with sections besides `storage` has no flat form."""
    if form == "sections":
        return sectioned(body)
    if form == "flat" or (form == "auto" and is_sectioned(body)):
        if not is_sectioned(body):
            return body
        extra = sorted(set(body) - {"storage"})
        if form == "auto" and extra:
            return body
        if extra or not isinstance(body.get("storage"), dict):
            raise _Usage(f"{path}: --form flat sends only a storage profile; the file has "
                         f"sections {', '.join(sorted(body))}")
        return dict(body["storage"])
    return body


def cmd_publish_config(args: argparse.Namespace) -> int:
    if not is_valid_locker_id(args.locker):
        return _error(f"invalid --locker {args.locker!r}")
    if args.version is not None and args.version < 1:
        return _error("--version must be >= 1")

    async def body(cfg: ConsoleConfig) -> int:
        sign = _signing(cfg, args.config)
        config_body = _body_in_form(_read_body(args.file), args.form, args.file)
        profile_part = config_body.get("storage", config_body)
        own = profile_part.get("version") if isinstance(profile_part, dict) else None
        own_version = own if isinstance(own, int) and not isinstance(own, bool) else None
        version = args.version if args.version is not None else own_version
        if version is not None and version < 1:
            raise _Usage(f"{args.file}: version must be >= 1 (got {version})")
        if "parcels" not in config_body:
            kept = await directory_publish.retained_directory(cfg, args.locker)
            if kept is not None:
                _warning(f"{args.file} has no parcels section: {args.locker} drops its "
                         f"{kept[0]} recipients and {kept[1]} staff logins; run `locker-console "
                         f"recipients publish --locker {args.locker}` to publish them again")
        run = await operations.publish_config(cfg, sign, args.locker, config_body,
                                              version=version, timeout=args.timeout)
        if run.broker is not None:
            return _broker_failure(cfg, run.broker)
        outcome = run.outcome
        assert outcome is not None
        if args.json:
            _print_json(outcome.to_dict())
        # One name per thing: the body's own version is named only when it differs.
        other = (f" (the body's own version is {own_version})"
                 if own_version is not None and own_version != outcome.version else "")
        if outcome.status == "applied":
            if not args.json:
                print(f"applied: {args.locker} runs configuration version {outcome.version}"
                      f"{other}")
            return run.exit_code
        if outcome.status == "rejected":
            if not args.json:
                hint = ""
                if (args.version is None and own_version is not None
                        and outcome.previous_version is not None):
                    hint = f"; raise `version` in {args.file} above {outcome.previous_version}"
                print(f"rejected: version {outcome.version}: {outcome.reason}{other}{hint}")
            return run.exit_code
        print(f"unknown: version {outcome.version} is published (retained) but {args.locker} did "
              f"not confirm it within {args.timeout:g} s; it will apply it when it reads it",
              file=sys.stderr if args.json else sys.stdout)
        return run.exit_code

    return _run(args, body)


# -- recipients and couriers (parcel lockers) -------------------------------------------------
def _add_directory_common(p: argparse.ArgumentParser, *, publish: bool = True) -> None:
    p.add_argument("--locker", required=True, metavar="ID")
    p.add_argument("--json", action="store_true")
    if publish:
        p.add_argument("--no-publish", action="store_true",
                       help="store in the database only; publish later with `recipients "
                            "publish` (e.g. after adding many couriers)")
        p.add_argument("--timeout", type=float, default=15.0, metavar="S",
                       help="wait this long for the locker to apply the configuration")


def _add_recipients(subparsers: SubParsers) -> None:
    group = subparsers.add_parser(
        "recipients", help="a parcel locker's recipient list: import, list, publish",
        description="The recipients a courier chooses from at a parcel locker's kiosk. They "
                    "travel in the locker's signed configuration (section `parcels`).")
    sub = group.add_subparsers(dest="recipients_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "import", help="check a CSV/XLSX list and, if every row is valid, apply and publish it",
        description="FILE: CSV (UTF-8, with or without BOM, `,` or `;`) or XLSX (first sheet) "
                    "with a header row: id, name, department, number, phone, email, language "
                    "(Russian names too: имя, отдел, номер, телефон, почта...). All or "
                    "nothing: one bad row and nothing is applied; exit 1 with the bad rows by "
                    "line number. Exit 0 applied, 1 bad rows / not applied, 2 unusable "
                    "request, 3 published but not confirmed in time.")
    _add_directory_common(p)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--dry-run", action="store_true", help="check only; store and publish nothing")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--replace", dest="mode", action="store_const", const="replace",
                      help="the file is the whole list (default)")
    mode.add_argument("--merge", dest="mode", action="store_const", const="merge",
                      help="add the file's recipients and update those with the same id")
    p.set_defaults(handler=cmd_recipients_import, mode="replace")
    p = sub.add_parser("list", help="the locker's recipients (phones and e-mails masked)")
    _add_directory_common(p, publish=False)
    p.set_defaults(handler=cmd_recipients_list)
    p = sub.add_parser("publish", help="publish the locker's recipients and staff as stored")
    _add_directory_common(p)
    p.set_defaults(handler=cmd_directory_publish)


def _add_couriers(subparsers: SubParsers) -> None:
    group = subparsers.add_parser(
        "couriers", help="a parcel locker's staff logins (couriers, operators, collectors, "
                         "administrators): add, list, disable",
        description="Staff log in at a parcel locker's kiosk with a login code and a PIN. "
                    "Logins are per locker; the console stores and publishes only the PIN's "
                    "scrypt hash.")
    sub = group.add_subparsers(dest="couriers_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="add a login; the PIN is asked for (or read from stdin)")
    _add_directory_common(p)
    p.add_argument("--id", required=True, dest="staff_id", metavar="ID")
    p.add_argument("--name", required=True)
    p.add_argument("--role", choices=directory.ROLES, default="courier")
    p.add_argument("--code", required=True, metavar="DIGITS",
                   help="the login code typed at the kiosk (4 to 12 digits, unique per locker)")
    p.add_argument("--pin-stdin", action="store_true",
                   help="read the PIN (4 to 8 digits) from the first line of stdin, not a prompt")
    p.set_defaults(handler=cmd_couriers_add)
    p = sub.add_parser("list", help="the staff logins (of one locker, or all)")
    p.add_argument("--locker", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_couriers_list)
    p = sub.add_parser("disable", help="disable a login (kept, published as disabled)")
    _add_directory_common(p)
    p.add_argument("--id", required=True, dest="staff_id", metavar="ID")
    p.set_defaults(handler=cmd_couriers_disable)
    p = sub.add_parser("publish", help="publish the locker's recipients and staff as stored")
    _add_directory_common(p)
    p.set_defaults(handler=cmd_directory_publish)


_STAFF_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LOGIN_CODE_RE = re.compile(r"^[0-9]{4,12}$")


def _check_locker(args: argparse.Namespace) -> None:
    if not is_valid_locker_id(args.locker):
        raise _Usage(f"invalid --locker {args.locker!r}")


async def _open_db(cfg: ConsoleConfig) -> Database:
    try:
        return await asyncio.to_thread(open_database, cfg.database.url)
    except (SQLAlchemyError, OSError) as exc:
        raise operations.Unusable(f"cannot open the database {cfg.database.url}: {exc}") from None


async def _read_db(cfg: ConsoleConfig, read: Callable[[Session], _T]) -> _T:
    """`read` in one transaction of the console's database, opened for it and closed after."""
    db = await _open_db(cfg)
    try:
        with db.transaction() as s:
            return read(s)
    finally:
        db.dispose()


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], what: str,
                line: Callable[[dict[str, Any]], str]) -> int:
    """A listing: the rows as one JSON array (--json), else a line each and their count."""
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        print(line(r))
    print(f"{len(rows)} {what}")
    return EXIT_OK


async def _change_directory(cfg: ConsoleConfig, args: argparse.Namespace,
                            report: dict[str, Any],
                            change: Callable[[Session], str] | None = None) -> int:
    """Store `change` (it returns what to print) in one transaction, then publish the locker's
    directory as stored; with --json, print `report` once it says how publishing ended."""
    db = await _open_db(cfg)
    try:
        if change is not None:
            def store() -> str:
                with db.transaction() as s:
                    return change(s)

            try:
                done = await asyncio.to_thread(store)
            except directory.DirectoryError as exc:
                raise _Usage(str(exc)) from None
            if not args.json:
                print(done)
        code = await _publish_directory(cfg, args, db, report)
    finally:
        db.dispose()
    if args.json:
        _print_json(report)
    return code


async def _publish_directory(cfg: ConsoleConfig, args: argparse.Namespace, db: Database,
                             report: dict[str, Any]) -> int:
    """Publish the stored directory; say how it ended (in `report` for --json)."""
    if args.no_publish:
        report["published"] = None
        if not args.json:
            print(f"stored; not published (run `locker-console recipients publish --locker "
                  f"{args.locker}`)")
        return EXIT_OK
    sign = _signing(cfg, args.config)
    done = await directory_publish.publish_directory(cfg, sign, db, args.locker,
                                                     timeout=args.timeout)
    run = done.run
    if run.broker is not None:
        if not args.json:
            print("stored in the database; NOT published: the broker could not be used (run "
                  f"`locker-console recipients publish --locker {args.locker}` later)")
        if done.payload_bytes > 64 * 1024 and not run.broker.login_refused:
            _warning(f"the configuration is {done.payload_bytes} bytes: a broker whose "
                     "max_packet_size is smaller closes the connection (docs/broker.md, "
                     "locker-broker --max-packet-size)")
        return _broker_failure(cfg, run.broker)
    outcome = run.outcome
    assert outcome is not None
    report["published"] = outcome.to_dict()
    if not args.json:
        what = f"{done.recipients} recipients, {done.staff} staff"
        if outcome.status == "applied":
            print(f"applied: {args.locker} runs configuration version {outcome.version} ({what})")
        elif outcome.status == "rejected":
            print(f"rejected: version {outcome.version}: {outcome.reason}")
        else:
            print(f"unknown: version {outcome.version} ({what}) is published (retained) but "
                  f"{args.locker} did not confirm it within {args.timeout:g} s; it will apply "
                  "it when it reads it")
    return run.exit_code


def cmd_recipients_import(args: argparse.Namespace) -> int:
    try:
        _check_locker(args)
        data = args.file.read_bytes()
    except _Usage as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{args.file}: cannot read: {exc.strerror}")
    result = recipients_import.parse_file(data)
    report: dict[str, Any] = {"locker": args.locker, "file": str(args.file),
                              "ok": result.ok, "rows": len(result.recipients),
                              "errors": [e.to_dict() for e in result.errors]}
    if not result.ok:
        if args.json:
            _print_json({**report, "applied": False})
        else:
            print(f"{args.file}: {len(result.errors)} problem(s); nothing applied:")
            for error in result.errors:
                print(f"  {error}")
        return EXIT_FAILED
    if args.dry_run:
        if args.json:
            _print_json({**report, "applied": False, "dry_run": True})
        else:
            print(f"{args.file}: {len(result.recipients)} recipients, all valid (dry run: "
                  "nothing applied)")
        return EXIT_OK

    def store(s: Session) -> str:
        total = directory.store_recipients(s, args.locker, result.recipients, args.mode,
                                           int(time.time() * 1000))
        report.update(applied=True, mode=args.mode, recipients=total)
        return f"stored: {args.locker} has {total} recipients ({args.mode})"

    async def body(cfg: ConsoleConfig) -> int:
        return await _change_directory(cfg, args, report, store)

    return _run(args, body)


def cmd_recipients_list(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        _check_locker(args)
        out = await _read_db(cfg, lambda s: [
            {"id": r.id, "name": r.name, "department": r.department, "number": r.number,
             "language": r.language, "phone": masked_phone(r.phone) if r.phone else None,
             "email": masked_email(r.email) if r.email else None}
            for r in directory.recipient_rows(s, args.locker)])
        return _print_rows(args, out, "recipients", lambda r: (
            f"{r['id']:<12} {r['name']:<32} {r['department'] or '-':<20} "
            f"{r['number'] or '-':<8} {' '.join(c for c in (r['phone'], r['email']) if c)}"))

    return _run(args, body)


def cmd_directory_publish(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        _check_locker(args)
        return await _change_directory(cfg, args, {"locker": args.locker})

    return _run(args, body)


def _read_pin(args: argparse.Namespace) -> str:
    """The PIN from stdin's first line (--pin-stdin) or typed twice at a prompt; never an
    argument, which `ps` would show to every user of the machine."""
    if args.pin_stdin:
        pin = sys.stdin.readline().strip()
    else:
        pin = getpass.getpass("PIN (4 to 8 digits): ")
        if getpass.getpass("the same PIN again: ") != pin:
            raise _Usage("the two PINs differ")
    try:
        return check_pin(pin)
    except PinHashError as exc:
        raise _Usage(str(exc)) from None


def cmd_couriers_add(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        _check_locker(args)
        if not _STAFF_ID_RE.match(args.staff_id):
            raise _Usage(f"invalid --id {args.staff_id!r} (letters, digits, _.-)")
        if not _LOGIN_CODE_RE.match(args.code):
            raise _Usage("--code must be 4 to 12 digits")
        name = " ".join(args.name.split())
        if not name or len(name) > 200:
            raise _Usage("--name must be 1 to 200 characters")
        pin_hash = await asyncio.to_thread(hash_pin, _read_pin(args))

        def add(s: Session) -> str:
            directory.add_staff(s, args.locker, staff_id=args.staff_id, name=name,
                                role=args.role, code=args.code, pin_hash=pin_hash,
                                now_ms=int(time.time() * 1000))
            return (f"added: {args.role} {args.staff_id} ({name}) at {args.locker}, login "
                    f"code {args.code}")

        return await _change_directory(cfg, args, {"locker": args.locker, "id": args.staff_id,
                                                   "role": args.role, "code": args.code}, add)

    return _run(args, body)


def cmd_couriers_list(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        if args.locker is not None:
            _check_locker(args)
        out = await _read_db(cfg, lambda s: [
            {"locker": r.locker, "id": r.id, "name": r.name, "role": r.role, "code": r.code,
             "disabled": r.disabled} for r in directory.staff_rows(s, args.locker)])
        return _print_rows(args, out, "logins", lambda r: (
            f"{r['locker']:<12} {r['id']:<12} {r['role']:<13} {r['code']:<12} "
            f"{'disabled' if r['disabled'] else 'active':<8} {r['name']}"))

    return _run(args, body)


def cmd_couriers_disable(args: argparse.Namespace) -> int:
    async def body(cfg: ConsoleConfig) -> int:
        _check_locker(args)

        def disable(s: Session) -> str:
            directory.disable_staff(s, args.locker, args.staff_id, int(time.time() * 1000))
            return f"disabled: {args.staff_id} at {args.locker}"

        return await _change_directory(cfg, args, {"locker": args.locker, "id": args.staff_id,
                                                   "disabled": True}, disable)

    return _run(args, body)


#: The commands of the contract's table about one cell: each is a subcommand of its own (the
#: parcel business's commands are sent by `parcels expect`, `returns create`, `report cells`).
CELL_COMMANDS = tuple(t for t, spec in COMMANDS.items() if "cell" in spec.args.model_fields)

#: Each command of the contract's table as `locker-console` offers it: (help, what done shows).
_COMMAND_HELP: dict[CommandType, tuple[str, str]] = {
    CommandType.OPEN: ("open a cell of a locker", ""),
    CommandType.BLOCK: ("block a cell of a locker", ""),
    CommandType.UNBLOCK: ("unblock a cell of a locker", ""),
    CommandType.WAIVE: ("force majeure: waive the debt of a cell's tenancy",
                        " (done: the amount waived)"),
    CommandType.REVEAL_PIN: ("force majeure: show the PIN of a cell's tenancy",
                             " (done: the PIN; the reveal is recorded)"),
    CommandType.EVICT: ("force majeure: open an abandoned cell and close its tenancy as seized",
                        " (done: the sensor saw the door open)"),
}


# -- parcels, returns, cell reports (parcel lockers) ------------------------------------------
#: Parcels per page of `parcels` in text mode (--json lists all unless --limit).
PARCELS_PAGE = 50
PARCEL_STATUSES = ("announced", "deposited", "expired", "picked_up", "returned_to_sender",
                   "cancelled")


def _add_parcel_command_options(p: argparse.ArgumentParser, type_: str) -> None:
    p.add_argument("--reason", metavar="TEXT", default="",
                   help="why (kept in the audit trail; default: says what is asked)")
    p.add_argument("--operator", default=_login_name(), metavar="NAME",
                   help="who asks (default: the login name)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the locker's answer (default 10)")
    p.add_argument("--json", action="store_true", help="print the final result as JSON")
    p.add_argument("--force", action="store_true",
                   help="send it even to a locker the console has never seen (exit 2 without)")
    p.set_defaults(handler=cmd_parcel_command, command_type=type_)


_PARCEL_EXITS = ("Exit 0 done, 1 failed or rejected (`unsupported`: the locker has no parcel "
                 "business), 2 unusable request, 3 no answer in time (outcome unknown).")


def _add_parcels(subparsers: SubParsers) -> None:
    p = subparsers.add_parser(
        "parcels", help="a parcel locker's parcels as their events told; `expect` announces one",
        description=(
            "List the parcels the ingest stored from parcel lockers' events (status, cell, "
            "size, barcode, recipient and courier ids, when deposited, picked up, due), by "
            "locker and parcel id, one page at a time (--limit, --after). "
            "`parcels expect` tells a locker to expect a barcode for a recipient."),
    )
    p.add_argument("--locker", metavar="ID", help="only this locker")
    p.add_argument("--status", choices=PARCEL_STATUSES, help="only parcels in this status")
    p.add_argument("--barcode", metavar="B", help="only parcels with this barcode")
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"parcels per page (default {PARCELS_PAGE} in text, all with --json; "
                        "0: all)")
    p.add_argument("--after", metavar="LOCKER/PARCEL",
                   help="the page after this parcel (what the previous page's `next_after` "
                        "says; stable while parcels are added)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_parcels)
    sub = p.add_subparsers(dest="parcels_command", metavar="ACTION")
    e = sub.add_parser(
        "expect", help="announce a parcel: the courier's scan of its barcode fills the "
                       "recipient in (signed `expect-parcel`)",
        description="Send a signed `expect-parcel` command: the locker records the parcel as "
                    "announced for the recipient. " + _PARCEL_EXITS)
    e.add_argument("--locker", required=True, metavar="ID")
    e.add_argument("--barcode", required=True, metavar="B")
    e.add_argument("--recipient", required=True, metavar="RID", help="the recipient's id")
    e.add_argument("--parcel-id", metavar="P", help="the parcel's id (default: a new UUID)")
    _add_parcel_command_options(e, "expect-parcel")


def _add_returns(subparsers: SubParsers) -> None:
    group = subparsers.add_parser(
        "returns", help="issue a return code at a parcel locker",
        description="Returns: a code that lets a person drop an item for return at the kiosk.")
    sub = group.add_subparsers(dest="returns_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "create", help="issue a return code (signed `create-return`); shown once",
        description="Send a signed `create-return` command and print the return code the "
                    "locker issued. The code is shown here once and never stored by the "
                    "console (its audit trail keeps `redacted`): give it to the person "
                    "returning the item. " + _PARCEL_EXITS)
    p.add_argument("--locker", required=True, metavar="ID")
    p.add_argument("--recipient", metavar="RID", help="the recipient the return is for")
    p.add_argument("--return-id", metavar="R", help="the return's id (default: a new UUID)")
    _add_parcel_command_options(p, "create-return")


def _add_report(subparsers: SubParsers) -> None:
    group = subparsers.add_parser("report", help="e-mail reports of a parcel locker",
                                  description="Reports a locker e-mails on demand.")
    sub = group.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    p = sub.add_parser(
        "cells", help="e-mail the locker's cell report (signed `report-cells`)",
        description="Send a signed `report-cells` command: the locker e-mails its cell report "
                    "(free and occupied cells by size, parcels waiting, expired ones) to "
                    "--email. " + _PARCEL_EXITS)
    p.add_argument("--locker", required=True, metavar="ID")
    p.add_argument("--email", required=True, metavar="ADDR")
    _add_parcel_command_options(p, "report-cells")


def _parcel_after(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    locker, slash, parcel = value.partition("/")
    if not slash or not locker or not parcel:
        raise _Usage(f"invalid --after {value!r}: give LOCKER/PARCEL_ID (a page's next_after)")
    return locker, parcel


def cmd_parcels(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        return _error("--limit must be 0 (all) or more")
    limit = (args.limit or None) if args.limit is not None else (
        None if args.json else PARCELS_PAGE)

    async def body(cfg: ConsoleConfig) -> int:
        after = _parcel_after(args.after)

        def page(s: Session) -> tuple[list[dict[str, Any]], int]:
            rows, matching = queries.parcels_page(s, locker=args.locker, status=args.status,
                                                  barcode=args.barcode, limit=limit,
                                                  after=after)
            return [{c: getattr(r, c) for c in _PARCEL_FIELDS} for r in rows], matching

        out, matching = await _read_db(cfg, page)
        next_after = (f"{out[-1]['locker']}/{out[-1]['parcel_id']}"
                      if limit and len(out) == limit and matching > len(out) else None)
        if args.json:
            _print_json({"parcels": out, "page": {"matching": matching, "listed": len(out),
                                                  "limit": limit, "next_after": next_after}})
            return EXIT_OK
        for r in out:
            print(f"{r['locker']:<12} {r['parcel_id']:<36} {r['status']:<18} "
                  f"cell {r['cell'] if r['cell'] is not None else '-':<4} {r['size'] or '-':<2} "
                  f"{r['barcode'] or '-':<16} to {r['recipient_id'] or '-':<12} "
                  f"by {r['courier_id'] or '-':<10} deposited {_when(r['deposited_at'])}  "
                  f"due {_when(r['expires_at'])}  picked up {_when(r['picked_up_at'])}")
        more = f"; next page: --after {next_after}" if next_after else ""
        print(f"{len(out)} of {matching} parcels{more}")
        return EXIT_OK

    return _run(args, body)


_PARCEL_FIELDS = ("locker", "parcel_id", "status", "cell", "size", "barcode", "recipient_id",
                  "courier_id", "announced_at", "deposited_at", "picked_up_at", "expires_at",
                  "updated_at")


def _parcel_command(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """The command's args, its default reason and what `done` prints."""
    t = args.command_type
    if t == "expect-parcel":
        pid = args.parcel_id or str(uuid.uuid4())
        return ({"parcel_id": pid, "barcode": args.barcode, "recipient_id": args.recipient},
                f"expect parcel {args.barcode}",
                f"done: {args.locker} expects parcel {pid} (barcode {args.barcode}) for "
                f"recipient {args.recipient}")
    if t == "create-return":
        rid = args.return_id or str(uuid.uuid4())
        return ({"return_id": rid, "recipient_id": args.recipient}, "create a return code",
                f"return {rid} at {args.locker}")
    return ({"email": args.email}, "cell report by e-mail",
            f"done: {args.locker} e-mails its cell report to {args.email}")


def cmd_parcel_command(args: argparse.Namespace) -> int:
    if not is_valid_locker_id(args.locker):
        return _error(f"invalid --locker {args.locker!r}")
    values, default_reason, done_line = _parcel_command(args)
    try:
        command_args = operations.parcel_command_args(args.command_type, values)
    except operations.Unusable as exc:
        return _error(str(exc))

    async def body(cfg: ConsoleConfig) -> int:
        sign = _signing(cfg, args.config)
        run = await operations.run_command(
            cfg, sign, args.locker, args.command_type, command_args, operator=args.operator,
            reason=args.reason or default_reason, timeout=args.timeout, force=args.force,
            warn=_warning,
        )
        failed = _command_not_answered(cfg, run)
        if failed is not None:
            return failed
        outcome = run.outcome
        assert outcome is not None
        if args.json:  # the return code too: shown once, here, never stored
            _print_json(outcome.to_dict())
        elif outcome.status == "done" and args.command_type == "create-return":
            code = outcome.data.get("return_code")
            if not isinstance(code, str) or not code:
                print(f"done: {done_line}, but the locker's answer has no return code")
                return EXIT_FAILED
            print(f"return code: {code}  ({done_line}; shown once: the console does not "
                  "keep it)")
        elif outcome.status == "done":
            print(done_line)
        elif outcome.status == "timeout":
            print(f"unknown: no answer to {args.command_type} from {args.locker} within "
                  f"{args.timeout:g} s; it may still execute until it expires at "
                  f"{_when(outcome.expires_at)} (cmd_id {outcome.cmd_id})")
        else:
            print(f"{outcome.status}: {outcome.reason}")
        return run.exit_code

    return _run(args, body)


# -- wiring -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="locker-console",
        description="Back office of a smart-locker fleet.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV),
        help=f"console configuration (TOML); default: ${CONFIG_ENV}",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_keygen(subparsers)
    _add_ingest(subparsers)
    for command in CELL_COMMANDS:  # every cell command of the contract, and only those
        help_text, done = _COMMAND_HELP[command]
        _add_cell_command(subparsers, command, help_text, done=done,
                          note="note" in COMMANDS[command].args.model_fields)
    _add_status(subparsers)
    _add_alarms(subparsers)
    _add_watch(subparsers)
    _add_publish_config(subparsers)
    _add_recipients(subparsers)
    _add_couriers(subparsers)
    _add_parcels(subparsers)
    _add_returns(subparsers)
    _add_report(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its output into a closed pipe (`status | head`) ends quietly."""
    return run_quietly_on_closed_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
