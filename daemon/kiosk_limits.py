"""What one kiosk client may cost lockerd: connections, time to send a request, body size.

The kiosk is the only part of lockerd a stranger can reach, and the boards, the store, the
control socket and the fleet link need descriptors and memory whatever the stranger does. So:

- at most `max_connections` connections at once; one beyond it is closed as soon as it is
  accepted, before any state is kept for it (and at most `backlog` are accepted per turn of
  the event loop, so a burst cannot take the descriptors the rest needs even for a moment);
- a connection must deliver a request's headers within `header_timeout_s` of opening or of
  starting the request (uvicorn times out only idle keep-alive connections), and its body
  within `body_timeout_s`;
- a body is read up to `max_body_bytes`, counted as it arrives (a chunked body has no length to
  check first): 413 beyond it, and the rest is never read;
- refusals (and requests that are not HTTP) are counted and logged as one summary line per
  `report_s`, never a line per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import Callable
from typing import Any

from daemon.journal import Journal

#: Descriptors kept for everything but the kiosk (boards, store, control socket, MQTT, SMS).
RESERVED_FDS = 256
#: At most one summary line of refused kiosk clients per this many seconds.
REPORT_S = 60.0

ASGIApp = Callable[..., Any]
#: Builds the refusal sent to a client: (scope, error code, HTTP status, params) -> ASGI app.
Refusal = Callable[[dict[str, Any], str, int, dict[str, Any]], ASGIApp]


def kiosk_connection_cap(wanted: int, fd_limit: int) -> int:
    """The connection cap that leaves RESERVED_FDS descriptors to the rest of lockerd (half
    of what is left: accepted connections wait a turn of the event loop to be closed)."""
    return max(1, min(wanted, (fd_limit - RESERVED_FDS) // 2))


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (a no-op where they are equal)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ClientGate:
    """Counts the kiosk's open connections and what was refused; reports in summary lines."""

    def __init__(self, max_connections: int, header_timeout_s: float, journal: Journal,
                 clock: Callable[[], float] = time.monotonic, report_s: float = REPORT_S) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.journal = journal
        self.clock = clock
        self.report_s = report_s
        self.open = 0
        self.counts = {"over_cap": 0, "header_timeout": 0, "bad_request": 0,
                       "body_too_large": 0, "body_timeout": 0}
        self._last_report = -report_s

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            self.refused("over_cap")
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def refused(self, why: str) -> None:
        self.counts[why] += 1
        if self.clock() - self._last_report >= self.report_s:
            self.report()

    def report(self) -> None:
        """One line with what was refused since the last one (nothing if nothing was)."""
        self._last_report = self.clock()
        if any(self.counts.values()):
            self.journal.line("kiosk_clients_refused", level="warning", open=self.open,
                              max_connections=self.max_connections, **self.counts)
            self.counts = dict.fromkeys(self.counts, 0)

    async def report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_s)
            self.report()


def gated_protocol(gate: ClientGate) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the gate's connection cap and header deadline."""
    from uvicorn.protocols.http.h11_impl import H11Protocol  # only where a kiosk is served

    class GatedH11Protocol(H11Protocol):
        _admitted = False
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if not gate.admit():
                transport.abort()  # closed at once: no state, no descriptor kept
                return
            self._admitted = True
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            self._admitted = False
            gate.release()
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # between requests: headers due
                self._arm()
            super().data_received(data)
            if self.cycle is not cycle:  # a request's headers are in: the app has it now
                self._disarm()

        def send_400_response(self, msg: str) -> None:
            gate.refused("bad_request")  # counted, not logged one line each by uvicorn
            super().send_400_response(msg)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(gate.header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                gate.refused("header_timeout")
                self.transport.close()

    return GatedH11Protocol


class BodyLimit:
    """ASGI middleware: the whole body is read here, within its size and time limits, before
    the app sees the request; memory stays bounded by the limit whatever the client sends."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, gate: ClientGate,
                 refusal: Refusal) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.gate = gate
        self.refusal = refusal

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send, "body_too_large", 413)
            return
        pieces: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client went away: nothing to answer
                    piece = message.get("body", b"")
                    size += len(piece)
                    if size > self.max_bytes:
                        await self._refuse(scope, receive, send, "body_too_large", 413)
                        return
                    pieces.append(piece)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, receive, send, "body_timeout", 408)
            return
        body = b"".join(pieces)
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body only a disconnect can come

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Callable, send: Callable,
                      code: str, status: int) -> None:
        self.gate.refused(code)
        params = {"limit": self.max_bytes} if status == 413 else {
            "seconds": math.ceil(self.timeout_s)}
        await self.refusal(scope, code, status, params)(scope, receive, send)
