"""A board simulator on a pseudo-terminal: real serial I/O for tests, the demo and benchmarks.

`PtySimulator` opens a pty, puts it in raw mode and serves the master side from a background
thread with a SimBus; whoever opens `sim.path` (the daemon, a test's SerialBus) talks to it exactly
as to an RS485 adapter. The simulator keeps its own slave descriptor open so the pty never hangs
up when the client closes it: a daemon killed with -9 can reopen the same path and carry on.
All control methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import selectors
import threading
import time
import tty
from types import TracebackType

from board_sim.boards import ModbusRelayBoard, SimLock
from board_sim.bus import SimBus


@dataclasses.dataclass(frozen=True)
class BoardView:
    """A copy of one simulated board's state."""

    index: int
    address: int
    silent: bool
    locks: list[SimLock]


log = logging.getLogger(__name__)

#: A half-received request older than this is dropped (a board resynchronises on silence).
RESYNC_SILENCE_S = 0.05


class PtySimulator:
    """One simulated bus (one pty) with `boards` boards; boards are named by index 0..n-1.

    Default addresses: 0, 1, ... for Kerong boards, 1, 2, ... for Modbus slaves.
    `locks=None` models every lock the protocol has (16, 48 or 8).
    """

    def __init__(
        self,
        protocol: str = "kerong-cu16",
        boards: int = 1,
        locks: int | None = None,
        addresses: list[int] | None = None,
        *,
        door_closed_bit: int = 1,
        auto_close_ms: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.bus = SimBus(
            protocol,
            boards,
            locks,
            addresses,
            door_closed_bit=door_closed_bit,
            auto_close_ms=auto_close_ms,
            seed=seed,
        )
        self.protocol = protocol
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._master = -1
        self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.path = ""

    @property
    def addresses(self) -> list[int]:
        return [b.address for b in self.bus.boards]

    @property
    def locks(self) -> int:
        return self.bus.boards[0].locks

    # --- life cycle ---

    def start(self) -> PtySimulator:
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=f"sim {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> PtySimulator:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            self._serve_forever()
        except Exception:  # a dead simulator must say why, not just fall silent
            log.exception("simulator on %s stopped", self.path)
            raise

    def _serve_forever(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._master, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            last_input = time.monotonic()
            while not self._stopping:
                timeout = RESYNC_SILENCE_S if self.bus.pending else None
                events = selector.select(timeout)
                now = time.monotonic()
                if not events:
                    if now - last_input >= RESYNC_SILENCE_S:
                        with self._lock:
                            self.bus.drop_partial()
                    continue
                for key, _ in events:
                    if key.fd != self._master:
                        continue
                    try:
                        data = os.read(self._master, 4096)
                    except OSError as exc:  # EIO cannot happen while we hold the slave
                        if exc.errno not in (errno.EAGAIN, errno.EIO):
                            raise
                        time.sleep(0.01)
                        continue
                    last_input = now
                    with self._lock:
                        before = sum(self.bus.unlocks.values())
                        replies = self.bus.feed(data, now)
                        if sum(self.bus.unlocks.values()) != before:
                            self._changed.notify_all()
                    for reply in replies:
                        self._write(reply)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1
        while view and time.monotonic() < deadline:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:  # nobody reads the slave: its queue is full
                time.sleep(0.001)

    # --- run-time control (thread-safe) ---

    def _lock_state(self, board: int, lock: int) -> SimLock:
        self.bus.tick(time.monotonic())
        return self.bus.board(board).lock(lock)

    def open_door(self, board: int, lock: int) -> None:
        """Open the door by hand (no unlock frame): the sensor reports it open."""
        with self._lock:
            state = self._lock_state(board, lock)
            if not state.open:
                state.open, state.opened_at = True, time.monotonic()

    def force_open(self, board: int, lock: int) -> None:
        """A door forced open without any unlock (stuck or not): what the forced_open alarm sees."""
        self.open_door(board, lock)

    def close_door(self, board: int, lock: int) -> None:
        with self._lock:
            self._lock_state(board, lock).open = False

    def set_stuck(self, board: int, lock: int, on: bool = True) -> None:
        """A stuck lock ignores unlock pulses: the door stays closed."""
        with self._lock:
            self._lock_state(board, lock).stuck = on

    def set_item(self, board: int, lock: int, present: bool) -> None:
        with self._lock:
            b = self.bus.board(board)
            if not b.has_items:
                raise ValueError(f"{b.protocol} boards have no item sensors")
            self._lock_state(board, lock).item = present

    def set_silent(self, on: bool, board: int | None = None) -> None:
        """Stop answering: the whole bus, or one board."""
        with self._lock:
            if board is None:
                self.bus.silent = on
            else:
                self.bus.board(board).silent = on

    def set_garbage(self, on: bool) -> None:
        """Answer every request that gets an answer with random bytes."""
        with self._lock:
            self.bus.garbage = on

    def set_bad_checksum(self, on: bool) -> None:
        """Answer with the checksum (CRC) byte corrupted."""
        with self._lock:
            self.bus.bad_checksum = on

    def set_auto_close(self, ms: int | None) -> None:
        with self._lock:
            self.bus.auto_close_ms = ms

    def door_open(self, board: int, lock: int) -> bool:
        with self._lock:
            return self._lock_state(board, lock).open

    def doors(self, board: int) -> dict[int, bool]:
        """Lock -> door open, for every modelled lock of `board`."""
        with self._lock:
            self.bus.tick(time.monotonic())
            b = self.bus.board(board)
            return {n: b.state[n - 1].open for n in range(1, b.locks + 1)}

    def snapshot(self) -> list[BoardView]:
        """A copy of every board's state, for status displays."""
        with self._lock:
            self.bus.tick(time.monotonic())
            return [
                BoardView(
                    i,
                    b.address,
                    b.silent or self.bus.silent,
                    [dataclasses.replace(s) for s in b.state[: b.locks]],
                )
                for i, b in enumerate(self.bus.boards)
            ]

    def pulse_ms(self, board: int) -> int | None:
        """The pulse length the host last set (CU16 0x37 frame, Modbus pulse value)."""
        with self._lock:
            return self.bus.board(board).pulse_ms

    def relay_on(self, board: int, channel: int) -> bool:
        """Whether the Modbus board's relay `channel` (1-based) is held on (what FC01 reads)."""
        with self._lock:
            return self._relay_board(board).relay(channel)

    def relays(self, board: int) -> dict[int, bool]:
        """Channel -> held on, for every relay of a Modbus board."""
        with self._lock:
            b = self._relay_board(board)
            return {n: b.relay(n) for n in range(1, len(b.relays) + 1)}

    def _relay_board(self, board: int) -> ModbusRelayBoard:
        b = self.bus.board(board)
        if not isinstance(b, ModbusRelayBoard):
            raise ValueError(f"{b.protocol} boards have no held relays")
        return b

    def unlock_count(self, board: int, lock: int) -> int:
        """Unlock frames for (board, lock) seen on the line, whatever the fault switches said."""
        with self._lock:
            return self.bus.unlocks[(board, lock)]

    def unlock_counts(self) -> dict[tuple[int, int], int]:
        with self._lock:
            return dict(self.bus.unlocks)

    def total_unlocks(self) -> int:
        with self._lock:
            return sum(self.bus.unlocks.values())

    def requests_seen(self) -> int:
        with self._lock:
            return self.bus.requests

    def wait_for_unlock(self, board: int, lock: int, timeout: float, count: int = 1) -> bool:
        """Wait until `count` unlock frames for (board, lock) were seen in all; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.bus.unlocks[(board, lock)] >= count, timeout)
