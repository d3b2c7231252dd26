"""Charging sockets on held relay channels: the codec's frames, the simulator, a driver over a pty.

A Modbus relay board's channel that no cell uses as its lock can power a cell's phone-charging
socket: FC05 0xFF00 on coil channel-1 holds the relay on, 0x0000 switches it off, the board echoes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from board_sim.boards import ModbusRelayBoard
from board_sim.bus import SimBus
from board_sim.simulator import PtySimulator
from daemon.config import BoardConfig
from daemon.io.boards import FrameError, SerialBus, make_driver
from daemon.io.boards.checksums import with_crc16
from daemon.io.boards.driver import OutputError, OutputUnsupportedError
from daemon.io.boards.modbus_relay import ModbusRelayCodec

FAST = {"timeout_ms": 80, "quiet_gap_ms": 10, "frame_gap_ms": 2}


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def board(sim: PtySimulator, **kw: Any) -> BoardConfig:
    return BoardConfig(
        name="b0", protocol=sim.protocol, port=sim.path, address=sim.addresses[0], **{**FAST, **kw}
    )


# --- the codec -------------------------------------------------------------------------------


def test_held_relay_requests_byte_exact() -> None:
    codec = ModbusRelayCodec(1)
    assert codec.output_request(1, True) == h("01 05 00 00 FF 00 8C 3A")  # docs/lock-boards.md
    assert codec.output_request(1, False) == with_crc16(h("01 05 00 00 00 00"))
    assert codec.output_request(8, True)[:6] == h("01 05 00 07 FF 00")
    assert ModbusRelayCodec(3).output_request(2, False)[:6] == h("03 05 00 01 00 00")


@pytest.mark.parametrize("channel", [0, 9, True, "1"])
def test_held_relay_refuses_a_channel_the_board_does_not_have(channel: Any) -> None:
    with pytest.raises(ValueError, match=r"relay channel must be 1\.\.8"):
        ModbusRelayCodec(1).output_request(channel, True)


def test_held_relay_reply_is_the_echo() -> None:
    codec = ModbusRelayCodec(1)
    codec.check_output_reply(1, True, h("01 05 00 00 FF 00 8C 3A"))
    codec.check_output_reply(1, True, b"\x00" + h("01 05 00 00 FF 00 8C 3A"))  # line noise
    with pytest.raises(FrameError, match="echo"):
        codec.check_output_reply(1, False, h("01 05 00 00 FF 00 8C 3A"))
    with pytest.raises(FrameError, match="echo"):
        codec.check_output_reply(2, True, h("01 05 00 00 FF 00 8C 3A"))
    with pytest.raises(FrameError, match="exception 04"):
        codec.check_output_reply(1, True, with_crc16(h("01 85 04")))
    with pytest.raises(FrameError, match="truncated"):
        codec.check_output_reply(1, True, h("01 05 00 00 FF 00 8C"))


def test_relay_read_back_decodes_fc01() -> None:
    codec = ModbusRelayCodec(1)
    relays = codec.decode_relays(with_crc16(h("01 01 01 41")))
    assert [n for n, on in relays.items() if on] == [1, 7]
    with pytest.raises(FrameError, match="wrong function"):
        codec.decode_relays(with_crc16(h("01 02 01 41")))
    with pytest.raises(FrameError, match="CRC"):
        codec.decode_relays(h("01 01 01 41 00 00"))


# --- the simulator's model ---------------------------------------------------------------------


def test_simulated_board_holds_relays_and_reads_them_back() -> None:
    bus = SimBus("modbus-relay", locks=6)
    codec = ModbusRelayCodec(1)
    assert bus.feed(h("01 05 00 06 FF 00"), 0.0) == []  # half a frame: nothing yet
    bus.drop_partial()
    assert bus.feed(codec.output_request(7, True), 0.0) == [codec.output_request(7, True)]
    board = relay_board(bus)
    assert board.relay(7) and not board.relay(8)
    (reply,) = bus.feed(codec.relays_request(), 0.0)
    assert [n for n, on in codec.decode_relays(reply).items() if on] == [7]
    assert bus.unlocks == {}  # channel 7 is no modelled lock: a plain output
    assert bus.feed(codec.output_request(7, False), 0.0) == [codec.output_request(7, False)]
    assert not board.relay(7)


def test_all_relays_off_switches_held_relays_off() -> None:
    bus = SimBus("modbus-relay", locks=6)
    codec = ModbusRelayCodec(1)
    bus.feed(codec.output_request(7, True) + codec.output_request(8, True), 0.0)
    assert board_relays(bus) == {7, 8}
    assert bus.feed(h("01 05 00 FF 00 00 FD FA"), 0.0) == [h("01 05 00 FF 00 00 FD FA")]
    assert board_relays(bus) == set()


def test_held_relay_on_a_modelled_lock_releases_it() -> None:
    """A Modbus lock channel is a relay too: holding it on unlocks (why config forbids it)."""
    bus = SimBus("modbus-relay")
    bus.feed(h("01 05 00 00 FF 00 8C 3A"), 0.0)
    assert bus.unlocks == {(0, 1): 1} and bus.boards[0].state[0].open


def test_bad_coil_value_is_an_illegal_data_value() -> None:
    bus = SimBus("modbus-relay")
    assert bus.feed(with_crc16(h("01 05 00 00 12 34")), 0.0) == [with_crc16(h("01 85 03"))]
    assert board_relays(bus) == set()


def relay_board(bus: SimBus) -> ModbusRelayBoard:
    board = bus.boards[0]
    assert isinstance(board, ModbusRelayBoard)
    return board


def board_relays(bus: SimBus) -> set[int]:
    return {n for n in range(1, 9) if relay_board(bus).relay(n)}


@contextlib.asynccontextmanager
async def driver_on(sim: PtySimulator) -> AsyncIterator[tuple[SerialBus, Any]]:
    """The daemon's driver for the simulated relay board, on a real serial bus to its pty."""
    config = board(sim)
    async with SerialBus(sim.path, config.effective_baudrate) as bus:
        yield bus, make_driver(config, bus)


