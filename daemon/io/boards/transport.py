"""One RS485 bus: a serial port shared by the boards wired to it (pyserial-asyncio).

RS485 is half duplex and every board answers only when asked, so the bus runs one request at a
time (an asyncio.Lock), leaves `frame_gap_ms` of silence between frames, drops stale input before
each request and frames a reply by silence: it ends after `quiet_gap_ms` without a byte, because
USB-RS485 adapters deliver replies in bursts (docs/lock-boards.md). A codec-supplied `complete`
test may end a reply early once it is a whole valid frame; the silence rule stays the fallback.

`port` is a device path or a pyserial URL such as `socket://host:port` (RS485-to-Ethernet
converters). A port that drops out is reopened on the next request. A request goes straight to a
device's descriptor when nothing is queued (a loop turn less per poll, on the idle-CPU path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

import serial
import serial_asyncio
from serial.urlhandler import protocol_socket

from daemon.config import BoardConfig

log = logging.getLogger(__name__)

#: Longest reply kept; a babbling line cannot grow the buffer without bound.
MAX_REPLY = 256


class BusError(Exception):
    """The serial port failed (unplugged adapter, dropped TCP link): nothing was exchanged."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        super().__init__(f"serial port {port!r}: {reason}")


class BoardPortError(BusError):
    """The serial port cannot be opened; the message names it (the daemon exits with code 2)."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(port, reason)
        self.args = (f"cannot open serial port {port!r}: {reason}",)

    def __str__(self) -> str:
        return self.args[0]


class _SocketSerial(protocol_socket.Serial):
    """pyserial's socket:// port without the 0.3 s sleep in close().

    pyserial-asyncio closes the port inside the event loop, so that sleep would stall every
    board and the daemon each time an RS485-to-Ethernet link drops or the bus is closed.
    """

    # pyserial's own (private, unstubbed) attribute, which close() below takes over.
    _socket: socket.socket | None

    def close(self) -> None:
        if self.is_open:
            if self._socket:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)
                self._socket.close()
                self._socket = None
            self.is_open = False


def _open_port(url: str, baudrate: int) -> serial.Serial | _SocketSerial:
    """Blocking open of a device path or pyserial URL (run in a thread)."""
    if url.startswith("socket://"):
        return _SocketSerial(url, baudrate=baudrate, timeout=0)
    return serial.serial_for_url(url, baudrate=baudrate, timeout=0)


class _Receiver(asyncio.Protocol):
    """Collects whatever the port delivers and wakes the one waiting transaction."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.lost: Exception | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if len(self.buffer) < 4 * MAX_REPLY:
            self.buffer += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        self.arrived.set()


