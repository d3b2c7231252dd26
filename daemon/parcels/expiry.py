"""The pickup window that knows faults: a pure function of (window start, fault intervals, now).

A parcel waits `window_ms` of *usable* time: while its cell is blocked by a fault (lock fault,
forced open, board offline) the recipient could not have taken it, so the clock stops and
resumes when the fault clears. Reminders ("r ms before the end") move with it: a reminder is due
when the usable time left drops to r. A fault still going on (end None) stops the clock now.

Fault intervals may overlap or start before the window (only the part inside counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: A fault on the cell: [start, end) in epoch ms; end None while it lasts.
Fault = tuple[int, int | None]


def merged(faults: Iterable[Fault], start_ms: int) -> list[tuple[int, int | None]]:
    """The faults clipped to begin no earlier than `start_ms`, sorted, overlaps merged."""
    clipped = sorted(
        (max(s, start_ms), e) for s, e in faults if e is None or e > max(s, start_ms)
    )
    out: list[tuple[int, int | None]] = []
    for s, e in clipped:
        if out:
            last_s, last_e = out[-1]
            if last_e is None:
                break
            if s <= last_e:
                out[-1] = (last_s, None if e is None else max(last_e, e))
                continue
        out.append((s, e))
    return out


def paused_ms(start_ms: int, faults: Iterable[Fault], now_ms: int) -> int:
    """Time between `start_ms` and `now_ms` during which the cell was blocked by a fault."""
    total = 0
    for s, e in merged(faults, start_ms):
        if s >= now_ms:
            break
        total += min(now_ms if e is None else e, now_ms) - s
    return total


def used_ms(start_ms: int, faults: Iterable[Fault], now_ms: int) -> int:
    """Usable pickup time spent by `now_ms`."""
    return max(0, now_ms - start_ms - paused_ms(start_ms, faults, now_ms))


def due_at(start_ms: int, window_ms: int, faults: Sequence[Fault]) -> int | None:
    """When the window ends, given the faults known; None while a fault stops the clock first.

    Walks the merged faults: each one that begins before the (so far) end pushes the end out by
    its length."""
    end = start_ms + window_ms
    for s, e in merged(faults, start_ms):
        if s >= end:
            break
        if e is None:
            return None
        end += e - s
    return end


def expired(start_ms: int, window_ms: int, faults: Sequence[Fault], now_ms: int) -> bool:
    """The usable window is used up."""
    return used_ms(start_ms, faults, now_ms) >= window_ms


def reminders_due(
    start_ms: int,
    window_ms: int,
    faults: Sequence[Fault],
    now_ms: int,
    before_ms: Iterable[int],
) -> list[int]:
    """The reminders (ms before the end) whose time has come by `now_ms`, largest first.

    The caller remembers which it has sent; one already due and one left unsent after a
    restart both come back here, so none is lost."""
    left = window_ms - used_ms(start_ms, faults, now_ms)
    return sorted((b for b in before_ms if left <= b), reverse=True)
