"""`locker-console`: the fleet console's one entry point, one subcommand per task.

Each subcommand registers itself with `_add_<name>(subparsers)` and sets `handler`, a function
taking the parsed arguments and returning the exit code. Exit codes: 0 success, 1 the operation
failed, 2 the request was unusable (bad arguments, refusing to overwrite, bad configuration).
Later subcommands (open, block, unblock, status, watch, publish-config) read `--config`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.signing import generate_private_key, public_key_b64
from fleet_console.keys import KEY_ID_RE, KeyFileError, write_private_key

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
