"""`locker-broker`: manage the fleet registry, generate the Mosquitto config, run the broker.

    locker-broker [--registry FILE] add-locker ID [--rotate]
    locker-broker [--registry FILE] add-lockers (--count N --prefix P [--start S] [--digits D]
                  | --file FILE|-) [--out CSV] [--rotate] [--reload [--data-dir DIR]]
    locker-broker [--registry FILE] add-console NAME [--rotate]
    locker-broker [--registry FILE] remove NAME
    locker-broker [--registry FILE] list
    locker-broker [--registry FILE] config [--data-dir DIR] [--out DIR] [--port P] [--bind ADDR]
                  [--console-port P] [--console-bind ADDR] [--max-packet-size N]
                  [--max-queued-messages N] [--max-queued-bytes N] [--fleet-size N]
    locker-broker [--registry FILE] run [same options as config, without --out] [--embedded]
    locker-broker [--registry FILE] reload [--data-dir DIR] [--out DIR] [--prefix P]

One data directory (--data-dir, else $LOCKER_BROKER_DATA_DIR, else ./var/broker) holds the
generated files, Mosquitto's persistence and its pid file: `config` writes there (or to --out),
`run` writes and starts from there, `reload` rewrites the accounts and signals the running
Mosquitto found there.

Lockers log in on --port, consoles on --console-port (default --port + 1): see BROKER_EPILOG.

Exit codes: 0 done, 2 bad input (duplicate account, bad name, unreadable registry, no generated
configuration to reload; for add-lockers any refused line of the batch, which then writes nothing,
or an --out file that exists), 1 the broker failed (or `reload`, `add-lockers --reload` found no
running Mosquitto).
The registry defaults to $LOCKER_BROKER_REGISTRY or ./var/broker/registry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from broker.bulk import LockerId, add_lockers, ids_from_count, ids_from_lines
from broker.embedded import NOT_INSTALLED, EmbeddedBroker
from broker.mosquitto_conf import (
    DATA_DIR_ENV,
    DEFAULT_BIND,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_MESSAGES,
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    PER_LOCKER_BURST,
    PID_NAME,
    BrokerSettings,
    default_data_dir,
    prefix_of_acl,
    write_access_files,
    write_config,
)
from broker.registry import Registry, RegistryError, default_registry_path
from broker.runner import find_mosquitto, find_running_mosquitto
from fleet_io.closed_pipe import run_quietly_on_closed_pipe

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

BROKER_EPILOG = """\
Two listeners (docs/broker.md):
  --port          lockers. Mosquitto replaces whatever client id a locker sends with its
                  username (use_username_as_clientid), so no locker can knock another client
                  off, nor take over or wipe its session.
  --console-port  consoles (default: --port + 1, on --console-bind, default --bind), with the
                  client ids they choose. A console's [mqtt] port is this one.
Each listener takes only its own kind of account.

Limits (defaults above):
  --max-packet-size      a bigger packet closes the connection unread; the default takes a
                         parcel locker's signed directory of 10,000 recipients and 500 staff
                         logins (307 KiB) with room; 50,000 recipients need 2097152.
  --max-queued-messages  QoS 1 messages and payload bytes queued per client beyond those in
  --max-queued-bytes     flight: the ingest may fall that far behind one locker's flood before
                         Mosquitto drops messages to it, from every locker alike; lockers
                         re-send what the console has not acknowledged.
  --fleet-size           raises both so that the ingest's queue holds every locker's connect
                         burst at once (18 retained + 100 events each; default: the registry's
                         locker accounts).
