"""The static description of a locker the machines are built from: cells and timer lengths.

Kept apart from `daemon.config` (which fsm may not import): the app maps its validated TOML onto
these two small value types.
"""

from __future__ import annotations

from dataclasses import dataclass

SIZES = ("S", "M", "L")


@dataclass(frozen=True)
class CellSpec:
    """One cell: its id, the board and 1-based lock number that drive it, and its size."""

    id: int
    board: str
    lock: int
    size: str

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"cell {self.id}: size must be one of {SIZES}, got {self.size!r}")
        if self.lock < 1:
            raise ValueError(f"cell {self.id}: lock numbers start at 1, got {self.lock}")


@dataclass(frozen=True)
class Timing:
    """Timer lengths in milliseconds (docs/architecture.md cell rules 1, 3, 7, 8, 9)."""

    open_timeout_ms: int = 60_000
    unlock_confirm_ms: int = 3_000
    door_left_open_ms: int = 120_000
    storage_limit_ms: int = 72 * 3600 * 1000
    offline_after_polls: int = 3

    def __post_init__(self) -> None:
        for name in ("open_timeout_ms", "unlock_confirm_ms", "door_left_open_ms",
                     "storage_limit_ms", "offline_after_polls"):
            if getattr(self, name) <= 0:
                raise ValueError(f"timing.{name} must be positive, got {getattr(self, name)}")
