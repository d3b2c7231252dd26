"""Frame checksums of the lock-board protocols (docs/lock-boards.md).

Kept apart from the codecs because both the host codecs and the board simulators use them.
"""

from __future__ import annotations


def sum8(data: bytes) -> int:
    """Kerong checksum: sum of all bytes modulo 256."""
    return sum(data) & 0xFF


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc16_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/Modbus: init 0xFFFF, reflected polynomial 0xA001 (sent low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc16(data: bytes) -> bytes:
    """`data` followed by its Modbus CRC, low byte first, as it goes on the wire."""
    return data + crc16_modbus(data).to_bytes(2, "little")