ACLs are exactly as deep as the contract's topics (lockers/%u/cells/+, not cells/#).
"""


def _err(msg: str) -> None:
    print(f"locker-broker: {msg}", file=sys.stderr)


def _registry_path(args: argparse.Namespace) -> Path:
    return Path(args.registry) if getattr(args, "registry", None) else default_registry_path()


def _settings(args: argparse.Namespace, data_dir: Path) -> BrokerSettings:
    """Settings from the options; as root without --user, Mosquitto is told to stay root.

    (Dropping to the `mosquitto` user would leave it unable to read owner-only files in a
    root-owned directory; `--user mosquitto` hands the files and data dir to that user instead.)
    """
    user = args.user
    if user is None and os.geteuid() == 0:
        user = "root"
        _err("running as root: Mosquitto will keep root; pass --user mosquitto to drop privileges")
    return BrokerSettings(
        port=args.port, bind=args.bind, data_dir=data_dir, prefix=args.prefix, user=user,
        console_port=args.console_port, console_bind=args.console_bind,
        max_packet_size=args.max_packet_size, max_queued_messages=args.max_queued_messages,
        max_queued_bytes=args.max_queued_bytes, fleet_size=args.fleet_size,
    )


def _print_new_account(username: str, role: str, password: str, rotated: bool) -> None:
    verb = "New password for" if rotated else "Created"
    print(f"{verb} {role} account {username!r}. The password is shown only now; it is stored "
          "hashed.")
    if role == "locker":
        print("Paste this into the locker's lockerd configuration (port: the broker's --port):\n")
        print("[mqtt]")
    else:
        print("Paste this into the console's configuration (port: the broker's --console-port, "
              "by default --port + 1):\n")
        print("[mqtt]")
    print(f'username = "{username}"')
    print(f'password = "{password}"')
    print("\nThen let the running broker accept it: `locker-broker reload` (with the --registry "
          "and --data-dir of `locker-broker run`, if you gave any).")


def cmd_add(args: argparse.Namespace, role: str) -> int:
    with Registry.edit(_registry_path(args)) as reg:
        existed = args.name in reg.accounts
        password = reg.add(args.name, "locker" if role == "locker" else "console",
                           rotate=args.rotate)
    _print_new_account(args.name, role, password, rotated=existed)
    return EXIT_OK


def _batch_ids(args: argparse.Namespace) -> tuple[list[LockerId], str]:
    """The batch's ids and the name its errors give their source by."""
    if args.file is None:
        if not args.prefix:
            raise ValueError("--count needs --prefix (the ids are PREFIX followed by a number)")
        return ids_from_count(args.prefix, args.count, args.start, args.digits), "--count"
    if args.file == "-":
        return ids_from_lines(sys.stdin), "stdin"
    try:
        with open(args.file, encoding="utf-8") as fh:
            return ids_from_lines(fh), args.file
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}"
                         ) from exc


