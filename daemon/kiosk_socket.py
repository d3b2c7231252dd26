"""The kiosk's listening socket: handed over by systemd (socket activation) or bound at start.

Why it matters: the screen sends PINs to this port. A port lockerd binds itself is free before
lockerd starts and while it restarts, and any local user may listen on it first and receive what
the screen sends. With socket activation systemd binds it at boot, as root, and holds it across
restarts of lockerd, which serves on the socket it is handed (sd_listen_fds: LISTEN_PID is our
pid, LISTEN_FDS >= 1, the socket is fd 3). Without it, the port is bound before the daemon opens
its store, boards or fleet link, and a port that cannot be bound stops the start naming it.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import MutableMapping

#: The first descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Connections waiting to be accepted, and accepted per turn of the event loop: small, so that
#: a burst of clients never holds many descriptors before the connection cap closes them.
ACCEPT_BACKLOG = 64


class KioskPortError(Exception):
    """The kiosk's port cannot be listened on (in use, not allowed, no such address)."""


def inherited_socket(environ: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The listening socket systemd passed to this process, or None if it passed none."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)  # meant for this process only, not for what it starts
    if count < 1:
        return None
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)
    except OSError as exc:
        raise KioskPortError(f"kiosk socket from systemd (fd {LISTEN_FDS_START}): {exc}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_ACCEPTCONN):
        sock.detach()
        raise KioskPortError(f"kiosk socket from systemd (fd {LISTEN_FDS_START}) is not a "
                             "listening stream socket (ListenStream= in the .socket unit)")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def bind_kiosk(host: str, port: int, backlog: int) -> socket.socket:
    """Listen on host:port, or raise KioskPortError naming it and why."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise KioskPortError(f"kiosk address {where}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # Rebinding over TIME_WAIT connections of the previous run only: on Linux it does not
        # let two sockets listen on one port (SO_REUSEPORT, which would, is never set).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise KioskPortError(f"kiosk port {where} {_why(exc)}") from None
    sock.setblocking(False)
    return sock


def kiosk_listener(host: str, port: int, backlog: int) -> tuple[socket.socket, bool]:
    """The socket to serve the kiosk on, and whether systemd handed it over."""
    inherited = inherited_socket()
    if inherited is not None:
        inherited.listen(backlog)  # the kiosk's own bound on connections waiting to be accepted
        return inherited, True
    return bind_kiosk(host, port, backlog), False


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "is in use (another program listens on it)"
    if exc.errno == errno.EACCES:
        return ("is not allowed to this user (a port below 1024 needs CAP_NET_BIND_SERVICE, "
                "or let systemd bind it: config/systemd/lockerd.socket)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "is not an address of this computer"
    return f"cannot be listened on: {exc.strerror or exc}"
