"""Hypothesis throws random and mutated frames at every decoder: only FrameError may come out.

A decoder that raised IndexError or struct.error on a noisy line would take the poll loop down;
one that accepted a corrupt frame would report a door wrongly. Valid frames must round-trip.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.io.boards.checksums import sum8, with_crc16
from daemon.io.boards.codec import FrameError, LockReading
from daemon.io.boards.kerong_cu16 import Cu16Codec, kerong_frame
from daemon.io.boards.kerong_cu48 import Cu48Codec, cu48_unlock_reply
from daemon.io.boards.modbus_relay import ModbusRelayCodec

FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cu16_reply(bits: int) -> bytes:
    return kerong_frame(0x00, 0x35, *bits.to_bytes(4, "little"))


def cu48_reply(bits: int) -> bytes:
    body = bytes((0x02, 0x00, 0x00, 0x75, *bits.to_bytes(12, "little"), 0x03))
    return body + bytes((sum8(body),))


def modbus_reply(bits: int) -> bytes:
    return with_crc16(bytes((0x01, 0x02, 0x01, bits & 0xFF)))


Decoder = Callable[[bytes], object]
CASES: dict[str, tuple[Decoder, Callable[[int], bytes], int]] = {
    "cu16-status": (Cu16Codec(0).decode_status, cu16_reply, 32),
    "cu48-status": (Cu48Codec(0).decode_status, cu48_reply, 96),
    "modbus-status": (ModbusRelayCodec(1).decode_status, modbus_reply, 8),
    "cu48-unlock": (
        lambda f: Cu48Codec(0).check_unlock_reply(5, f),
        lambda b: cu48_unlock_reply(0, 4 if b & 1 else b % 48),
        6,
    ),
    "modbus-unlock": (
        lambda f: ModbusRelayCodec(1).check_unlock_reply(1, f),
        lambda b: ModbusRelayCodec(1, pulse_ms=500 if b & 1 else 100 * (b % 50)).unlock_request(1),
        8,
    ),
}


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Pure noise, or a valid frame of some decoder flipped, truncated, padded or left alone."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=48))
    _, make, nbits = CASES[draw(st.sampled_from(sorted(CASES)))]
    frame = bytearray(make(draw(st.integers(0, 2**nbits - 1))))
    how = draw(st.sampled_from(["flip", "truncate", "prefix", "suffix", "splice", "none"]))
    if how == "flip":
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del frame[draw(st.integers(0, len(frame) - 1)) :]
    elif how == "prefix":
        frame[:0] = draw(st.binary(min_size=1, max_size=12))
    elif how == "suffix":
        frame += draw(st.binary(min_size=1, max_size=4))
    elif how == "splice":
        i = draw(st.integers(0, len(frame)))
        frame[i:i] = draw(st.binary(min_size=1, max_size=3))
    return bytes(frame)


def check(decode: Decoder, frame: bytes) -> None:
    try:
        result = decode(frame)
    except FrameError as exc:
        assert exc.reason
        return
    if result is None:  # the unlock-reply checkers return None when the reply is valid
        return
    assert isinstance(result, dict)
    assert all(isinstance(r, LockReading) for r in result.values())
    assert all(isinstance(r.door_closed, bool) for r in result.values())


@FUZZ
@given(frames())
def test_every_decoder_raises_only_frame_error(frame: bytes) -> None:
    """Each of the five decoders sees the same 10,000 frames (a fifth built from its own)."""
    for decode, _, _ in CASES.values():
        check(decode, frame)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0, 1]))
def test_cu16_round_trip(bits: int, polarity: int) -> None:
    readings = Cu16Codec(0, door_closed_bit=polarity).decode_status(cu16_reply(bits))
    for n in range(1, 17):
        assert readings[n].door_closed == (((bits >> (n - 1)) & 1) == polarity)
        assert readings[n].item_present == bool((bits >> (15 + n)) & 1)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**96 - 1), st.sampled_from([0, 1]))
def test_cu48_round_trip(bits: int, polarity: int) -> None:
    readings = Cu48Codec(0, door_closed_bit=polarity).decode_status(cu48_reply(bits))
    assert [readings[n].door_closed for n in range(1, 49)] == [
        ((bits >> (n - 1)) & 1) == polarity for n in range(1, 49)
    ]


@settings(max_examples=256, deadline=None)
@given(st.integers(0, 255), st.sampled_from([0, 1]))
def test_modbus_round_trip(bits: int, polarity: int) -> None:
    readings = ModbusRelayCodec(1, door_closed_bit=polarity).decode_status(modbus_reply(bits))
    assert [readings[n].door_closed for n in range(1, 9)] == [
        ((bits >> (n - 1)) & 1) == polarity for n in range(1, 9)
    ]