def _create_credentials_file(path: str) -> int:
    """Open a new owner-only file for the passwords; an existing one is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists: the passwords go into a new file only") from None
    os.fchmod(fd, 0o600)
    return fd


def cmd_add_lockers(args: argparse.Namespace) -> int:
    """Many locker accounts in one batch: checked whole, stored once, passwords as CSV."""
    ids, source = _batch_ids(args)
    out_fd = _create_credentials_file(args.out) if args.out else None
    say = sys.stdout if args.out else sys.stderr  # stdout carries the CSV unless --out

    def progress(done: int, total: int) -> None:
        if total > 1000:
            _err(f"hashed {done}/{total} passwords")

    try:
        with Registry.edit(_registry_path(args)) as reg:
            rotated = sum(item.locker_id in reg.accounts for item in ids)
            credentials = add_lockers(reg, ids, rotate=args.rotate, source=source,
                                      progress=progress)
    except BaseException:
        if out_fd is not None:
            os.close(out_fd)
            os.unlink(args.out)
        raise
    if out_fd is not None:
        with os.fdopen(out_fd, "w", encoding="utf-8", newline="") as fh:
            _write_credentials(fh, credentials)
            fh.flush()
            os.fsync(fh.fileno())
    else:
        _write_credentials(sys.stdout, credentials)
        sys.stdout.flush()
    where = f"in {args.out} (owner-only)" if args.out else "above"
    what = f"{len(credentials) - rotated} new locker accounts" + (
        f" and new passwords for {rotated} existing ones" if rotated else "")
    print(f"Stored {what} in {reg.path}; their passwords are "
          f"{where}, shown only now (stored hashed).", file=say)
    if not args.reload:
        print("Let the running broker accept them: `locker-broker reload` (with the --registry "
              "and --data-dir of `locker-broker run`, if you gave any).", file=say, flush=True)
        return EXIT_OK
    say.flush()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    with contextlib.redirect_stdout(say):
        return reload_broker(_registry_path(args), data_dir, data_dir, None)


def _write_credentials(fh: TextIO, credentials: list[tuple[str, str]]) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(("locker_id", "password"))
    writer.writerows(credentials)


def cmd_remove(args: argparse.Namespace) -> int:
    with Registry.edit(_registry_path(args)) as reg:
        reg.remove(args.name)
    print(f"Removed account {args.name!r}; `locker-broker reload` locks it out of the running "
          "broker (new logins; a connected client stays until it disconnects).")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    reg = Registry.load(_registry_path(args))
    if not reg.accounts:
        print(f"(no accounts in {reg.path})")
        return EXIT_OK
    print(f"{'USERNAME':<32} {'ROLE':<8} {'CREATED':<21} UPDATED")
    for acc in sorted(reg.accounts.values(), key=lambda a: (a.role, a.username)):
        print(f"{acc.username:<32} {acc.role:<8} {acc.created_at:<21} {acc.updated_at}")
    return EXIT_OK


def _data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else $LOCKER_BROKER_DATA_DIR, else ./var/broker: one place for every
    subcommand (`config --out DIR` alone keeps its old meaning: files and data in DIR)."""
    if args.data_dir:
        return Path(args.data_dir)
    if getattr(args, "out", None) and not os.environ.get(DATA_DIR_ENV):
        return Path(args.out)
    return default_data_dir()