class SerialBus:
    """A serial port shared by the boards on one RS485 line; one transaction at a time."""

    def __init__(
        self, port: str, baudrate: int, *, frame_gap_ms: int = 5, max_reply: int = MAX_REPLY
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.frame_gap_ms = frame_gap_ms
        self.max_reply = max_reply
        self._lock = asyncio.Lock()
        self._transport: asyncio.Transport | None = None
        self._receiver: _Receiver | None = None
        #: Monotonic time before which the line must stay quiet (frame gap, frame still on wire).
        self._free_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._receiver is not None and not self._receiver.closed

    def wire_seconds(self, nbytes: int) -> float:
        """Time `nbytes` take on the line: 8N1 is 10 bits per byte."""
        return nbytes * 10 / self.baudrate

    async def open(self) -> None:
        """Open the port; raise BoardPortError naming it when that is impossible."""
        if self.is_open:
            return
        try:
            port = await asyncio.to_thread(_open_port, self.port, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardPortError(self.port, str(exc) or type(exc).__name__) from exc
        with contextlib.suppress(serial.SerialException, OSError):
            port.reset_input_buffer()  # bytes left by a previous owner of the port
        receiver = _Receiver()
        transport, _ = await serial_asyncio.connection_for_serial(
            asyncio.get_running_loop(), lambda: receiver, port
        )
        self._transport, self._receiver = transport, receiver
        log.debug("opened %s at %d baud", self.port, self.baudrate)

    async def close(self) -> None:
        transport, receiver = self._transport, self._receiver
        self._transport = self._receiver = None
        if transport is not None and receiver is not None and not receiver.closed:
            transport.close()
            for _ in range(100):  # connection_lost runs a loop iteration or two later
                if receiver.closed:
                    break
                await asyncio.sleep(0)

    async def __aenter__(self) -> SerialBus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def transact(
        self,
        request: bytes,
        *,
        reply: bool,
        timeout_ms: int,
        quiet_gap_ms: int,
        complete: Callable[[bytes], bool] | None = None,
    ) -> bytes | None:
        """Send `request`; if `reply`, return the answer framed by silence, or None if none came.

        The first byte must come within `timeout_ms` of the request leaving the wire. Raises
        BusError when the port itself fails (the request may not have gone out).
        """
        async with self._lock:
            if not self.is_open:
                await self.open()
            transport, receiver = self._transport, self._receiver
            assert transport is not None and receiver is not None
            # Wait out the frame gap; either way let bytes already read by the loop land, then
            # drop them.
            await asyncio.sleep(max(0.0, self._free_at - time.monotonic()))
            with contextlib.suppress(serial.SerialException, OSError, AttributeError):
                transport.get_extra_info("serial").reset_input_buffer()
            if receiver.buffer:
                log.debug("%s: dropped %d stale bytes", self.port, len(receiver.buffer))
                receiver.buffer.clear()
            self._check(receiver)
            self._write(transport, request)
            await self._drain(transport, receiver)
            sent_at = time.monotonic() + self.wire_seconds(len(request))
            gap = self.frame_gap_ms / 1000
            if not reply:
                self._free_at = sent_at + gap
                return None
            try:
                return await self._read_reply(
                    receiver, sent_at + timeout_ms / 1000, quiet_gap_ms / 1000, complete
                )
            finally:
                self._free_at = time.monotonic() + gap

    async def _read_reply(
        self,
        receiver: _Receiver,
        first_byte_deadline: float,
        quiet: float,
        complete: Callable[[bytes], bool] | None,
    ) -> bytes | None:
        buffer = receiver.buffer
        while not buffer:
            self._check(receiver)
            if not await self._wait(receiver, first_byte_deadline - time.monotonic()):
                self._check(receiver)
                return None
        # A reply longer than max_reply bytes at this baud rate plus a quiet gap means a babbling
        # line: stop there.
        hard_deadline = time.monotonic() + self.wire_seconds(self.max_reply) + quiet
        seen = 0
        quiet_until = 0.0
        while True:
            now = time.monotonic()
            if len(buffer) != seen:
                seen = len(buffer)
                quiet_until = now + quiet
                if seen >= self.max_reply or (complete is not None and complete(bytes(buffer))):
                    break
            end = min(quiet_until, hard_deadline)
            if now >= end:
                break
            if not await self._wait(receiver, end - now) and receiver.closed:
                break
        data = bytes(buffer[: self.max_reply])
        buffer.clear()
        return data

    def _write(self, transport: asyncio.Transport, request: bytes) -> None:
        """Straight to the port's descriptor when nothing is queued: pyserial-asyncio would wait
        a loop turn (and two epoll changes) for a writability a few bytes on an idle line do not
        need. Whatever the port does not take goes the transport's way."""
        fd = getattr(transport.get_extra_info("serial"), "fd", None)
        if isinstance(fd, int) and not transport.get_write_buffer_size():
            try:
                request = request[os.write(fd, request):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:  # the adapter is gone: reopen on the next request
                transport.abort()
                self._transport = self._receiver = None
                raise BusError(self.port, f"write failed: {exc}") from exc
        if request:
            transport.write(request)

    async def _drain(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        """Return once the request is handed to the OS, so a caller knows it went out."""
        deadline = time.monotonic() + 1 + self.wire_seconds(self.max_reply)
        spins = 0
        while transport.get_write_buffer_size():
            self._check(receiver)
            if time.monotonic() > deadline:
                raise BusError(self.port, "write stalled")
            spins += 1
            await asyncio.sleep(0 if spins < 10 else 0.0005)

    @staticmethod
    async def _wait(receiver: _Receiver, seconds: float) -> bool:
        """Wait up to `seconds` for more input; False on timeout."""
        if seconds <= 0:
            return False
        receiver.arrived.clear()
        try:
            # asyncio.timeout, not wait_for: no extra Task per wait on the polling hot path.
            async with asyncio.timeout(seconds):
                await receiver.arrived.wait()
        except TimeoutError:
            return False
        return True

    def _check(self, receiver: _Receiver) -> None:
        if receiver.closed:
            reason = str(receiver.lost) if receiver.lost else "connection closed"
            self._transport = self._receiver = None
            raise BusError(self.port, f"lost: {reason}")


def make_buses(boards: Iterable[BoardConfig]) -> dict[str, SerialBus]:
    """One (unopened) bus per distinct port; boards sharing a port must share its baud rate.

    Raises BoardPortError when they do not.
    """
    grouped: dict[str, list[BoardConfig]] = {}
    for board in boards:
        grouped.setdefault(board.port, []).append(board)
    buses = {}
    for port, members in grouped.items():
        rates = {b.effective_baudrate for b in members}
        if len(rates) > 1:
            detail = ", ".join(f"{b.name}={b.effective_baudrate}" for b in members)
            raise BoardPortError(port, f"its boards disagree on the baud rate ({detail})")
        gap = max(b.frame_gap_ms for b in members)
        buses[port] = SerialBus(port, rates.pop(), frame_gap_ms=gap)
    return buses


async def open_buses(boards: Iterable[BoardConfig]) -> dict[str, SerialBus]:
    """Open one bus per port; on any failure close those already open and raise BoardPortError."""
    buses = make_buses(boards)
    opened: list[SerialBus] = []
    try:
        for bus in buses.values():
            await bus.open()
            opened.append(bus)
    except BaseException:
        for bus in opened:
            await bus.close()
        raise
    return buses
