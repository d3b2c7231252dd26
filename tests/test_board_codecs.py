"""Every example frame of docs/lock-boards.md, byte for byte, and the codecs' refusals."""

from __future__ import annotations

import pytest

from daemon.io.boards.checksums import crc16_modbus, sum8, with_crc16
from daemon.io.boards.codec import FrameError, LockReading
from daemon.io.boards.kerong_cu16 import Cu16Codec
from daemon.io.boards.kerong_cu48 import Cu48Codec
from daemon.io.boards.modbus_relay import FC_WRITE_COIL, ModbusRelayCodec, modbus_request


def h(text: str) -> bytes:
    return bytes.fromhex(text)


CU16_REPLY = h("02 00 35 05 00 01 00 03 40")
CU48_REPLY = h("02 00 00 75 00 20 00 00 00 00 00 00 00 00 00 00 03 9A")
MODBUS_REPLY = h("01 02 01 05 61 8B")


# --- checksums -----------------------------------------------------------------------------


def test_kerong_sum_is_the_byte_sum_mod_256() -> None:
    assert sum8(h("02 00 30 03")) == 0x35
    assert sum8(b"\xff\xff") == 0xFE


def test_crc16_modbus_check_value_and_documented_frames() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the catalogue check value of CRC-16/MODBUS
    for frame in (
        "01 05 02 00 00 02 4D B3",
        "01 02 00 00 00 08 79 CC",
        "01 02 01 05 61 8B",
        "01 01 00 00 00 08 3D CC",
        "01 05 00 FF 00 00 FD FA",
        "01 05 00 00 FF 00 8C 3A",
    ):
        assert with_crc16(h(frame)[:-2]) == h(frame)


# --- Kerong CU16 ---------------------------------------------------------------------------


def test_cu16_requests_byte_exact() -> None:
    assert Cu16Codec(0).status_request() == h("02 00 30 03 35")
    assert Cu16Codec(1).status_request() == h("02 10 30 03 45")
    assert Cu16Codec(0).unlock_request(1) == h("02 00 31 03 36")
    assert Cu16Codec(1).unlock_request(3) == h("02 12 31 03 48")
    assert Cu16Codec(0).unlock_all_request() == h("02 00 33 03 38")
    assert Cu16Codec(0).pulse_request(500) == h("02 00 37 00 32 03 6E")
    assert Cu16Codec(0, pulse_ms=500).startup_requests() == [h("02 00 37 00 32 03 6E")]
    assert Cu16Codec(0).expects_unlock_reply is False


def test_cu16_status_reply_documented_meaning() -> None:
    readings = Cu16Codec(0).decode_status(CU16_REPLY)
    assert set(readings) == set(range(1, 17))
    assert [n for n, r in readings.items() if r.door_closed] == [1, 3]
    assert [n for n, r in readings.items() if r.item_present] == [1]
    assert readings[1] == LockReading(door_closed=True, item_present=True)


def test_cu16_polarity_zero_means_closed() -> None:
    readings = Cu16Codec(0, door_closed_bit=0).decode_status(CU16_REPLY)
    assert [n for n, r in readings.items() if not r.door_closed] == [1, 3]
    assert readings[1].item_present is True  # item sensors keep 1 = present


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (CU16_REPLY[:-1], "truncated"),
        (b"", "truncated"),
        (CU16_REPLY[:-1] + b"\x41", "bad checksum"),
        (h("02 10 35 05 00 01 00 03 50"), "board 1"),  # board 1 answering board 0's poll
        (h("02 00 36 05 00 01 00 03 41"), "wrong command"),
        (h("03 00 35 05 00 01 00 03 41"), "STX"),
        (h("02 00 35 05 00 01 00 04 41"), "ETX"),
        (CU16_REPLY + b"\x00", "STX"),  # trailing garbage
        (b"\x00" * 9 + CU16_REPLY, "too long"),
        (bytes(range(200)), "too long"),
    ],
)
def test_cu16_bad_frames_raise_frame_error(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason) as info:
        Cu16Codec(0).decode_status(frame)
    assert info.value.reason
    assert info.value.frame == frame


def test_cu16_tolerates_a_little_leading_noise() -> None:
    readings = Cu16Codec(0).decode_status(b"\x00\xff" + CU16_REPLY)
    assert readings == Cu16Codec(0).decode_status(CU16_REPLY)


def test_cu16_refuses_bad_addresses_and_locks() -> None:
    with pytest.raises(ValueError):
        Cu16Codec(16)
    with pytest.raises(ValueError):
        Cu16Codec(0).unlock_request(17)
    with pytest.raises(ValueError):
        Cu16Codec(0).unlock_request(0)


# --- Kerong CU48 ---------------------------------------------------------------------------


