"""A simulated RS485 line: request framing, the boards on it, fault switches, an unlock log.

Pure like the board models: bytes and the time (`now`, monotonic seconds) in, reply bytes out.
The byte stream is cut into requests by each protocol's framing (the length follows from the
header); a byte that cannot start a request, or a frame whose checksum fails, is skipped one byte
at a time, as a board resynchronises. Every unlock frame seen on the line is counted per
(board index, lock) whatever the fault switches say, so tests can assert that none was sent.
"""

from __future__ import annotations

import copy
import random
from collections import Counter

from board_sim.boards import BOARD_TYPES, SimBoard

#: Longest request any protocol here uses; a buffer that cannot hold one is resynchronised.
MAX_REQUEST = 16


class SimBus:
    """Boards sharing one line, with switches for silence, garbage and corrupt checksums."""

    def __init__(
        self,
        protocol: str,
        boards: int = 1,
        locks: int | None = None,
        addresses: list[int] | None = None,
        *,
        door_closed_bit: int = 1,
        auto_close_ms: int | None = None,
        seed: int | None = None,
    ) -> None:
        if protocol not in BOARD_TYPES:
            raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(BOARD_TYPES)})")
        board_type = BOARD_TYPES[protocol]
        if addresses is None:
            first = 1 if protocol == "modbus-relay" else 0
            addresses = list(range(first, first + boards))
        if len(addresses) != boards:
            raise ValueError(f"{boards} boards need {boards} addresses, got {addresses}")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"board addresses must differ, got {addresses}")
        self.protocol = protocol
        self.board_type = board_type
        self.boards: list[SimBoard] = [
            board_type(a, locks, door_closed_bit=door_closed_bit) for a in addresses
        ]
        self.auto_close_ms = auto_close_ms
        self.silent = False
        self.garbage = False
        self.bad_checksum = False
        self.unlocks: Counter[tuple[int, int]] = Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._buffer = bytearray()

    def board(self, index: int) -> SimBoard:
        if not 0 <= index < len(self.boards):
            raise ValueError(f"board must be 0..{len(self.boards) - 1}, got {index}")
        return self.boards[index]

    def tick(self, now: float) -> None:
        """Close the doors whose auto-close delay has run out."""
        if self.auto_close_ms is None:
            return
        limit = now - self.auto_close_ms / 1000
        for board in self.boards:
            for lock in board.state:
                if lock.open and lock.opened_at <= limit:
                    lock.open = False

    def drop_partial(self) -> None:
        """Forget a half-received request (the line went quiet in the middle of it)."""
        self._buffer.clear()

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Take bytes from the host; return the replies to send back, in order."""
        self.tick(now)
        self._buffer += data
        replies = []
        while self._buffer:
            need = self.board_type.request_length(bytes(self._buffer[:MAX_REQUEST]))
            if need is None or (need and len(self._buffer) < need):
                break
            frame = bytes(self._buffer[:need])
            if not need or not self.board_type.request_valid(frame):
                del self._buffer[0]
                continue
            del self._buffer[:need]
            reply = self._dispatch(frame, now)
            if reply is not None:
                replies.append(reply)
        return replies

    def _dispatch(self, frame: bytes, now: float) -> bytes | None:
        self.requests += 1
        for index, board in enumerate(self.boards):
            if not board.addressed(frame):
                continue
            if self.silent or board.silent:
                # A dead board does nothing, but the frame was on the wire: count the unlocks it
                # asked for, worked out on a throwaway copy so the board's state stays put.
                handled = copy.deepcopy(board).handle(frame, now)
                self.unlocks.update((index, n) for n in handled.unlocked)
                return None
            handled = board.handle(frame, now)
            self.unlocks.update((index, n) for n in handled.unlocked)
            return self._fault(handled.reply)
        return None

    def _fault(self, reply: bytes | None) -> bytes | None:
        if reply is None:
            return None
        if self.garbage:
            return self._rng.randbytes(self._rng.randint(1, 24))
        if self.bad_checksum:
            return reply[:-1] + bytes((reply[-1] ^ 0x5A,))
        return reply
