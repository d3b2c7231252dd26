"""Drivers over real serial I/O: a pty to the board simulator, and a socket:// URL.

Nothing is mocked: the SerialBus opens the pty slave (or a TCP socket) with pyserial-asyncio and
the simulator answers in the real protocol from its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from board_sim.bus import SimBus
from board_sim.simulator import PtySimulator
from daemon.config import BoardConfig
from daemon.io.boards import (
    BoardDriver,
    BoardPortError,
    BusError,
    SerialBus,
    make_buses,
    make_driver,
    open_buses,
)
from daemon.io.boards.transport import _Receiver

PROTOCOLS = ["kerong-cu16", "kerong-cu48", "modbus-relay"]
#: A simulator and a started driver per board on its one bus.
Rig = tuple[PtySimulator, list[BoardDriver]]
FAST = {"timeout_ms": 80, "quiet_gap_ms": 10, "frame_gap_ms": 2}


def configs(sim: PtySimulator, **kw: Any) -> list[BoardConfig]:
    return [
        BoardConfig(name=f"b{i}", protocol=sim.protocol, port=sim.path, address=a, **{**FAST, **kw})
        for i, a in enumerate(sim.addresses)
    ]


@pytest.fixture
async def rig(
    board_sim: Callable[..., PtySimulator], request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    """A two-board simulator of the parametrised protocol and a started driver per board."""
    sim = board_sim(request.param, boards=2)
    boards = configs(sim)
    buses = await open_buses(boards)
    drivers = [make_driver(b, buses[b.port]) for b in boards]
    for d in drivers:
        assert await d.start()
    yield sim, drivers
    for bus in buses.values():
        await bus.close()


def doors_open(readings: dict[int, Any]) -> set[int]:
    return {n for n, r in readings.items() if r.door_closed is False}


PER_PROTOCOL = pytest.mark.parametrize("rig", PROTOCOLS, indirect=True)


@PER_PROTOCOL
async def test_poll_reports_the_simulated_doors(rig: Rig) -> None:
    sim, (d0, _) = rig
    readings = await d0.poll()
    assert readings is not None and set(readings) == set(range(1, d0.locks + 1))
    assert doors_open(readings) == set()
    sim.open_door(0, 2)
    sim.open_door(0, 5)
    readings = await d0.poll()
    assert readings is not None and doors_open(readings) == {2, 5}
    sim.close_door(0, 2)
    readings = await d0.poll()
    assert readings is not None and doors_open(readings) == {5}
    assert d0.health.consecutive_failures == 0 and d0.health.last_ok_at is not None


@PER_PROTOCOL
async def test_open_sends_exactly_one_unlock_frame(
    rig: Rig,
) -> None:
    sim, (d0, _) = rig
    await d0.open(3)
    assert sim.wait_for_unlock(0, 3, timeout=2)
    readings = await d0.poll()
    assert readings is not None and doors_open(readings) == {3}
    assert sim.unlock_counts() == {(0, 3): 1}
    assert sim.door_open(0, 3)


@PER_PROTOCOL
async def test_a_stuck_lock_is_never_retried_by_the_driver(
    rig: Rig,
) -> None:
    sim, (d0, _) = rig
    sim.set_stuck(0, 4, True)
    await d0.open(4)
    for _ in range(3):
        readings = await d0.poll()
        assert readings is not None and readings[4].door_closed is True
    assert sim.unlock_counts() == {(0, 4): 1}


@PER_PROTOCOL
async def test_two_boards_share_one_bus(rig: Rig) -> None:
    sim, (d0, d1) = rig
    assert d0.bus is d1.bus
    sim.open_door(1, 1)
    await d1.open(2)
    assert sim.wait_for_unlock(1, 2, timeout=2)
    r0, r1 = await asyncio.gather(d0.poll(), d1.poll())  # the bus lock serialises them
    assert r0 is not None and r1 is not None
    assert doors_open(r0) == set()
    assert doors_open(r1) == {1, 2}
    assert sim.unlock_counts() == {(1, 2): 1}


@PER_PROTOCOL
async def test_silent_board_times_out_counts_failures_then_recovers(
    rig: Rig,
) -> None:
    sim, (d0, d1) = rig
    assert await d0.poll() is not None
    last_ok = d0.health.last_ok_at
    sim.set_silent(True, board=0)
    for n in range(1, 4):
        started = time.monotonic()
        assert await d0.poll() is None
        assert time.monotonic() - started < 0.08 + 0.15
        assert d0.health.consecutive_failures == n
    assert "no reply" in (d0.health.last_error or "")
    assert d0.health.last_ok_at == last_ok
    assert await d1.poll() is not None  # the other board on the bus still answers
    sim.set_silent(False, board=0)
    assert await d0.poll() is not None
    assert d0.health.consecutive_failures == 0
    assert d0.health.failures == 3 and d0.health.polls == 5
    assert d0.health.as_dict()["consecutive_failures"] == 0


@PER_PROTOCOL
async def test_garbage_and_bad_checksums_give_none(
    rig: Rig,
) -> None:
    sim, (d0, _) = rig
    sim.set_garbage(True)
    for _ in range(5):
        assert await d0.poll() is None
    assert "bad reply" in (d0.health.last_error or "")
    sim.set_garbage(False)
    sim.set_bad_checksum(True)
    assert await d0.poll() is None
    assert "bad" in (d0.health.last_error or "")
    sim.set_bad_checksum(False)
    assert await d0.poll() is not None
    assert d0.health.consecutive_failures == 0


@PER_PROTOCOL
async def test_bus_survives_the_client_reopening_the_pty(
    rig: Rig,
) -> None:
    """What a daemon restarted after kill -9 does: a new process opens the same path."""
    sim, (d0, _) = rig
    await d0.bus.close()
    fresh = SerialBus(sim.path, d0.bus.baudrate)
    driver = BoardDriver(d0.config, fresh, d0.codec)
    try:
        assert await driver.poll() is not None
    finally:
        await fresh.close()


# --- not parametrised by protocol ------------------------------------------------------------


@pytest.mark.parametrize("rig", ["kerong-cu16"], indirect=True)
async def test_start_sets_the_pulse_and_unsupported_locks_are_refused(
    rig: Rig,
) -> None:
    sim, (d0, _) = rig
    assert sim.pulse_ms(0) == 500
    with pytest.raises(ValueError):
        await d0.open(17)


async def test_a_missing_port_is_a_clear_error() -> None:
    board = BoardConfig(name="x", protocol="kerong-cu16", port="/dev/ttyNOPE9")
    with pytest.raises(BoardPortError, match="/dev/ttyNOPE9") as info:
        await open_buses([board])
    assert info.value.port == "/dev/ttyNOPE9"
    assert isinstance(info.value, BusError)


async def test_boards_on_one_port_must_agree_on_the_baud_rate() -> None:
    a = BoardConfig(name="a", protocol="kerong-cu16", port="/dev/x")
    b = BoardConfig(name="b", protocol="modbus-relay", port="/dev/x", address=1)
    with pytest.raises(BoardPortError, match="baud"):
        make_buses([a, b])


class NetBoard:
    """A tiny RS485-to-Ethernet converter with a simulated bus behind it (asyncio TCP server)."""

    def __init__(self, protocol: str) -> None:
        self.bus = SimBus(protocol, boards=1)
        self.connections: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"socket://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        self.connections.append(writer)
        writer.write(b"\x00\xff\x13")  # line noise on connect: must be dropped as stale input
        try:
            while data := await reader.read(256):
                for reply in self.bus.feed(data, time.monotonic()):
                    writer.write(reply)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self.connections:
                writer.close()
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 2)
            await self._server.wait_closed()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_socket_url_reaches_a_networked_board(protocol: str) -> None:
    net = NetBoard(protocol)
    url = await net.start()
    board = BoardConfig(
        name="net", protocol=protocol, port=url, address=net.bus.boards[0].address, **FAST
    )
    buses = await open_buses([board])
    try:
        driver = make_driver(board, buses[url])
        await asyncio.sleep(0.02)
        net.bus.boards[0].state[1].open = True
        readings = await driver.poll()
        assert readings is not None and doors_open(readings) == {2}
        await driver.open(1)
        readings = await driver.poll()
        assert readings is not None and doors_open(readings) == {1, 2}
        assert net.bus.unlocks == {(0, 1): 1}
    finally:
        for bus in buses.values():
            await bus.close()
        await net.stop()


async def test_a_dropped_socket_is_reopened_and_a_dead_one_fails_the_poll() -> None:
    net = NetBoard("kerong-cu16")
    url = await net.start()
    board = BoardConfig(name="net", protocol="kerong-cu16", port=url, **FAST)
    bus = make_buses([board])[url]
    driver = make_driver(board, bus)
    try:
        assert await driver.poll() is not None  # the bus opens on first use
        net.connections[0].close()  # the converter drops the link
        await asyncio.sleep(0.05)
        assert await driver.poll() is not None
        assert len(net.connections) == 2
        await net.stop()  # the converter is gone for good
        await asyncio.sleep(0.05)
        assert await driver.poll() is None
        assert url in (driver.health.last_error or "")
        assert driver.health.consecutive_failures == 1
    finally:
        await bus.close()
        await net.stop()


async def test_start_frames_are_resent_once_a_silent_board_answers(
    board_sim: Callable[..., PtySimulator],
) -> None:
    sim = board_sim("kerong-cu16")
    sim.set_silent(True)
    (board,) = configs(sim, pulse_ms=1000)
    ticks = iter(range(1000, 10_000, 1000))
    async with SerialBus(sim.path, board.effective_baudrate) as bus:
        driver = make_driver(board, bus, clock_ms=lambda: next(ticks))
        assert await driver.start() is False
        assert sim.pulse_ms(0) is None
        sim.set_silent(False)
        assert await driver.poll() is not None
        assert sim.pulse_ms(0) == 1000
        assert driver.health.last_ok_at == 1000
        assert await driver.poll() is not None
        assert driver.health.last_ok_at == 2000


@pytest.mark.parametrize(
    ("protocol", "ack"), [("kerong-cu16", None), ("kerong-cu48", True), ("modbus-relay", True)]
)
async def test_open_reports_the_advisory_answer(
    board_sim: Callable[..., PtySimulator], protocol: str, ack: bool | None
) -> None:
    sim = board_sim(protocol)
    (board,) = configs(sim)
    async with SerialBus(sim.path, board.effective_baudrate) as bus:
        driver = make_driver(board, bus)
        assert await driver.open(2) is ack
        sim.set_garbage(True)
        if ack is not None:
            assert await driver.open(3) is False  # advisory only: the frame went out
        assert sim.wait_for_unlock(0, 2, timeout=2)
        assert sim.unlock_count(0, 3) == (0 if ack is None else 1)


class _PipePort:
    """The write end of a real pipe, where the bus expects a serial port's descriptor."""

    def __init__(self) -> None:
        self.read_fd, self.fd = os.pipe()
        os.set_blocking(self.fd, False)
        self.queued: list[bytes] = []
        self.aborted = False

    # the slice of asyncio.Transport the bus writes through
    def get_extra_info(self, name: str) -> Any:
        return self if name == "serial" else None

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.queued))

    def write(self, data: bytes) -> None:
        self.queued.append(data)

    def abort(self) -> None:
        self.aborted = True


