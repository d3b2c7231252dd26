"""`lockerd payment-sim`: the payment simulator's switches from the command line, so that a demo
or a test by hand needs no `nc` (which a fresh machine lacks).

It speaks the simulator's control protocol (docs/storage.md "The payment simulator"): one JSON
object a line on `[payment] control_socket`, answered by one JSON line.

    lockerd payment-sim --config FILE next decline timeout   the next charges' outcomes, in order
    lockerd payment-sim --config FILE offline on|off          the terminal unreachable, or back
    lockerd payment-sim --config FILE delay 2                 seconds before each answer
    lockerd payment-sim --config FILE hold-after-approve 5    approve, then wait before answering
    lockerd payment-sim --config FILE operations              what the simulated bank recorded
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.config import LockerConfig
from daemon.control import ControlError, request

OUTCOMES = ("approve", "decline", "timeout", "cancel")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `payment-sim` subcommand on lockerd's parser."""
    sim = sub.add_parser("payment-sim", parents=[common],
                         help="switch the simulated card terminal ([payment] control_socket)")
    ops = sim.add_subparsers(dest="sim_op", required=True)
    nxt = ops.add_parser("next", help="outcomes of the next charges, in order")
    nxt.add_argument("outcomes", nargs="*", choices=OUTCOMES, metavar="OUTCOME",
                     help=f"one of {', '.join(OUTCOMES)}; none clears the queue")
    off = ops.add_parser("offline", help="make the terminal unreachable (on) or back (off)")
    off.add_argument("state", choices=("on", "off"))
    delay = ops.add_parser("delay", help="seconds before the terminal answers anything")
    delay.add_argument("seconds", type=float)
    hold = ops.add_parser("hold-after-approve",
                          help="seconds between approving a charge and answering it")
    hold.add_argument("seconds", type=float)
    ops.add_parser("operations", help="print what the simulated bank recorded")
    for p in (sim, nxt, off, delay, hold):
        p.add_argument("--json", action="store_true", help="print the simulator's JSON answer")


def message(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol's request for the parsed command line."""
    op = args.sim_op
    if op == "next":
        return {"op": "next", "outcomes": list(args.outcomes)}
    if op == "offline":
        return {"op": "offline", "on": args.state == "on"}
    if op in ("delay", "hold-after-approve"):
        return {"op": op.replace("-", "_"), "s": args.seconds}
    return {"op": "operations"}


def run(config: LockerConfig, args: argparse.Namespace) -> int:
    """0 done, 1 refused by the simulator, 2 no simulator socket configured or reachable."""
    socket = config.payment.control_socket
    if config.payment.adapter != "simulator" or socket is None:
        print("lockerd payment-sim: this locker has no payment simulator switches (set [payment] "
              'adapter = "simulator" and control_socket = PATH)', file=sys.stderr)
        return 2
    try:
        reply = request(socket, message(args))
    except ControlError as exc:
        print(f"lockerd payment-sim: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        print(f"refused: {reply.get('error')}: {reply.get('message', '')}",
              file=sys.stderr)
        return 1
    elif args.sim_op == "operations":
        for op in reply["operations"]:
            print(f"{op['operation_id']:<40} {op['amount']:>8} {op['currency']} "
                  f"{op['status']:<9} charges {op['charges']} voids {op['voids']} "
                  f"refunds {op['refunds']} attempts {op['attempts']}")
        if not reply["operations"]:
            print("(no operations)")
    else:
        queued = " ".join(reply["outcomes"]) or "(none: approve)"
        print(f"next outcomes: {queued}; offline: {'on' if reply['offline'] else 'off'}")
    return 0 if reply.get("ok") else 1
