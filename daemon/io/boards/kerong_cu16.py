"""Kerong KR-CU16 codec: 16 locks and 16 item sensors per board (docs/lock-boards.md).

Frame `02 ADDR CMD [DATA] 03 SUM`, SUM = sum of the preceding bytes mod 256. Board-level commands
use ADDR = board << 4, an unlock uses ADDR = (board << 4) | lock0. The unlock itself gets no
answer; the pulse length is a separate 0x37 frame the driver sends once at start-up.
"""

from __future__ import annotations

from daemon.io.boards.checksums import sum8
from daemon.io.boards.codec import FrameError, LockReading, bit, check_lock, tail_frame

STX = 0x02
ETX = 0x03
CMD_STATUS = 0x30
CMD_UNLOCK = 0x31
CMD_UNLOCK_ALL = 0x33
CMD_PULSE = 0x37
REPLY_STATUS = 0x35
#: Answer to CMD_PULSE (its layout is not documented; the driver only checks that one came).
REPLY_PULSE = 0x38
LOCKS = 16
STATUS_REPLY_LENGTH = 9


def kerong_frame(*body: int) -> bytes:
    """`02 body... 03 SUM`."""
    head = bytes((STX, *body, ETX))
    return head + bytes((sum8(head),))


class Cu16Codec:
    """Sans-I/O protocol object of one KR-CU16 board (board number 0..15 on its bus)."""

    protocol = "kerong-cu16"
    locks = LOCKS
    expects_unlock_reply = False

    def __init__(self, address: int, *, door_closed_bit: int = 1, pulse_ms: int = 500) -> None:
        if not 0 <= address <= 0x0F:
            raise ValueError(f"kerong-cu16 board address must be 0..15, got {address}")
        if door_closed_bit not in (0, 1):
            raise ValueError(f"door_closed_bit must be 0 or 1, got {door_closed_bit!r}")
        self.address = address
        self.door_closed_bit = door_closed_bit
        self.pulse_ms = pulse_ms
        self._pulse = self.pulse_request(pulse_ms)

    def status_request(self) -> bytes:
        return kerong_frame(self.address << 4, CMD_STATUS)

    def unlock_request(self, lock: int) -> bytes:
        check_lock(lock, LOCKS)
        return kerong_frame((self.address << 4) | (lock - 1), CMD_UNLOCK)

    def unlock_all_request(self) -> bytes:
        return kerong_frame(self.address << 4, CMD_UNLOCK_ALL)

    def pulse_request(self, ms: int) -> bytes:
        """Set the unlock pulse (10 ms units, two bytes big-endian: 500 ms -> `00 32`)."""
        units = round(ms / 10)
        if not 1 <= units <= 0xFFFF:
            raise ValueError(f"pulse must be 10..655350 ms, got {ms}")
        return kerong_frame(self.address << 4, CMD_PULSE, units >> 8, units & 0xFF)

    def startup_requests(self) -> list[bytes]:
        return [self._pulse]

    def decode_status(self, frame: bytes) -> dict[int, LockReading]:
        f = tail_frame(frame, STATUS_REPLY_LENGTH)
        if f[0] != STX:
            raise FrameError("no STX at frame start", frame)
        if f[7] != ETX:
            raise FrameError("no ETX before the checksum", frame)
        if f[8] != sum8(f[:8]):
            raise FrameError(f"bad checksum {f[8]:02x}, expected {sum8(f[:8]):02x}", frame)
        if f[2] != REPLY_STATUS:
            raise FrameError(f"wrong command {f[2]:02x}, expected {REPLY_STATUS:02x}", frame)
        if f[1] >> 4 != self.address:
            raise FrameError(f"reply from board {f[1] >> 4}, expected {self.address}", frame)
        locks, items = f[3:5], f[5:7]
        return {
            n: LockReading(bit(locks, n - 1) == self.door_closed_bit, bool(bit(items, n - 1)))
            for n in range(1, LOCKS + 1)
        }

    def check_unlock_reply(self, lock: int, frame: bytes) -> None:
        raise FrameError("kerong-cu16 boards do not answer an unlock", frame)
