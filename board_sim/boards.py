"""Pure models of the lock boards, seen from the board's side of the wire.

A model takes one request frame (already cut out of the byte stream and checksum-checked) and
returns the board's answer, with the locks that frame unlocked. No I/O and no clock: time is
passed in (`now`, monotonic seconds). Door state per lock: open or closed; a stuck lock ignores
unlocks; an item flag feeds the item sensors where the board has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from daemon.io.boards import kerong_cu16 as cu16
from daemon.io.boards import kerong_cu48 as cu48
from daemon.io.boards import modbus_relay as mb
from daemon.io.boards.checksums import crc16_modbus, sum8, with_crc16


@dataclass
class SimLock:
    """One lock and its door as the simulated board senses it."""

    open: bool = False
    stuck: bool = False
    item: bool = False
    #: Monotonic time the door last opened (for auto-close).
    opened_at: float = 0.0


@dataclass(frozen=True)
class Handled:
    """A board's answer to one request and the locks (1-based) that request unlocked."""

    reply: bytes | None
    unlocked: tuple[int, ...] = ()


class SimBoard:
    """Common state of a simulated board; subclasses speak one protocol."""

    protocol: ClassVar[str]
    max_locks: ClassVar[int]
    has_items: ClassVar[bool] = False

    def __init__(self, address: int, locks: int | None = None, *, door_closed_bit: int = 1) -> None:
        locks = self.max_locks if locks is None else locks
        if not 1 <= locks <= self.max_locks:
            raise ValueError(f"a {self.protocol} board has 1..{self.max_locks} locks, got {locks}")
        self.address = address
        self.locks = locks
        self.door_closed_bit = door_closed_bit
        self.silent = False
        self.pulse_ms: int | None = None
        #: Locks beyond `locks` exist on the board but are not modelled: they read closed.
        self.state = [SimLock() for _ in range(self.max_locks)]

    def lock(self, n: int) -> SimLock:
        if not 1 <= n <= self.locks:
            raise ValueError(f"lock must be 1..{self.locks}, got {n}")
        return self.state[n - 1]

    def unlock(self, n: int, now: float) -> bool:
        """What a pulse does: a non-stuck lock releases and its door springs open."""
        if n > self.locks:
            return False
        lock = self.state[n - 1]
        if lock.stuck:
            return False
        if not lock.open:
            lock.open, lock.opened_at = True, now
        return True

    def closed_bits(self, count: int) -> bytes:
        """Door sensor bits of locks 1..count, LSB first, in the configured polarity."""
        return self._pack(
            [
                self.door_closed_bit if not lock.open else 1 - self.door_closed_bit
                for lock in self.state[:count]
            ]
        )

    def item_bits(self, count: int) -> bytes:
        return self._pack([int(lock.item) for lock in self.state[:count]])

    @staticmethod
    def _pack(bits: list[int]) -> bytes:
        out = bytearray((len(bits) + 7) // 8)
        for i, b in enumerate(bits):
            out[i // 8] |= b << (i % 8)
        return bytes(out)

    # --- the protocol side, one implementation per board type ---

    @classmethod
    def request_length(cls, buf: bytes) -> int | None:
        """Length of the request starting at buf[0]; 0 if none can start there; None: need more."""
        raise NotImplementedError

    @classmethod
    def request_valid(cls, frame: bytes) -> bool:
        raise NotImplementedError

    def addressed(self, frame: bytes) -> bool:
        raise NotImplementedError

    def handle(self, frame: bytes, now: float) -> Handled:
        raise NotImplementedError


class Cu16Board(SimBoard):
    """KR-CU16: answers 0x30 status and 0x37 pulse; 0x31/0x33 unlocks get no answer."""

    protocol = "kerong-cu16"
    max_locks = cu16.LOCKS
    has_items = True

    @classmethod
    def request_length(cls, buf: bytes) -> int | None:
        if buf[0] != cu16.STX:
            return 0
        if len(buf) < 3:
            return None
        return 7 if buf[2] == cu16.CMD_PULSE else 5

    @classmethod
    def request_valid(cls, frame: bytes) -> bool:
        return frame[-2] == cu16.ETX and frame[-1] == sum8(frame[:-1])

    def addressed(self, frame: bytes) -> bool:
        return frame[1] >> 4 == self.address

    def handle(self, frame: bytes, now: float) -> Handled:
        cmd, board = frame[2], self.address << 4
        if cmd == cu16.CMD_STATUS:
            data = self.closed_bits(16) + self.item_bits(16)
            return Handled(cu16.kerong_frame(board, cu16.REPLY_STATUS, *data))
        if cmd == cu16.CMD_UNLOCK:
            lock = (frame[1] & 0x0F) + 1
            self.unlock(lock, now)
            return Handled(None, (lock,))
        if cmd == cu16.CMD_UNLOCK_ALL:
            for n in range(1, self.locks + 1):
                self.unlock(n, now)
            return Handled(None, tuple(range(1, self.locks + 1)))
        if cmd == cu16.CMD_PULSE:
            self.pulse_ms = int.from_bytes(frame[3:5], "big") * 10
            return Handled(cu16.kerong_frame(board, cu16.REPLY_PULSE))
        return Handled(None)


class Cu48Board(SimBoard):
    """CU48: answers 0x60 status (locks in D0..D5, items in D6..D11) and 0x61 unlock."""

    protocol = "kerong-cu48"
    max_locks = cu48.LOCKS
    has_items = True

    @classmethod
    def request_length(cls, buf: bytes) -> int | None:
        return 6 if buf[0] == cu48.STX else 0

    @classmethod
    def request_valid(cls, frame: bytes) -> bool:
        return frame[4] == cu48.ETX and frame[5] == sum8(frame[:5])

    def addressed(self, frame: bytes) -> bool:
        return frame[1] == self.address

    def handle(self, frame: bytes, now: float) -> Handled:
        lock0, cmd = frame[2], frame[3]
        if cmd == cu48.CMD_STATUS:
            data = self.closed_bits(48) + self.item_bits(48)
            body = bytes((cu48.STX, self.address, 0, cu48.REPLY, *data, cu48.ETX))
            return Handled(body + bytes((sum8(body),)))
        if cmd == cu48.CMD_UNLOCK and lock0 < cu48.LOCKS:
            self.unlock(lock0 + 1, now)
            return Handled(cu48.cu48_unlock_reply(self.address, lock0), (lock0 + 1,))
        return Handled(None)


class ModbusRelayBoard(SimBoard):
    """Waveshare-style relay board: FC01 relays, FC02 inputs, FC05 relay/pulse writes (echoed).

    `relays` holds the state of the held relays (FC05 0xFF00/0x0000 on coil channel-1, "all off"
    on 0x00FF) and is what FC01 reads back; a board-timed pulse does not change it.
    """

    protocol = "modbus-relay"
    max_locks = mb.CHANNELS

    def __init__(self, address: int, locks: int | None = None, *, door_closed_bit: int = 1) -> None:
        super().__init__(address, locks, door_closed_bit=door_closed_bit)
        self.relays = [False] * mb.CHANNELS

    @classmethod
    def request_length(cls, buf: bytes) -> int | None:
        return 8

    @classmethod
    def request_valid(cls, frame: bytes) -> bool:
        return crc16_modbus(frame[:-2]).to_bytes(2, "little") == frame[-2:]

    def addressed(self, frame: bytes) -> bool:
        return frame[0] == self.address

    def _exception(self, function: int, code: int) -> Handled:
        return Handled(with_crc16(bytes((self.address, function | 0x80, code))))

    def handle(self, frame: bytes, now: float) -> Handled:
        function = frame[1]
        register = int.from_bytes(frame[2:4], "big")
        value = int.from_bytes(frame[4:6], "big")
        if function in (mb.FC_READ_COILS, mb.FC_READ_INPUTS):
            if value < 1 or register + value > mb.CHANNELS:
                return self._exception(function, 2)
            if function == mb.FC_READ_INPUTS:
                bits = self.closed_bits(mb.CHANNELS)[0]
            else:
                bits = self._pack([int(r) for r in self.relays])[0]
            data = (bits >> register) & ((1 << value) - 1)
            return Handled(with_crc16(bytes((self.address, function, 1, data))))
        if function != mb.FC_WRITE_COIL:
            return self._exception(function, 1)
        echo = Handled(bytes(frame))
        if mb.PULSE_BASE <= register < mb.PULSE_BASE + mb.CHANNELS:
            lock = register - mb.PULSE_BASE + 1
            self.pulse_ms = value * 100
            self.unlock(lock, now)
            return Handled(echo.reply, (lock,))
        if register == mb.ALL_RELAYS:
            on = value == 0xFF00
            self.relays = [on] * mb.CHANNELS
            if on:
                for n in range(1, self.locks + 1):
                    self.unlock(n, now)
                return Handled(echo.reply, tuple(range(1, self.locks + 1)))
            return echo
        if register < mb.CHANNELS:
            if value not in (mb.RELAY_OFF, mb.RELAY_ON):
                return self._exception(function, 3)
            channel = register + 1
            self.relays[register] = value == mb.RELAY_ON
            if value == mb.RELAY_ON and channel <= self.locks:
                # A modelled lock's relay held on releases that lock, as any relay pulse does.
                # Channels beyond `locks` are plain outputs (a charging socket): no unlock.
                self.unlock(channel, now)
                return Handled(echo.reply, (channel,))
            return echo
        return self._exception(function, 2)

    def relay(self, channel: int) -> bool:
        """Whether relay `channel` (1..8) is held on (FC05 0xFF00 on coil channel-1)."""
        if not 1 <= channel <= mb.CHANNELS:
            raise ValueError(f"relay channel must be 1..{mb.CHANNELS}, got {channel}")
        return self.relays[channel - 1]


BOARD_TYPES: dict[str, type[SimBoard]] = {
    cls.protocol: cls for cls in (Cu16Board, Cu48Board, ModbusRelayBoard)
}
