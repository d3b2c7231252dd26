"""What every lock-board codec offers: the reading type, the one frame error, the interface.

Codecs are sans-I/O (docs/architecture.md "Principles"): bytes in, readings or bytes out, no port,
no clock. The serial transport and the driver do the I/O around them.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

#: Leading noise bytes (line turn-around glitches) a decoder may skip before a reply. Replies are
#: framed by silence, so the frame must be the tail of what arrived: only one candidate is ever
#: checked, and it must still pass every header, length and checksum test.
MAX_LEADING_NOISE = 8


class LockReading(NamedTuple):
    """One lock as a board reports it; None where the board has no such sensor."""

    door_closed: bool | None
    item_present: bool | None


class FrameError(ValueError):
    """A reply that is not a valid frame for this board; `reason` says what is wrong."""

    def __init__(self, reason: str, frame: bytes = b"") -> None:
        self.reason = reason
        self.frame = bytes(frame)
        shown = self.frame[:64].hex(" ")
        more = " ..." if len(self.frame) > 64 else ""
        super().__init__(f"{reason} (frame: {shown or 'empty'}{more})")


class BoardCodec(Protocol):
    """The sans-I/O protocol object of one board at one address."""

    protocol: str
    address: int
    locks: int
    door_closed_bit: int
    #: Whether the board answers an unlock (the driver then waits for, and ignores, that answer).
    expects_unlock_reply: bool

    def status_request(self) -> bytes: ...

    def unlock_request(self, lock: int) -> bytes: ...

    def startup_requests(self) -> list[bytes]:
        """Frames to send once when the driver starts (pulse length, relays off)."""
        ...

    def decode_status(self, frame: bytes) -> dict[int, LockReading]:
        """Readings of every lock 1..locks; raises FrameError and nothing else."""
        ...

    def check_unlock_reply(self, lock: int, frame: bytes) -> None:
        """Raise FrameError unless `frame` is this board's answer to unlocking `lock`."""
        ...


def tail_frame(frame: bytes, length: int) -> bytes:
    """The last `length` bytes of a silence-framed reply, tolerating a little leading noise."""
    data = bytes(frame)
    if len(data) < length:
        raise FrameError(f"truncated: {len(data)} bytes, expected {length}", data)
    if len(data) > length + MAX_LEADING_NOISE:
        raise FrameError(f"too long: {len(data)} bytes, expected {length}", data)
    return data[len(data) - length :]


def check_lock(lock: int, locks: int) -> int:
    """Validate a 1-based lock number; a bad one is a programming or configuration error."""
    if isinstance(lock, bool) or not isinstance(lock, int) or not 1 <= lock <= locks:
        raise ValueError(f"lock must be 1..{locks}, got {lock!r}")
    return lock


def bit(data: bytes, index: int) -> int:
    """Bit `index` of a little-endian bit field (bit 0 = least significant bit of data[0])."""
    return (data[index // 8] >> (index % 8)) & 1
