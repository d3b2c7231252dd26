"""Modbus RTU relay-board codec (Waveshare "Modbus RTU Relay (D)": 8 relays, 8 inputs).

Each lock is a relay channel (lock n = channel n-1) pulsed by the board itself (FC05 on 0x0200 +
channel, value = pulse in 100 ms units), so a host that dies mid-pulse cannot leave a lock
energised. Each door sensor is the digital input of the same number (FC02, bit 0 = input 1).

A channel that no cell uses as its lock can instead be a held output (a phone-charging socket
powered while its cell is rented): FC05 on coil address channel-1, value 0xFF00 switches the relay
on and 0x0000 off, and the board echoes the request. The start-up "all relays off" frame switches
every held output off too.

Polarity: an input bit is 1 when the input is active (its contact is closed / the optocoupler
conducts). `door_closed_bit` is the bit value that means "door closed": 1 for a door switch that
closes when the door closes (the default), 0 for one that opens when the door closes.
The boards have no item sensor: item_present is None.
"""

from __future__ import annotations

from daemon.io.boards.checksums import crc16_modbus, with_crc16
from daemon.io.boards.codec import FrameError, LockReading, bit, check_lock, tail_frame

FC_READ_COILS = 0x01
FC_READ_INPUTS = 0x02
FC_WRITE_COIL = 0x05
#: Write to 0x0200 + channel starts a board-timed pulse ("flash on").
PULSE_BASE = 0x0200
#: Writing 0x0000 to this coil address switches every relay off.
ALL_RELAYS = 0x00FF
#: FC05 values of a held relay (coil address = channel - 1): on and off.
RELAY_ON = 0xFF00
RELAY_OFF = 0x0000
CHANNELS = 8
STATUS_REPLY_LENGTH = 6
EXCEPTION_LENGTH = 5

EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    6: "slave device busy",
}


def modbus_request(address: int, function: int, register: int, value: int) -> bytes:
    """An 8-byte request `ADDR FC REG VALUE CRC` (register and value big-endian)."""
    body = bytes((address, function)) + register.to_bytes(2, "big") + value.to_bytes(2, "big")
    return with_crc16(body)


def check_channel(channel: int) -> int:
    """Validate a 1-based relay channel (1..8)."""
    if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= CHANNELS:
        raise ValueError(f"relay channel must be 1..{CHANNELS}, got {channel!r}")
    return channel


def _crc_ok(f: bytes) -> bool:
    return crc16_modbus(f[:-2]).to_bytes(2, "little") == f[-2:]


class ModbusRelayCodec:
    """Sans-I/O protocol object of one relay board (slave address 1..247)."""

    protocol = "modbus-relay"
    locks = CHANNELS
    #: The board echoes a write; the driver reads the echo so it cannot collide on the bus.
    expects_unlock_reply = True
    #: Channels that can be held on as outputs (set_output in the driver).
    outputs = CHANNELS

    def __init__(self, address: int, *, door_closed_bit: int = 1, pulse_ms: int = 500) -> None:
        if not 1 <= address <= 247:
            raise ValueError(
                f"modbus-relay slave address must be 1..247 (0 is broadcast, boards never "
                f"answer it), got {address}"
            )
        if door_closed_bit not in (0, 1):
            raise ValueError(f"door_closed_bit must be 0 or 1, got {door_closed_bit!r}")
        self.address = address
        self.door_closed_bit = door_closed_bit
        self.pulse_ms = pulse_ms
        #: Board-timed pulse in 100 ms units, at least one unit.
        self.pulse_units = max(1, min(0xFFFF, round(pulse_ms / 100)))

    def status_request(self) -> bytes:
        return modbus_request(self.address, FC_READ_INPUTS, 0, CHANNELS)

    def relays_request(self) -> bytes:
        return modbus_request(self.address, FC_READ_COILS, 0, CHANNELS)

    def unlock_request(self, lock: int) -> bytes:
        check_lock(lock, CHANNELS)
        return modbus_request(self.address, FC_WRITE_COIL, PULSE_BASE + lock - 1, self.pulse_units)

    def output_request(self, channel: int, on: bool) -> bytes:
        """Hold relay `channel` (1-based) on or switch it off: FC05 on coil channel-1.

        Channel 1 on: `01 05 00 00 FF 00 8C 3A` (docs/lock-boards.md). Never use it on a lock's
        channel: a held lock relay stays energised until it is switched off.
        """
        check_channel(channel)
        return modbus_request(
            self.address, FC_WRITE_COIL, channel - 1, RELAY_ON if on else RELAY_OFF
        )

    def check_output_reply(self, channel: int, on: bool, frame: bytes) -> None:
        """Raise FrameError unless `frame` is the board's echo of `output_request(channel, on)`."""
        request = self.output_request(channel, on)
        self._check_exception(bytes(frame), FC_WRITE_COIL)
        if tail_frame(frame, len(request)) != request:
            raise FrameError("not the echo of the relay request", frame)

    def decode_relays(self, frame: bytes) -> dict[int, bool]:
        """Relay state of channels 1..8 from the reply to `relays_request()` (FC01)."""
        self._check_exception(bytes(frame), FC_READ_COILS)
        f = tail_frame(frame, STATUS_REPLY_LENGTH)
        if not _crc_ok(f):
            raise FrameError("bad CRC", frame)
        if f[0] != self.address:
            raise FrameError(f"reply from slave {f[0]}, expected {self.address}", frame)
        if f[1] != FC_READ_COILS:
            raise FrameError(f"wrong function {f[1]:02x}, expected 01", frame)
        if f[2] != 1:
            raise FrameError(f"byte count {f[2]}, expected 1", frame)
        return {n: bool(bit(f[3:4], n - 1)) for n in range(1, CHANNELS + 1)}

    def all_off_request(self) -> bytes:
        return modbus_request(self.address, FC_WRITE_COIL, ALL_RELAYS, 0x0000)

    def startup_requests(self) -> list[bytes]:
        return [self.all_off_request()]

    def _check_exception(self, frame: bytes, function: int) -> None:
        """Raise the board's exception answer as a FrameError, if that is what `frame` is."""
        if len(frame) < EXCEPTION_LENGTH:
            return
        f = frame[-EXCEPTION_LENGTH:]
        if f[0] == self.address and f[1] == function | 0x80 and _crc_ok(f):
            name = EXCEPTIONS.get(f[2], "unknown")
            raise FrameError(f"modbus exception {f[2]:02x} ({name})", frame)

    def decode_status(self, frame: bytes) -> dict[int, LockReading]:
        self._check_exception(bytes(frame), FC_READ_INPUTS)
        f = tail_frame(frame, STATUS_REPLY_LENGTH)
        if not _crc_ok(f):
            raise FrameError("bad CRC", frame)
        if f[0] != self.address:
            raise FrameError(f"reply from slave {f[0]}, expected {self.address}", frame)
        if f[1] != FC_READ_INPUTS:
            raise FrameError(f"wrong function {f[1]:02x}, expected 02", frame)
        if f[2] != 1:
            raise FrameError(f"byte count {f[2]}, expected 1", frame)
        inputs = f[3:4]
        return {
            n: LockReading(bit(inputs, n - 1) == self.door_closed_bit, None)
            for n in range(1, CHANNELS + 1)
        }

    def check_unlock_reply(self, lock: int, frame: bytes) -> None:
        request = self.unlock_request(lock)
        self._check_exception(bytes(frame), FC_WRITE_COIL)
        if tail_frame(frame, len(request)) != request:
            raise FrameError("not the echo of the pulse request", frame)
