"""`locker-sim`: a lock-board simulator on a pseudo-terminal, for the demo and by-hand tests.

    locker-sim --protocol kerong-cu16 --boards 2 --locks 16 [--auto-close-ms N] [--control PATH]

Prints the pty path (`PTY /dev/pts/N`, the line scripts parse), then takes commands (see `help`)
on stdin and, with --control, on a Unix socket (one command per line, answered `ok`/`error ...`).
Without stdin (EOF, a demo script) it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socketserver
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

from board_sim.boards import BOARD_TYPES
from board_sim.control import Quit, execute
from board_sim.simulator import PtySimulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="locker-sim", description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=sorted(BOARD_TYPES), default="kerong-cu16")
    p.add_argument("--boards", type=int, default=1, help="boards on the bus (default 1)")
    p.add_argument("--locks", type=int, default=None, help="locks per board (default: all)")
    p.add_argument(
        "--addresses",
        type=lambda s: [int(a) for a in s.split(",")],
        default=None,
        help="board addresses, comma-separated (default 0,1,.. or 1,2,.. for Modbus)",
    )
    p.add_argument("--door-closed-bit", type=int, choices=(0, 1), default=1)
    p.add_argument(
        "--auto-close-ms",
        type=int,
        default=None,
        help="an opened door closes by itself after this delay",
    )
    p.add_argument("--control", type=Path, default=None, help="Unix socket for commands")
    return p.parse_args(argv)


class _Console:
    """Serialises what the threads print."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            print(text, file=self._out, flush=True)


def _serve_stdin(sim: PtySimulator, console: _Console, stop: threading.Event) -> None:
    stdin = sys.stdin
    if stdin is None:
        return
    with contextlib.suppress(OSError, ValueError):
        for line in stdin:
            try:
                console.say(execute(sim, line))
            except Quit:
                console.say("ok")
                stop.set()
                return
    # EOF: keep simulating until a signal or a `quit` on the control socket.


def _control_server(
    path: Path, sim: PtySimulator, stop: threading.Event
) -> socketserver.BaseServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                try:
                    answer = execute(sim, raw.decode("utf-8", "replace"))
                except Quit:
                    self.wfile.write(b"ok\n")
                    stop.set()
                    return
                if answer:
                    self.wfile.write(answer.encode() + b"\n")

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sim control", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sim = PtySimulator(
            args.protocol,
            args.boards,
            args.locks,
            args.addresses,
            door_closed_bit=args.door_closed_bit,
            auto_close_ms=args.auto_close_ms,
        ).start()
    except (ValueError, OSError) as exc:
        print(f"locker-sim: {exc}", file=sys.stderr)
        return 2
    console = _Console(sys.stdout)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    try:
        if args.control is not None:
            server = _control_server(args.control, sim, stop)
        addresses = ", ".join(str(a) for a in sim.addresses)
        console.say(
            f"locker-sim: {args.protocol}, {args.boards} board(s) at address(es) "
            f"{addresses}, {sim.locks} locks each, pid {os.getpid()}"
        )
        console.say(f"bus 0: {sim.path}")
        if args.control is not None:
            console.say(f"CONTROL {args.control}")
        console.say(f"PTY {sim.path}")
        threading.Thread(target=_serve_stdin, args=(sim, console, stop), daemon=True).start()
        while not stop.wait(0.5):
            pass
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            with contextlib.suppress(FileNotFoundError):
                args.control.unlink()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