def test_cu48_requests_byte_exact() -> None:
    codec = Cu48Codec(0)
    assert codec.status_request() == h("02 00 00 60 03 65")
    assert codec.unlock_request(1) == h("02 00 00 61 03 66")
    assert codec.unlock_request(5) == h("02 00 04 61 03 6A")
    assert codec.startup_requests() == []


def test_cu48_status_reply_lock_14_closed() -> None:
    readings = Cu48Codec(0).decode_status(CU48_REPLY)
    assert set(readings) == set(range(1, 49))
    assert [n for n, r in readings.items() if r.door_closed] == [14]
    assert all(r.item_present is None for r in readings.values())


def test_cu48_polarity_zero_means_closed() -> None:
    readings = Cu48Codec(0, door_closed_bit=0).decode_status(CU48_REPLY)
    assert [n for n, r in readings.items() if not r.door_closed] == [14]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (CU48_REPLY[:10], "truncated"),
        (CU48_REPLY[:-1] + b"\x9b", "bad checksum"),
        (h("02 01 00 75 00 20 00 00 00 00 00 00 00 00 00 00 03 9B"), "board 1"),
        (h("02 00 00 76 00 20 00 00 00 00 00 00 00 00 00 00 03 9B"), "wrong command"),
        (CU16_REPLY, "truncated"),
    ],
)
def test_cu48_bad_frames_raise_frame_error(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        Cu48Codec(0).decode_status(frame)


def test_cu48_unlock_reply_is_checked_only_as_advice() -> None:
    codec = Cu48Codec(0)
    assert codec.expects_unlock_reply is True
    codec.check_unlock_reply(5, h("02 00 04 75 00 7B"))
    with pytest.raises(FrameError):
        codec.check_unlock_reply(6, h("02 00 04 75 00 7B"))
    with pytest.raises(FrameError):
        codec.check_unlock_reply(5, h("02 00 04 75 00 7C"))


# --- Modbus relay --------------------------------------------------------------------------


def test_modbus_requests_byte_exact() -> None:
    codec = ModbusRelayCodec(1, pulse_ms=200)
    assert codec.unlock_request(1) == h("01 05 02 00 00 02 4D B3")
    assert codec.status_request() == h("01 02 00 00 00 08 79 CC")
    assert codec.relays_request() == h("01 01 00 00 00 08 3D CC")
    assert codec.all_off_request() == h("01 05 00 FF 00 00 FD FA")
    assert codec.startup_requests() == [h("01 05 00 FF 00 00 FD FA")]
    assert modbus_request(1, FC_WRITE_COIL, 0, 0xFF00) == h("01 05 00 00 FF 00 8C 3A")


def test_modbus_pulse_is_in_100_ms_units() -> None:
    assert ModbusRelayCodec(1, pulse_ms=500).unlock_request(8)[2:6] == h("02 07 00 05")
    assert ModbusRelayCodec(1, pulse_ms=10).unlock_request(1)[4:6] == h("00 01")


def test_modbus_inputs_1_and_3() -> None:
    readings = ModbusRelayCodec(1).decode_status(MODBUS_REPLY)
    assert set(readings) == set(range(1, 9))
    assert [n for n, r in readings.items() if r.door_closed] == [1, 3]
    assert all(r.item_present is None for r in readings.values())


def test_modbus_polarity_zero_means_closed() -> None:
    readings = ModbusRelayCodec(1, door_closed_bit=0).decode_status(MODBUS_REPLY)
    assert [n for n, r in readings.items() if not r.door_closed] == [1, 3]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (MODBUS_REPLY[:-1], "truncated"),
        (MODBUS_REPLY[:-1] + b"\x8c", "bad CRC"),
        (with_crc16(h("02 02 01 05")), "slave 2"),
        (with_crc16(h("01 01 01 05")), "wrong function"),
        (with_crc16(h("01 02 02 05")), "byte count"),
        (with_crc16(h("01 82 02")), "exception 02 \\(illegal data address\\)"),
    ],
)
def test_modbus_bad_frames_raise_frame_error(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        ModbusRelayCodec(1).decode_status(frame)


def test_modbus_unlock_reply_is_the_echo() -> None:
    codec = ModbusRelayCodec(1, pulse_ms=200)
    codec.check_unlock_reply(1, h("01 05 02 00 00 02 4D B3"))
    with pytest.raises(FrameError, match="echo"):
        codec.check_unlock_reply(2, h("01 05 02 00 00 02 4D B3"))
    with pytest.raises(FrameError, match="exception"):
        codec.check_unlock_reply(1, with_crc16(h("01 85 04")))


def test_modbus_refuses_the_broadcast_address() -> None:
    with pytest.raises(ValueError, match="broadcast"):
        ModbusRelayCodec(0)
