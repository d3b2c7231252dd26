"""Kerong CU48-class codec: 48 locks per board (docs/lock-boards.md).

Frame `02 ADDR LOCK0 CMD 03 SUM` with the Kerong checksum; 0x60 status, 0x61 unlock. The status
reply `02 ADDR 00 75 D0..D11 03 SUM` carries the locks in D0..D5. D6..D11 are "most likely" the
item sensors, which no source confirms, so item_present is reported as None. A reply to an unlock
(`02 ADDR LOCK 75 00 SUM` in one implementation) is advisory only: the status poll decides.
"""

from __future__ import annotations

from daemon.io.boards.checksums import sum8
from daemon.io.boards.codec import FrameError, LockReading, bit, check_lock, tail_frame

STX = 0x02
ETX = 0x03
CMD_STATUS = 0x60
CMD_UNLOCK = 0x61
REPLY = 0x75
LOCKS = 48
STATUS_REPLY_LENGTH = 18
UNLOCK_REPLY_LENGTH = 6


def cu48_frame(address: int, lock0: int, cmd: int) -> bytes:
    head = bytes((STX, address, lock0, cmd, ETX))
    return head + bytes((sum8(head),))


class Cu48Codec:
    """Sans-I/O protocol object of one CU48 board."""

    protocol = "kerong-cu48"
    locks = LOCKS
    #: Some firmwares answer an unlock; the driver waits for it so it cannot collide with the next
    #: request on the bus, and ignores what it says.
    expects_unlock_reply = True

    def __init__(self, address: int, *, door_closed_bit: int = 1) -> None:
        if not 0 <= address <= 0xFF:
            raise ValueError(f"kerong-cu48 board address must be 0..255, got {address}")
        if door_closed_bit not in (0, 1):
            raise ValueError(f"door_closed_bit must be 0 or 1, got {door_closed_bit!r}")
        self.address = address
        self.door_closed_bit = door_closed_bit

    def status_request(self) -> bytes:
        return cu48_frame(self.address, 0, CMD_STATUS)

    def unlock_request(self, lock: int) -> bytes:
        check_lock(lock, LOCKS)
        return cu48_frame(self.address, lock - 1, CMD_UNLOCK)

    def startup_requests(self) -> list[bytes]:
        return []

    def decode_status(self, frame: bytes) -> dict[int, LockReading]:
        f = tail_frame(frame, STATUS_REPLY_LENGTH)
        if f[0] != STX:
            raise FrameError("no STX at frame start", frame)
        if f[16] != ETX:
            raise FrameError("no ETX before the checksum", frame)
        if f[17] != sum8(f[:17]):
            raise FrameError(f"bad checksum {f[17]:02x}, expected {sum8(f[:17]):02x}", frame)
        if f[3] != REPLY:
            raise FrameError(f"wrong command {f[3]:02x}, expected {REPLY:02x}", frame)
        if f[1] != self.address:
            raise FrameError(f"reply from board {f[1]}, expected {self.address}", frame)
        locks = f[4:10]
        return {
            n: LockReading(bit(locks, n - 1) == self.door_closed_bit, None)
            for n in range(1, LOCKS + 1)
        }

    def check_unlock_reply(self, lock: int, frame: bytes) -> None:
        check_lock(lock, LOCKS)
        f = tail_frame(frame, UNLOCK_REPLY_LENGTH)
        if f[0] != STX:
            raise FrameError("no STX at frame start", frame)
        if f[5] != sum8(f[:5]):
            raise FrameError(f"bad checksum {f[5]:02x}, expected {sum8(f[:5]):02x}", frame)
        if f[1] != self.address or f[2] != lock - 1 or f[3] != REPLY:
            raise FrameError(f"not the answer to unlocking lock {lock}", frame)


def cu48_unlock_reply(address: int, lock0: int) -> bytes:
    """The 6-byte unlock answer one implementation documents (used by the simulator)."""
    head = bytes((STX, address, lock0, REPLY, 0x00))
    return head + bytes((sum8(head),))
