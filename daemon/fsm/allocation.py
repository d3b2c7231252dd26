"""Which cell a business gets: one pure rule for every business on the locker.

A cell can be given out when the profile says the asking business serves it, it is free, not
blocked, has no open pending, and its door is known to be closed (a door that reads open or
unknown may hide someone's things). Of those, the requested size; or, when asked for the smallest
that fits, the smallest size at least as large. Among equals, the cell listed first.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from daemon.fsm.lifecycle import FREE
from daemon.fsm.spec import SIZES


@dataclass(frozen=True)
class Candidate:
    """One cell as the allocator sees it."""

    id: int
    size: str
    #: The business the profile gives the cell to (None: no cell group covers it).
    business: str | None
    state: str
    door: str
    pending: bool


def available(cell: Candidate, business: str, reserved: Container[int] = ()) -> bool:
    """The cell could be given to `business` now (size aside)."""
    return (
        cell.business == business
        and cell.state == FREE
        and cell.door == "closed"
        and not cell.pending
        and cell.id not in reserved
    )


def allocate(
    cells: Iterable[Candidate],
    business: str,
    size: str,
    *,
    smallest_fitting: bool = False,
    reserved: Container[int] = (),
) -> int | None:
    """The id of the cell to give out, or None if no cell fits; ValueError for an unknown size."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    wanted = SIZES.index(size)
    best: tuple[int, int] | None = None  # (size rank, position)
    chosen = None
    for position, cell in enumerate(cells):
        if not available(cell, business, reserved):
            continue
        rank = SIZES.index(cell.size)
        if rank != wanted and not (smallest_fitting and rank > wanted):
            continue
        if best is None or (rank, position) < best:
            best, chosen = (rank, position), cell.id
    return chosen
