"""The board simulators: byte-exact answers, stream framing, fault switches, the pty and the CLI."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from board_sim.bus import SimBus
from board_sim.control import execute
from board_sim.simulator import PtySimulator
from daemon.config import BoardConfig
from daemon.io.boards import SerialBus, make_driver
from daemon.io.boards.checksums import with_crc16
from daemon.io.boards.kerong_cu16 import Cu16Codec
from daemon.io.boards.kerong_cu48 import Cu48Codec
from daemon.io.boards.modbus_relay import ModbusRelayCodec

ROOT = Path(__file__).resolve().parents[1]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def only_closed(bus: SimBus, closed: set[int]) -> None:
    board = bus.boards[0]
    for n in range(1, board.locks + 1):
        board.state[n - 1].open = n not in closed


# --- pure models: the documented example replies ---------------------------------------------


def test_cu16_model_answers_the_documented_status_frame() -> None:
    bus = SimBus("kerong-cu16")
    only_closed(bus, {1, 3})
    bus.boards[0].state[0].item = True
    assert bus.feed(h("02 00 30 03 35"), 0.0) == [h("02 00 35 05 00 01 00 03 40")]


def test_cu48_model_answers_the_documented_status_frame() -> None:
    bus = SimBus("kerong-cu48")
    only_closed(bus, {14})
    expected = h("02 00 00 75 00 20 00 00 00 00 00 00 00 00 00 00 03 9A")
    assert bus.feed(h("02 00 00 60 03 65"), 0.0) == [expected]


def test_modbus_model_answers_the_documented_frames() -> None:
    bus = SimBus("modbus-relay")
    only_closed(bus, {1, 3})
    assert bus.feed(h("01 02 00 00 00 08 79 CC"), 0.0) == [h("01 02 01 05 61 8B")]
    assert bus.feed(h("01 05 00 FF 00 00 FD FA"), 0.0) == [h("01 05 00 FF 00 00 FD FA")]
    assert bus.feed(h("01 05 02 00 00 02 4D B3"), 0.0) == [h("01 05 02 00 00 02 4D B3")]
    assert bus.boards[0].pulse_ms == 200 and bus.unlocks == {(0, 1): 1}
    assert bus.feed(with_crc16(h("01 03 00 00 00 01")), 0.0) == [with_crc16(h("01 83 01"))]


def test_cu16_unlock_has_no_answer_and_pulse_is_acknowledged() -> None:
    bus = SimBus("kerong-cu16", boards=2)
    assert bus.feed(h("02 12 31 03 48"), 1.0) == []
    assert bus.unlocks == {(1, 3): 1} and bus.boards[1].state[2].open
    assert bus.feed(h("02 00 37 00 32 03 6E"), 1.0) == [h("02 00 38 03 3D")]
    assert bus.boards[0].pulse_ms == 500


def test_stream_framing_skips_noise_and_splits_bursts() -> None:
    bus = SimBus("kerong-cu16", boards=2)
    status0, status1 = Cu16Codec(0).status_request(), Cu16Codec(1).status_request()
    assert bus.feed(b"\xff\x00" + status0[:2], 0.0) == []
    assert len(bus.feed(status0[2:] + status1, 0.0)) == 2
    assert bus.feed(h("02 00 30 03 36"), 0.0) == []  # bad checksum: ignored like a real board
    assert bus.requests == 2


def test_requests_for_absent_boards_get_no_answer() -> None:
    bus = SimBus("kerong-cu48", addresses=[3])
    assert bus.feed(Cu48Codec(0).status_request(), 0.0) == []
    assert len(bus.feed(Cu48Codec(3).status_request(), 0.0)) == 1


def test_fault_switches() -> None:
    bus = SimBus("modbus-relay", seed=1)
    codec = ModbusRelayCodec(1)
    bus.bad_checksum = True
    (reply,) = bus.feed(codec.status_request(), 0.0)
    with pytest.raises(ValueError, match="CRC"):
        codec.decode_status(reply)
    bus.bad_checksum, bus.garbage = False, True
    (reply,) = bus.feed(codec.status_request(), 0.0)
    assert reply != h("01 02 01 FF") and len(reply) <= 24
    bus.garbage, bus.silent = False, True
    assert bus.feed(codec.unlock_request(2), 0.0) == []
    assert bus.unlocks == {(0, 2): 1}  # seen on the line, but a dead board does nothing
    assert not bus.boards[0].state[1].open


def test_stuck_locks_and_auto_close() -> None:
    bus = SimBus("kerong-cu16", auto_close_ms=500)
    codec = Cu16Codec(0)
    bus.boards[0].state[0].stuck = True
    bus.feed(codec.unlock_request(1) + codec.unlock_request(2), 10.0)
    assert bus.unlocks == {(0, 1): 1, (0, 2): 1}
    assert not bus.boards[0].state[0].open and bus.boards[0].state[1].open
    bus.tick(10.4)
    assert bus.boards[0].state[1].open
    bus.tick(10.5)
    assert not bus.boards[0].state[1].open


# --- the pty ---------------------------------------------------------------------------------


def read_reply(fd: int, timeout: float = 2.0) -> bytes:
    data = b""
    while select.select([fd], [], [], timeout if not data else 0.05)[0]:
        try:
            chunk = os.read(fd, 256)
        except OSError:  # EIO: the simulator closed its side
            break
        if not chunk:
            break
        data += chunk
    return data


def test_pty_is_raw_and_survives_clients_coming_and_going(
    board_sim: Callable[..., PtySimulator],
) -> None:
    """CR and LF bytes cross unchanged both ways (no line discipline), whoever opens the path."""
    sim = board_sim("kerong-cu16")
    for lock in (1, 3, 4, 10, 12):  # item bytes 0x0D 0x0A
        sim.set_item(0, lock, True)
    for attempt in range(1, 4):  # a daemon opening the port, dying, a new one reopening it
        fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, Cu16Codec(0).unlock_request(11))  # 02 0A 31 03 40
            os.write(fd, h("02 00 30 03 35"))
            reply = read_reply(fd)
        finally:
            os.close(fd)
        assert reply == h("02 00 35 FF FB 0D 0A 03 4B")
        assert sim.unlock_count(0, 11) == attempt
        sim.close_door(0, 11)


def test_control_methods_and_wait_for_unlock(board_sim: Callable[..., PtySimulator]) -> None:
    sim = board_sim("kerong-cu48", boards=2, locks=24)
    assert sim.addresses == [0, 1] and sim.locks == 24
    assert not sim.wait_for_unlock(1, 7, timeout=0.05)

    def client() -> None:
        fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY)
        os.write(fd, Cu48Codec(1).unlock_request(7))
        read_reply(fd)
        os.close(fd)

    thread = threading.Thread(target=client)
    thread.start()
    assert sim.wait_for_unlock(1, 7, timeout=2)
    thread.join(5)
    assert sim.unlock_count(1, 7) == 1 and sim.total_unlocks() == 1
    assert sim.door_open(1, 7)
    sim.close_door(1, 7)
    sim.force_open(0, 24)
    assert sim.doors(0)[24] and not sim.doors(1)[7]
    with pytest.raises(ValueError):
        sim.open_door(0, 25)
    with pytest.raises(ValueError):
        sim.open_door(2, 1)
    with pytest.raises(ValueError, match="item"):
        board_sim("modbus-relay").set_item(0, 1, True)


def test_command_language(board_sim: Callable[..., PtySimulator]) -> None:
    sim = board_sim("kerong-cu16", boards=2)
    assert execute(sim, "open 3") == "ok" and sim.door_open(0, 3)
    assert execute(sim, "open 1 5") == "ok" and sim.door_open(1, 5)
    assert execute(sim, "close 3") == "ok" and not sim.door_open(0, 3)
    assert execute(sim, "stuck 1 2") == "ok" and sim.snapshot()[1].locks[1].stuck
    assert execute(sim, "stuck 1 2 off") == "ok" and not sim.snapshot()[1].locks[1].stuck
    assert execute(sim, "item 4 on") == "ok" and sim.snapshot()[0].locks[3].item
    assert execute(sim, "silent on 1") == "ok" and sim.bus.boards[1].silent
    assert execute(sim, "silent off") == "ok" and not sim.bus.silent
    assert execute(sim, "garbage on") == "ok" and sim.bus.garbage
    assert execute(sim, "badsum on") == "ok" and sim.bus.bad_checksum
    assert execute(sim, "autoclose 200") == "ok" and sim.bus.auto_close_ms == 200
    assert "board 1 addr 1 silent:" in execute(sim, "status")
    assert execute(sim, "open 17").startswith("error")
    assert execute(sim, "fly away").startswith("error unknown command")
    assert execute(sim, "garbage maybe").startswith("error")
    assert "quit" in execute(sim, "help")


# --- the locker-sim program ------------------------------------------------------------------


def start_cli(*args: str, stdin: int | None = subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "board_sim.cli", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PTY "):
            return proc, line.split()[1]
        if not line:
            break
    proc.kill()
    raise AssertionError(f"no PTY line; stderr: {proc.communicate()[1]}")


async def test_cli_open_on_stdin_is_seen_by_a_driver() -> None:
    proc, path = start_cli("--protocol", "kerong-cu16", "--boards", "2", "--locks", "16")
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert path.startswith("/dev/")
        board = BoardConfig(name="b0", protocol="kerong-cu16", port=path, timeout_ms=200)
        async with SerialBus(path, board.effective_baudrate) as bus:
            driver = make_driver(board, bus)
            readings = await driver.poll()
            assert readings is not None and readings[3].door_closed is True
            proc.stdin.write("open 3\n")
            proc.stdin.flush()
            assert await asyncio.to_thread(proc.stdout.readline) == "ok\n"
            readings = await driver.poll()
            assert readings is not None and readings[3].door_closed is False
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_without_stdin_runs_until_sigterm_and_obeys_its_control_socket(
    tmp_path: Path,
) -> None:
    control = tmp_path / "sim.sock"
    proc, path = start_cli(
        "--protocol", "modbus-relay", "--control", str(control), stdin=subprocess.DEVNULL
    )
    try:
        assert os.path.exists(path)
        time.sleep(0.2)
        assert proc.poll() is None  # EOF on stdin is not a reason to stop
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(control))
            f = s.makefile("rw")
            f.write("open 2\nstatus\n")
            f.flush()
            assert f.readline() == "ok\n"
            assert f.readline().startswith("board 0 addr 1: . o")
            assert f.readline() == "ok\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not control.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