def test_a_request_goes_straight_to_the_port_and_a_full_one_queues_the_rest() -> None:
    port, bus = _PipePort(), SerialBus("/dev/pipe", 9600)
    bus._write(port, b"\x02\x00\x30\x03")  # type: ignore[arg-type]
    assert os.read(port.read_fd, 16) == b"\x02\x00\x30\x03" and port.queued == []
    with contextlib.suppress(BlockingIOError):
        while True:  # a line whose output buffer is full
            os.write(port.fd, b"\x00" * 4096)
    bus._write(port, b"\x02\x00\x31\x03")  # type: ignore[arg-type]
    assert port.queued == [b"\x02\x00\x31\x03"]  # left to the transport, nothing lost


def test_a_port_that_fails_a_write_is_a_bus_error_and_is_reopened() -> None:
    port, bus = _PipePort(), SerialBus("/dev/pipe", 9600)
    bus._transport, bus._receiver = port, _Receiver()  # type: ignore[assignment]
    assert bus.is_open
    os.close(port.read_fd)  # the adapter is gone: EPIPE, like EIO from an unplugged USB one
    with pytest.raises(BusError, match="write failed"):
        bus._write(port, b"\x02\x00\x30\x03")  # type: ignore[arg-type]
    assert port.aborted and not bus.is_open
    os.close(port.fd)
