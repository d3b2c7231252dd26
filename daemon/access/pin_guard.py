"""PIN guessing defence of the kiosk, sans-I/O: time is passed in, the caller does the waiting.

Two limits: a cell whose PIN was typed wrong `cell_attempts` times in a row refuses PIN entry for
`cell_lockout_ms`; and once the whole kiosk has seen `kiosk_free_failures` wrong PINs within
`kiosk_window_ms` (someone walking the cells), every PIN answer is delayed, one step longer per
further failure, up to `kiosk_max_delay_ms`. A right PIN clears its cell's count.

What is kept is bounded whatever the number of tries, because the caller stores it after every
failure: one count per cell, and only the latest kiosk-wide failure times that can still change
the delay (once the delay has reached its maximum, older failures add nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GuardPolicy:
    cell_attempts: int = 5
    cell_lockout_ms: int = 5 * 60_000
    kiosk_free_failures: int = 10
    kiosk_window_ms: int = 10 * 60_000
    kiosk_delay_step_ms: int = 1_000
    kiosk_max_delay_ms: int = 10_000

    @property
    def kept_failures(self) -> int:
        """Kiosk-wide failure times worth keeping: enough for the delay to reach its maximum."""
        if self.kiosk_delay_step_ms <= 0 or self.kiosk_max_delay_ms <= 0:
            return 0  # the delay is always 0
        steps = -(-self.kiosk_max_delay_ms // self.kiosk_delay_step_ms)
        return self.kiosk_free_failures - 1 + steps


@dataclass
class _CellCount:
    failures: int = 0
    locked_until: int | None = None


@dataclass
class PinGuard:
    policy: GuardPolicy = field(default_factory=GuardPolicy)
    _cells: dict[int, _CellCount] = field(default_factory=dict)
    _recent: list[int] = field(default_factory=list)

    def locked_until(self, cell: int, now_ms: int) -> int | None:
        """When PIN entry on `cell` opens again, or None if it is open now."""
        count = self._cells.get(cell)
        if count is None or count.locked_until is None:
            return None
        if now_ms >= count.locked_until:
            self._cells.pop(cell, None)  # the lockout served its time: a fresh count
            return None
        return count.locked_until

    def delay_ms(self, now_ms: int) -> int:
        """How long to hold the next PIN answer back (0 until the kiosk saw many failures)."""
        self._forget(now_ms)
        over = len(self._recent) - self.policy.kiosk_free_failures + 1
        if over <= 0:
            return 0
        return min(self.policy.kiosk_max_delay_ms, over * self.policy.kiosk_delay_step_ms)

    def failed(self, cell: int, now_ms: int) -> int | None:
        """Count a wrong PIN; returns the lockout's end if this failure locked the cell."""
        self.failed_elsewhere(now_ms)
        count = self._cells.setdefault(cell, _CellCount())
        count.failures += 1
        if count.failures >= self.policy.cell_attempts:
            count.locked_until = now_ms + self.policy.cell_lockout_ms
            return count.locked_until
        return None

    def failed_elsewhere(self, now_ms: int) -> None:
        """Count a wrong PIN for the kiosk-wide delay only (a cell number the locker lacks)."""
        self._forget(now_ms)
        self._recent.append(now_ms)
        del self._recent[: -self.policy.kept_failures or len(self._recent)]

    def attempts_left(self, cell: int) -> int:
        count = self._cells.get(cell)
        return self.policy.cell_attempts - (count.failures if count else 0)

    def succeeded(self, cell: int) -> None:
        self._cells.pop(cell, None)

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped: keep lockouts as long as they were meant to last."""
        for count in self._cells.values():
            if count.locked_until is not None:
                count.locked_until += delta_ms
        self._recent = [t + delta_ms for t in self._recent]

    def snapshot(self) -> dict:
        """JSON-ready state, so a restart (or a pulled plug) does not lift a lockout."""
        return {
            "cells": {str(c): [n.failures, n.locked_until] for c, n in self._cells.items()},
            "recent": list(self._recent),
        }

    def restore(self, snapshot: dict) -> None:
        """Take a snapshot back; a malformed one is ignored (the guard starts empty)."""
        try:
            cells = {int(c): _CellCount(int(f), None if u is None else int(u))
                     for c, (f, u) in snapshot["cells"].items()}
            recent = [int(t) for t in snapshot["recent"]]
        except (KeyError, TypeError, ValueError):
            return
        kept = self.policy.kept_failures
        self._cells, self._recent = cells, (recent[-kept:] if kept else [])

    def _forget(self, now_ms: int) -> None:
        start = now_ms - self.policy.kiosk_window_ms
        self._recent = [t for t in self._recent if t > start]
