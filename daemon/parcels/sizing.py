"""Which cell a parcel gets: best fit by size, on the one allocator every business uses.

A small parcel may take S, M or L, a medium M or L, a large only L: the smallest free parcel cell
at least as large as the size chosen (daemon/fsm/allocation.py with `smallest_fitting`). When the
chosen size is full the answer says which larger size was given, so the kiosk can offer it; none
at all is a clear refusal, never a cell of another business.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from daemon.fsm.allocation import Candidate, allocate


class NoCell(Exception):
    """No free parcel cell of this size or larger; `size` is what was asked."""

    def __init__(self, size: str) -> None:
        super().__init__(f"no free cell for a parcel of size {size}")
        self.size = size


@dataclass(frozen=True)
class Offer:
    cell: int
    size: str
    #: The chosen size was full: this is the next size up.
    larger: bool


def offer_cell(cells: Sequence[Candidate], size: str,
               reserved: Container[int] = ()) -> Offer:
    """The cell to open for a parcel of `size`; NoCell if none fits."""
    cell_id = allocate(cells, "parcels", size, smallest_fitting=True, reserved=reserved)
    if cell_id is None:
        raise NoCell(size)
    given = next(c.size for c in cells if c.id == cell_id)
    return Offer(cell_id, given, given != size)
