"""A lock board as the daemon sees it: start, open a lock, poll the doors, report health.

Boards whose codec has held outputs (Modbus relay boards) can also hold a channel on, e.g. the
relay that powers a cell's phone-charging socket: `set_output(channel, on)`.

The driver is the I/O shell around a sans-I/O codec and a shared SerialBus. It never resends an
unlock (docs/lock-boards.md): whether a door opened is for the cell state machine to learn from the
next polls. Counting failures is the driver's job; deciding that a board is offline after N of
them is the state machine's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from daemon.config import BoardConfig
from daemon.io.boards.codec import BoardCodec, FrameError, LockReading
from daemon.io.boards.kerong_cu16 import Cu16Codec
from daemon.io.boards.kerong_cu48 import Cu48Codec
from daemon.io.boards.modbus_relay import ModbusRelayCodec
from daemon.io.boards.transport import BusError, SerialBus

log = logging.getLogger(__name__)


@runtime_checkable
class HeldOutputCodec(Protocol):
    """The capability of a codec whose board can hold a channel on (Modbus relay boards)."""

    #: Channels 1..outputs can be held.
    outputs: int

    def output_request(self, channel: int, on: bool) -> bytes: ...

    def check_output_reply(self, channel: int, on: bool, frame: bytes) -> None:
        """Raise FrameError unless `frame` confirms `output_request(channel, on)`."""
        ...


class OutputUnsupportedError(ValueError):
    """The board's protocol has no held outputs (Kerong boards only pulse their locks)."""


class OutputError(Exception):
    """The board did not confirm a held-output write: the relay's state is not known.

    The write is idempotent: sending it again is safe.
    """