# --- a driver over a real pseudo-terminal --------------------------------------------------------


async def test_set_output_switches_the_simulated_relay(
    board_sim: Callable[..., PtySimulator],
) -> None:
    sim = board_sim("modbus-relay", locks=6)
    async with driver_on(sim) as (bus, driver):
        assert await driver.start()
        assert await driver.set_output(7, True) is None
        assert sim.relay_on(0, 7) and not sim.relay_on(0, 8)
        assert driver.outputs == {7: True}
        reply = await bus.transact(
            driver.codec.relays_request(), reply=True, timeout_ms=80, quiet_gap_ms=10
        )
        assert reply is not None
        assert [n for n, on in ModbusRelayCodec(1).decode_relays(reply).items() if on] == [7]
        await driver.set_output(7, False)
        assert not sim.relay_on(0, 7)
        assert sim.relays(0) == dict.fromkeys(range(1, 9), False)
        assert sim.total_unlocks() == 0  # the doors' locks were never touched
        readings = await driver.poll()
        assert readings is not None and all(r.door_closed for r in readings.values())


async def test_restart_frames_switch_relays_off_then_the_driver_holds_its_outputs_again(
    board_sim: Callable[..., PtySimulator],
) -> None:
    sim = board_sim("modbus-relay", locks=6)
    async with driver_on(sim) as (_, driver):
        assert await driver.start()
        await driver.set_output(8, True)
        await driver.set_output(7, True)
        await driver.set_output(7, False)
        before = sim.requests_seen()
        assert await driver.start()  # all relays off, then channel 8 held on again
        assert sim.requests_seen() == before + 2
        assert sim.relays(0) == {**dict.fromkeys(range(1, 9), False), 8: True}


async def test_set_output_to_a_silent_board_is_an_error_and_heals_after_it_answers(
    board_sim: Callable[..., PtySimulator],
) -> None:
    sim = board_sim("modbus-relay", locks=6)
    async with driver_on(sim) as (_, driver):
        sim.set_silent(True)
        assert await driver.start() is False
        with pytest.raises(OutputError, match="board 'b0': no answer to output 7 on"):
            await driver.set_output(7, True)
        assert not sim.relay_on(0, 7)
        sim.set_silent(False)
        assert await driver.poll() is not None  # start-up frames again, then output 7 held on
        assert sim.relay_on(0, 7)
        sim.set_garbage(True)
        with pytest.raises(OutputError, match="bad answer to output 7 off"):
            await driver.set_output(7, False)


async def test_set_output_refuses_a_channel_the_board_does_not_have(
    board_sim: Callable[..., PtySimulator],
) -> None:
    sim = board_sim("modbus-relay")
    async with driver_on(sim) as (_, driver):
        with pytest.raises(ValueError, match=r"relay channel must be 1\.\.8, got 9"):
            await driver.set_output(9, True)
        assert sim.requests_seen() == 0 and driver.outputs == {}


@pytest.mark.parametrize("protocol", ["kerong-cu16", "kerong-cu48"])
async def test_kerong_driver_refuses_set_output(
    board_sim: Callable[..., PtySimulator], protocol: str
) -> None:
    sim = board_sim(protocol)
    async with driver_on(sim) as (_, driver):
        with pytest.raises(OutputUnsupportedError, match=f"{protocol} boards have no held outputs"):
            await driver.set_output(1, True)
        assert sim.requests_seen() == 0 and sim.total_unlocks() == 0
    with pytest.raises(ValueError, match="no held relays"):
        sim.relay_on(0, 1)
