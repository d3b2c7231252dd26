"""The local operator socket: `lockerd ctl` talks to a running daemon over a Unix socket.

One JSON object per line each way. Used by technicians at the locker, by the demo and by tests;
it is local only (file permissions guard it), so it carries no signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

#: Operations a ctl client may ask for; cell operations take {"cell": N}.
CELL_OPS = ("deposit", "pickup", "open", "temporary", "block", "unblock")
#: Views: cells (state, doors, backlog) and payments (the card ledger, unsettled first).
VIEW_OPS = ("cells", "payments")
OPS = (*CELL_OPS, *VIEW_OPS)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached or answered nonsense."""


class ControlSocketInUse(OSError):
    """Another live process listens on the control socket's path: it is not ours to remove."""


class ControlServer:
    """A listening control socket that removes its path on close only while the path is still
    the socket it bound: a process never deletes a socket another process listens on."""

    def __init__(self, server: asyncio.AbstractServer, path: Path) -> None:
        self.server = server
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                self.path.unlink()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


def _remove_stale(path: Path) -> None:
    """Remove a socket file left by a dead process; refuse one a live process answers on."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # nobody listens: a crashed daemon's leftover
    except OSError:
        pass  # not a socket, or no access: binding reports it with its own error
    else:
        raise ControlSocketInUse(errno.EADDRINUSE, f"another process listens on {path}")
    finally:
        probe.close()


async def serve_control(path: Path, handler: Handler) -> ControlServer:
    """Listen on `path`; each request line is answered by `handler`; bad lines get an error.

    Raises ControlSocketInUse when a live process already listens there."""
    _remove_stale(path)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                except ValueError as exc:
                    reply: dict[str, Any] = {"ok": False, "error": "malformed", "message": str(exc)}
                else:
                    reply = await handler(request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=1 << 20)
    os.chmod(path, 0o660)
    return ControlServer(server, path)


def request(path: Path, message: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply (blocking client for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"lockerd is not running (no control socket at {path}: {exc.strerror})"
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied on the control socket {path}: run as the daemon's user "
                "or a member of its group (the socket is 0660 in a private data_dir)"
            ) from None
        sock.sendall(json.dumps(message).encode() + b"\n")
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            raise ControlError(f"lockerd did not answer within {timeout:.0f} s") from None
    try:
        return json.loads(buf)
    except ValueError:
        raise ControlError("lockerd closed the connection without an answer") from None