@dataclass
class BoardHealth:
    """How a board has answered lately."""

    #: Epoch milliseconds of the last valid status reply (None: never).
    last_ok_at: int | None = None
    #: time.monotonic() of the same moment, for intervals immune to clock steps.
    last_ok_monotonic: float | None = None
    #: Polls in a row without a valid reply; 0 after any good one.
    consecutive_failures: int = 0
    polls: int = 0
    failures: int = 0
    #: Why the last failed poll failed (timeout, bad frame, port error).
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures for status messages and the control socket."""
        return dataclasses.asdict(self)


def make_codec(board: BoardConfig) -> BoardCodec:
    """The codec for a configured board; ValueError says which board and what is wrong."""
    try:
        if board.protocol == "kerong-cu16":
            return Cu16Codec(
                board.address, door_closed_bit=board.door_closed_bit, pulse_ms=board.pulse_ms
            )
        if board.protocol == "kerong-cu48":
            return Cu48Codec(board.address, door_closed_bit=board.door_closed_bit)
        if board.protocol == "modbus-relay":
            return ModbusRelayCodec(
                board.address, door_closed_bit=board.door_closed_bit, pulse_ms=board.pulse_ms
            )
    except ValueError as exc:
        raise ValueError(f"board {board.name!r}: {exc}") from exc
    raise ValueError(f"board {board.name!r}: unknown protocol {board.protocol!r}")


class BoardDriver:
    """One board at one address on a shared bus."""

    def __init__(
        self,
        config: BoardConfig,
        bus: SerialBus,
        codec: BoardCodec,
        *,
        clock_ms: Callable[[], int] | None = None,
        early_complete: bool = True,
    ) -> None:
        self.config = config
        self.bus = bus
        self.codec = codec
        self.health = BoardHealth()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        #: End a status reply as soon as it decodes instead of waiting for quiet_gap_ms.
        self.early_complete = early_complete
        #: Start-up frames went unanswered: send them again once the board answers a poll.
        self._start_pending = False
        self._last_reply: bytes | None = None
        self._last_readings: dict[int, LockReading] | None = None
        #: Held outputs as last asked for (channel -> on); re-applied after the start-up frames.
        self._outputs: dict[int, bool] = {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def locks(self) -> int:
        return self.codec.locks

    async def _exchange(
        self, request: bytes, complete: Callable[[bytes], bool] | None
    ) -> bytes | None:
        return await self.bus.transact(
            request,
            reply=True,
            timeout_ms=self.config.timeout_ms,
            quiet_gap_ms=self.config.quiet_gap_ms,
            complete=complete if self.early_complete else None,
        )

    async def start(self) -> bool:
        """Send the start-up frames (Kerong CU16 pulse length, Modbus all relays off).

        True when the board answered each; otherwise they are sent again after the next good
        poll. Raises BusError only if the port itself fails.
        """
        answered = True
        for request in self.codec.startup_requests():
            reply = await self._exchange(request, None)
            if not reply:
                answered = False
                log.warning("board %s: no answer to start-up frame %s", self.name, request.hex(" "))
        self._start_pending = not answered
        # The start-up "all relays off" also switched off the outputs held on: hold them again
        # (a board that did not answer gets start() again, and these with it, after a good poll).
        for channel in [c for c, on in self._outputs.items() if on and answered]:
            try:
                await self._write_output(channel, True)
            except OutputError as exc:
                log.warning("board %s: %s", self.name, exc)
        return answered

    async def open(self, lock: int) -> bool | None:
        """Send one unlock frame for `lock` (1-based); never repeated here.

        Returns None when the protocol has no answer to an unlock, else whether a valid answer
        came; that answer is advisory, only the door sensor confirms. Raises BusError when the
        frame could not be sent, ValueError for a lock the board does not have.
        """
        request = self.codec.unlock_request(lock)
        log.info("board %s: unlock lock %d", self.name, lock)
        if not self.codec.expects_unlock_reply:
            await self.bus.transact(
                request,
                reply=False,
                timeout_ms=self.config.timeout_ms,
                quiet_gap_ms=self.config.quiet_gap_ms,
            )
            return None

        def valid(data: bytes) -> bool:
            try:
                self.codec.check_unlock_reply(lock, data)
            except FrameError:
                return False
            return True

        reply = await self._exchange(request, valid)
        ok = reply is not None and valid(reply)
        if not ok:
            log.info("board %s: no valid answer to unlock %d (advisory)", self.name, lock)
        return ok

    @property
    def outputs(self) -> dict[int, bool]:
        """The held outputs as last asked for by set_output (channel -> on)."""
        return dict(self._outputs)

    async def set_output(self, channel: int, on: bool) -> None:
        """Hold output `channel` (1-based, like locks) on, or switch it off, and check the answer.

        For a relay that powers a cell's charging socket, never for a lock's channel. The state
        asked for is remembered and held again whenever the start-up frames are re-sent. Raises
        OutputUnsupportedError for a protocol without held outputs (Kerong boards), ValueError
        for a channel the board does not have, OutputError when the board did not confirm,
        BusError when the frame could not be sent.
        """
        codec = self.codec
        if not isinstance(codec, HeldOutputCodec):
            raise OutputUnsupportedError(
                f"board {self.name!r}: {codec.protocol} boards have no held outputs "
                f"(a charging socket needs a modbus-relay board channel)"
            )
        codec.output_request(channel, on)  # ValueError for a channel the board does not have
        self._outputs[channel] = on
        log.info("board %s: output %d %s", self.name, channel, "on" if on else "off")
        await self._write_output(channel, on)

    async def _write_output(self, channel: int, on: bool) -> None:
        codec = self.codec
        assert isinstance(codec, HeldOutputCodec)

        def valid(data: bytes) -> bool:
            try:
                codec.check_output_reply(channel, on, data)
            except FrameError:
                return False
            return True

        reply = await self._exchange(codec.output_request(channel, on), valid)
        if reply is None:
            raise OutputError(
                f"board {self.name!r}: no answer to output {channel} "
                f"{'on' if on else 'off'} within {self.config.timeout_ms} ms"
            )
        try:
            codec.check_output_reply(channel, on, reply)
        except FrameError as exc:
            raise OutputError(
                f"board {self.name!r}: bad answer to output {channel} "
                f"{'on' if on else 'off'}: {exc}"
            ) from None

    async def poll(self) -> dict[int, LockReading] | None:
        """Read every lock's door (and item) sensor; None on no reply, a bad frame or port error."""
        self.health.polls += 1
        try:
            reply = await self._exchange(self.codec.status_request(), self._decodes)
        except BusError as exc:
            self._failed(str(exc))
            return None
        if reply is None:
            self._failed(f"no reply within {self.config.timeout_ms} ms")
            return None
        if reply == self._last_reply and self._last_readings is not None:
            readings = self._last_readings  # decoding is pure: the same frame, the same doors
        else:
            try:
                readings = self.codec.decode_status(reply)
            except FrameError as exc:
                self._failed(f"bad reply: {exc}")
                return None
            self._last_reply, self._last_readings = reply, readings
        if self.health.consecutive_failures:
            log.info(
                "board %s answers again after %d failed polls",
                self.name,
                self.health.consecutive_failures,
            )
        self.health.consecutive_failures = 0
        self.health.last_error = None
        self.health.last_ok_at = self._clock_ms()
        self.health.last_ok_monotonic = time.monotonic()
        if self._start_pending:
            try:
                await self.start()
            except BusError as exc:
                log.warning("board %s: start-up frames failed: %s", self.name, exc)
        return readings

    def _decodes(self, data: bytes) -> bool:
        """Whether `data` is a whole valid status reply (decoded once, kept for poll())."""
        if data == self._last_reply:
            return True
        try:
            readings = self.codec.decode_status(data)
        except FrameError:
            return False
        self._last_reply, self._last_readings = data, readings
        return True

    def _failed(self, reason: str) -> None:
        """Count a failed poll (the caller then answers None); log only the first in a row."""
        self.health.failures += 1
        self.health.consecutive_failures += 1
        self.health.last_error = reason
        if self.health.consecutive_failures == 1:
            log.warning("board %s: poll failed: %s", self.name, reason)


def make_driver(
    board: BoardConfig,
    bus: SerialBus,
    *,
    clock_ms: Callable[[], int] | None = None,
    early_complete: bool = True,
) -> BoardDriver:
    """The driver of a configured board on its (shared) bus, with the codec of its protocol."""
    return BoardDriver(
        board, bus, make_codec(board), clock_ms=clock_ms, early_complete=early_complete
    )