def cmd_config(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    out = Path(args.out) if args.out else data_dir
    reg = Registry.load(_registry_path(args))
    settings = _settings(args, data_dir)
    files = write_config(reg, settings, out)
    print(f"Wrote {files.conf}, {files.passwd}, {files.console_passwd} and {files.acl} "
          f"({len(reg.lockers())} lockers, {len(reg.consoles())} consoles).")
    print(f"Lockers connect to port {settings.port}, consoles to port "
          f"{settings.console_listener_port}.")
    print(f"Start it with: mosquitto -c {files.conf}"
          + ("" if args.out else f"  (or: locker-broker run --data-dir {data_dir})"))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    """Rewrite the account files from the registry and SIGHUP the Mosquitto that uses them."""
    data_dir = _data_dir(args)
    conf_dir = Path(args.out) if args.out else data_dir
    return reload_broker(_registry_path(args), data_dir, conf_dir, args.prefix)


def reload_broker(registry_path: Path, data_dir: Path, conf_dir: Path,
                  prefix: str | None) -> int:
    """`reload`'s work, for `add-lockers --reload` too: an exit code."""
    conf, acl = conf_dir / "mosquitto.conf", conf_dir / "acl"
    if not conf.is_file() or not acl.is_file():
        _err(f"no generated configuration in {conf_dir.resolve()}: start the broker with "
             "`locker-broker run` (or write it with `locker-broker config`) first, with the "
             "same --data-dir")
        return EXIT_USAGE
    prefix = prefix or prefix_of_acl(acl.read_text(encoding="utf-8")) or DEFAULT_PREFIX
    reg = Registry.load(registry_path)
    write_access_files(reg, conf_dir, prefix)
    print(f"Rewrote the passwd, passwd-console and acl files in {conf_dir.resolve()} "
          f"({len(reg.lockers())} lockers, {len(reg.consoles())} consoles).")
    pid = find_running_mosquitto(conf, data_dir / PID_NAME)
    if pid is None:
        _err(f"no running Mosquitto uses {conf.resolve()}: the files are ready for its next "
             "start (`locker-broker run`); an embedded demo broker reads the registry by itself")
        return EXIT_FAILED
    os.kill(pid, signal.SIGHUP)
    print(f"Sent SIGHUP to Mosquitto (pid {pid}): it rereads the accounts and ACLs now.")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    registry_path = _registry_path(args)
    reg = Registry.load(registry_path)  # fail early (exit 2) on a broken registry
    exe = None if args.embedded else find_mosquitto()
    if exe is not None:
        settings = _settings(args, data_dir)
        files = write_config(reg, settings, data_dir)
        if not reg.accounts:
            _err("the registry has no accounts yet: nobody can log in (see `add-locker`)")
        print(f"Starting Mosquitto ({exe}) on {settings.bind}:{settings.port} (lockers) and "
              f"{settings.console_listener_bind}:{settings.console_listener_port} (consoles) "
              f"with {files.conf}", flush=True)
        # Mosquitto handles SIGINT/SIGTERM (clean shutdown, saves persistence) and SIGHUP
        # (reloads passwd and ACL) itself, so it replaces this process.
        os.execv(exe, [exe, "-c", str(files.conf)])
    embedded = EmbeddedBroker(
        host=args.bind, port=args.port, registry_path=registry_path, prefix=args.prefix
    )
    reason = "--embedded given" if args.embedded and find_mosquitto() else NOT_INSTALLED
    print(embedded.describe(reason), flush=True)
    return asyncio.run(_serve_embedded(embedded))


async def _serve_embedded(embedded: EmbeddedBroker) -> int:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await embedded.start_async()
    except Exception as exc:
        _err(f"the embedded broker could not start on {embedded.host}:{embedded.port}: {exc}")
        return EXIT_FAILED
    print(f"Embedded broker listening on {embedded.host}:{embedded.port} (Ctrl-C stops it)",
          flush=True)
    try:
        await stop.wait()
    finally:
        await embedded.stop_async()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    print("Embedded broker stopped.", flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", default=argparse.SUPPRESS, metavar="FILE",
        help="fleet registry (default: $LOCKER_BROKER_REGISTRY or ./var/broker/registry.json)",
    )
    broker_opts = argparse.ArgumentParser(add_help=False)
    broker_opts.add_argument("--port", type=int, default=DEFAULT_PORT)
    broker_opts.add_argument("--bind", default=DEFAULT_BIND, help="listen address")
    broker_opts.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="generated files, persistence and pid file (default: $LOCKER_BROKER_DATA_DIR or "
             "./var/broker)",
    )
    broker_opts.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix")
    broker_opts.add_argument(
        "--user", default=None,
        help="user Mosquitto drops to when started as root (default: stay root when root)",
    )
    broker_opts.add_argument(
        "--console-port", type=int, default=None,
        help="the console accounts' listener (default: --port + 1)",
    )
    broker_opts.add_argument(
        "--console-bind", default=None,
        help="the console listener's address (default: --bind)",
    )
    broker_opts.add_argument(
        "--max-packet-size", type=int, default=DEFAULT_MAX_PACKET_SIZE, metavar="BYTES",
        help=f"largest MQTT packet accepted (default {DEFAULT_MAX_PACKET_SIZE}; 0: no limit)",
    )
    broker_opts.add_argument(
        "--max-queued-messages", type=int, default=DEFAULT_MAX_QUEUED_MESSAGES, metavar="N",
        help=f"QoS 1 messages queued per client (default {DEFAULT_MAX_QUEUED_MESSAGES})",
    )
    broker_opts.add_argument(
        "--max-queued-bytes", type=int, default=DEFAULT_MAX_QUEUED_BYTES, metavar="BYTES",
        help=f"payload bytes queued per client (default {DEFAULT_MAX_QUEUED_BYTES})",
    )
    broker_opts.add_argument(
        "--fleet-size", type=int, default=None, metavar="N",
        help="size the queue limits for N lockers connecting at once: at least N x "
             f"{PER_LOCKER_BURST} messages (default: the registry's locker accounts)",
    )

    parser = argparse.ArgumentParser(
        prog="locker-broker", parents=[common],
        description="Fleet broker: accounts, Mosquitto configuration, running the broker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("add-locker", parents=[common], help="create a locker account")
    p.add_argument("name", metavar="ID")
    p.add_argument("--rotate", action="store_true", help="issue a new password if it exists")
    p = sub.add_parser(
        "add-lockers", parents=[common], help="create many locker accounts at once",
        description="Locker accounts in one batch: every id is checked first (a bad name, a "
                    "repeat or an existing account refuses the whole batch, naming its line, and "
                    "nothing is written), the passwords are hashed on every core, and the "
                    "registry is written once. The new passwords are printed as CSV "
                    "(locker_id,password) on stdout, or into --out; progress on stderr.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--count", type=int, metavar="N", help="N lockers named PREFIX<number>")
    which.add_argument("--file", metavar="FILE",
                       help="one id per line ('-': stdin); blank lines and # comments skipped")
    p.add_argument("--prefix", default=None, help="with --count: the ids' prefix, e.g. L")
    p.add_argument("--start", type=int, default=1, help="with --count: the first number (1)")
    p.add_argument("--digits", type=int, default=0,
                   help="with --count: zero-pad the numbers to this width (0: no padding)")
    p.add_argument("--out", default=None, metavar="CSV",
                   help="write the passwords to this new file (mode 0600) instead of stdout")
    p.add_argument("--rotate", action="store_true",
                   help="issue new passwords for ids that exist instead of refusing the batch")
    p.add_argument("--reload", action="store_true",
                   help="then `locker-broker reload`: the running Mosquitto lets them in at once")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="with --reload: the data directory of `run` (default: "
                        "$LOCKER_BROKER_DATA_DIR or ./var/broker)")
    p = sub.add_parser("add-console", parents=[common], help="create a console account")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--rotate", action="store_true", help="issue a new password if it exists")
    p = sub.add_parser("remove", parents=[common], help="delete an account")
    p.add_argument("name", metavar="NAME")
    sub.add_parser("list", parents=[common], help="list accounts")
    p = sub.add_parser("config", parents=[common, broker_opts],
                       help="write mosquitto.conf, passwd, passwd-console and acl",
                       epilog=BROKER_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the four files here instead of the data directory")
    p = sub.add_parser("run", parents=[common, broker_opts],
                       help="run Mosquitto (or the embedded demo broker)",
                       epilog=BROKER_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedded", action="store_true",
                   help="use the embedded amqtt broker even if Mosquitto is installed")
    p = sub.add_parser(
        "reload", parents=[common],
        help="rewrite the account files from the registry and SIGHUP the running Mosquitto",
        description="After add-locker, add-console or remove: the running Mosquitto (found by "
                    "the pid file in the data directory) takes the new accounts at once.",
    )
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="the data directory of `run` (default: $LOCKER_BROKER_DATA_DIR or "
                        "./var/broker)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where `config --out` wrote the files, if not the data directory")
    p.add_argument("--prefix", default=None,
                   help="topic prefix (default: the one of the existing acl file)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its output into a closed pipe (`list | head`) ends quietly."""
    return run_quietly_on_closed_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        match args.command:
            case "add-locker":
                return cmd_add(args, "locker")
            case "add-lockers":
                return cmd_add_lockers(args)
            case "add-console":
                return cmd_add(args, "console")
            case "remove":
                return cmd_remove(args)
            case "list":
                return cmd_list(args)
            case "config":
                return cmd_config(args)
            case "run":
                return cmd_run(args)
            case "reload":
                return cmd_reload(args)
    except RegistryError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # stdout's reader left: run_quietly_on_closed_pipe ends quietly
    except OSError as exc:
        _err(f"{exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_FAILED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
