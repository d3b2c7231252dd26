"""`lockerd`: run the locker daemon, check its configuration, or drive it locally (`ctl`).

    lockerd --config FILE                 run the daemon
    lockerd --config FILE --check         validate the configuration and exit
    lockerd ctl --config FILE cells       list cells with state and door
    lockerd ctl --config FILE payments    the card payments: open ones first, then settled
    lockerd ctl --config FILE deposit|pickup|open|temporary|block|unblock --cell N [--reason TEXT]
    lockerd payment-sim --config FILE next decline|offline on|delay S|operations ...
                                          the simulated card terminal's switches
    lockerd store check --config FILE     is the store whole? (0 healthy, 2 damaged)
    lockerd store repair --config FILE    copy it aside, keep what is provably whole (stopped only)

Exit codes: 0 fine, 1 refused by the daemon (ctl) or an unexpected fault (the daemon), 2 bad
configuration / already running / unusable board or kiosk port / damaged store / not running.
`--check` prints `warning:` lines for valid configurations that silently do less than they seem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from contract.config_file import ConfigError
from contract.money import Money
from contract.profiles import load_profile_file
from daemon import payment_sim_ctl
from daemon.config import LockerConfig, config_warnings, load_locker_config
from daemon.control import CELL_OPS, VIEW_OPS, ControlError, request
from daemon.journal import Journal, install_journal_logging

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG = 0, 1, 2
#: lockerd itself: an unexpected fault (logged with its traceback); the service manager restarts.
EXIT_FAULT = 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", help="the locker's TOML configuration")
    parser = argparse.ArgumentParser(
        prog="lockerd",
        parents=[common],
        description="Smart-locker daemon: boards, cells, fleet link.",
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", parents=[common], help="run the daemon (the default)")
    ctl = sub.add_parser(
        "ctl", parents=[common], help="drive a running daemon over its local socket"
    )
    ctl.add_argument("op", choices=[*CELL_OPS, *VIEW_OPS], help="what to do")
    ctl.add_argument("--cell", type=int, help="cell id (for cell operations)")
    ctl.add_argument("--reason", default="", help="why (kept with block/open events)")
    ctl.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    payment_sim_ctl.add_parser(sub, common)
    store = sub.add_parser(
        "store", parents=[common], help="check or repair the local store (data_dir)"
    )
    store_sub = store.add_subparsers(dest="store_command", required=True)
    store_sub.add_parser(
        "check", parents=[common], help="report damaged journal lines (exit 0 healthy, 2 damaged)"
    )
    store_sub.add_parser(
        "repair", parents=[common],
        help="keep a copy, then keep every provably whole commit (lockerd must be stopped)",
    )
    return parser


def _load(path: str | None) -> LockerConfig:
    if not path:
        raise ConfigError("--config FILE is required")
    config = load_locker_config(path)
    if config.profile is not None:
        profile = load_profile_file(config.profile)
        missing = profile.uncovered_cells((c.id, c.size) for c in config.cells)
        if missing:
            raise ConfigError(
                f"{config.profile}: no cell group covers cells {missing} of {path}"
            )
    if config.parcels is not None:
        from daemon.parcels.wiring import load_section

        load_section(config.parcels)  # a bad key is named before anything starts
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"lockerd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "ctl":
        return _ctl(config, args)
    if args.command == "store":
        return _store(config, args.store_command)
    if args.command == "payment-sim":
        return payment_sim_ctl.run(config, args)
    if args.check:
        print(f"{args.config}: OK ({len(config.boards)} boards, {len(config.cells)} cells)")
        for warning in _warnings(config):
            print(f"warning: {warning}", file=sys.stderr)
        return EXIT_OK
    return _run(config)


def _warnings(config: LockerConfig) -> list[str]:
    """`config_warnings` for the local profile (already validated by `_load`)."""
    profile = load_profile_file(config.profile) if config.profile is not None else None
    return config_warnings(config, profile)


def _run(config: LockerConfig) -> int:
    from daemon.app import run_daemon
    from daemon.control import ControlSocketInUse
    from daemon.io.boards import BoardPortError
    from daemon.io.instance_lock import AlreadyRunning
    from daemon.io.store import StoreCorrupt
    from daemon.kiosk_socket import KioskPortError

    journal = Journal(config.locker_id)
    install_journal_logging(journal)  # uvicorn, asyncio, board drivers: JSON lines too
    for warning in _warnings(config):
        journal.line("config_warning", level="warning", message=warning)
    try:
        asyncio.run(run_daemon(config, journal))
    except (AlreadyRunning, BoardPortError, KioskPortError, ControlSocketInUse) as exc:
        print(f"lockerd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreCorrupt as exc:
        print(f"lockerd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a fault of lockerd's own: one JSON line with its traceback
        journal.line("crashed", level="error", error=repr(exc), traceback=traceback.format_exc())
        return EXIT_FAULT
    return EXIT_OK


def _store(config: LockerConfig, what: str) -> int:
    """`lockerd store check|repair`: what a damaged store holds, and an operator's repair."""
    from daemon.io.instance_lock import AlreadyRunning, instance_lock
    from daemon.io.store_repair import RepairRefused, check_store, repair_store

    if what == "check":
        report = check_store(config.data_dir)
        print("\n".join(report.lines()))
        return EXIT_OK if report.healthy else EXIT_CONFIG
    try:
        with instance_lock(config.data_dir, config.locker_id):  # no daemon starts meanwhile
            copy_dir, dropped = repair_store(config.data_dir)
    except AlreadyRunning as exc:
        print(f"lockerd store repair: {exc}; stop it first", file=sys.stderr)
        return EXIT_CONFIG
    except RepairRefused as exc:
        print(f"lockerd store repair: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"copy of the store as it was: {copy_dir}")
    print("\n".join(dropped) if dropped else "nothing dropped: every line was whole")
    print("\n".join(check_store(config.data_dir).lines()))
    return EXIT_OK


def _ctl(config: LockerConfig, args: argparse.Namespace) -> int:
    if args.op not in VIEW_OPS and args.cell is None:
        print(f"lockerd ctl {args.op}: --cell N is required", file=sys.stderr)
        return EXIT_CONFIG
    message: dict = {"op": args.op}
    if args.op not in VIEW_OPS:
        message.update(cell=args.cell, reason=args.reason)
    try:
        reply = request(config.socket_path, message)
    except ControlError as exc:
        print(f"lockerd ctl: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        print(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        print(f"refused: {reply.get('error')}: {reply.get('message', '')}", file=sys.stderr)
    elif args.op == "cells":
        print(_cells_table(reply))
    elif args.op == "payments":
        print(_payments_table(reply))
    else:
        cell = reply["cell"]
        print(f"{args.op} cell {args.cell}: accepted (state {cell['state']}, door {cell['door']})")
    return EXIT_OK if reply.get("ok") else EXIT_REFUSED


def _payments_table(reply: dict) -> str:
    """The card ledger: what is still open comes first (a technician's first question)."""
    lines = [f"{'op_id':<34} {'for':<7} {'cell':>4} {'amount':>10}  {'status':<10} settled"]
    for p in reply["payments"]:
        amount = Money(p["amount"], p["currency"]).format()
        lines.append(f"{p['op_id']:<34} {p['kind']:<7} {p['cell']:>4} {amount:>10}  "
                     f"{p['status']:<10} {'yes' if p.get('settled') else 'NO'}")
        for n, tried in enumerate(p.get("attempts", ()), 1):  # earlier tries: none is forgotten
            at = datetime.fromtimestamp(tried["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"    attempt {n}: {tried['status']} at {at} UTC"
                         + (f" ({tried['reason']})" if tried.get("reason") else ""))
    if not reply["payments"]:
        lines.append("(no payments)")
    return "\n".join(lines)


def _cells_table(reply: dict) -> str:
    """Cells with their pending open (a paid deposit whose door has not opened yet is not just
    "free"), the outbox backlog and board health; times in local time."""
    lines = [f"{'cell':>4}  {'state':<9} {'door':<8} {'size':<5} {'pending':<9} since"]
    for c in reply["cells"]:
        lines.append(f"{c['cell']:>4}  {c['state']:<9} {c['door']:<8} {c['size']:<5} "
                     f"{c.get('pending') or '-':<9} {_local_time(c.get('since'))}")
    events = reply.get("events") or {}
    if "unacknowledged" in events:
        lines.append(f"outbox: {events['unacknowledged']} events not yet acknowledged by the "
                     f"console (last seq {events.get('last_seq')})")
    for b in reply.get("boards", []):
        failing = int(b.get("consecutive_failures") or 0)
        health = (f"NOT ANSWERING ({failing} polls in a row: {b.get('last_error')})" if failing
                  else "answering")
        lines.append(f"board {b['name']}: {health}, last answer {_local_time(b.get('last_ok_at'))}"
                     f", {b.get('polls', 0)} polls, {b.get('failures', 0)} failed")
    if not reply.get("ready"):
        lines.append("(boot reconciliation not finished: some boards have not reported yet)")
    return "\n".join(lines)


def _local_time(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_ms / 1000))


if __name__ == "__main__":
    sys.exit(main())
