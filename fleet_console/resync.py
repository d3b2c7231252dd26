"""Which lockers to ask for their retained state again (`lockers/{id}/resync`), and when.

Why: a broker keeps at most `max_queued_messages` for the ingest's session and drops the rest,
and it never sends retained messages again to a subscription that persists. In a connect storm
statuses and cell snapshots are lost that way, and nothing would ever bring them back. The
ingest looks at the database every `resync_check_s` (so this works after its own restart too)
and this planner says whom to ask:

- a locker it heard from (its row exists: the ingest creates rows only for what lockers send)
  with no stored status: everything;
- an online locker whose status declares more cells than it has snapshots of, or that has
  snapshots older than its status (the locker republishes every cell after each connect, right
  after its status, so an older one means the fresh copy was lost): its cells;
- a locker stored offline (its last will) that was heard from since: its status (the new
  connection's status was lost) and cells.

An offline locker is never asked (it cannot answer; it republishes everything when it comes
back). A locker must look incomplete for `grace_s` before it is asked (its status and cells
may still be on their way), is asked at most once per `retry_s` while it stays incomplete,
and the asks are paced by a token bucket of `rate_per_s`; each round's `spread_ms` is the time
the bucket takes to refill what the round used, so the answers arrive spread out as well.

Pure: fed database views and the time (epoch ms), it hands back the requests to publish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from contract.messages import MAX_RESYNC_SPREAD_MS, RESYNC_PARTS


@dataclass(frozen=True)
class LockerView:
    """What the console's database holds of one locker's retained state."""

    locker: str
    #: When its last status (online or the last will) was stored; None: never.
    status_at: int | None
    online: bool | None
    #: How many cells its online status declares (None: declares none, an older lockerd).
    declared: int | None
    #: Cell snapshots stored for it, and the oldest one's time of storing.
    cells: int = 0
    oldest_cell_at: int | None = None


@dataclass(frozen=True)
class ResyncAsk:
    """Publish a `resync` to `locker` for `what` (None: everything), answers within spread."""

    locker: str
    what: tuple[str, ...] | None
    spread_ms: int


def lacking(view: LockerView, heard_at: int | None) -> tuple[str, ...] | None:
    """The parts the console lacks of this locker: () for none, None for everything."""
    if view.status_at is None:
        return None
    if not view.online:
        if heard_at is not None and heard_at > view.status_at:
            return ("status", "cells")
        return ()
    stale = view.oldest_cell_at is not None and view.oldest_cell_at < view.status_at
    missing = view.declared is not None and view.cells < view.declared
    return ("cells",) if stale or missing else ()


class TokenBucket:
    """At most `rate_per_s` on average, bursts of at most `capacity`."""

    def __init__(self, rate_per_s: float, capacity: float, now_ms: int = 0) -> None:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and capacity >= 1")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._at = now_ms

    def take(self, wanted: int, now_ms: int) -> int:
        """How many of `wanted` may go now (taken from the bucket)."""
        elapsed = max(0, now_ms - self._at)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s / 1000)
        self._at = max(self._at, now_ms)
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted


class ResyncPlanner:
    """Remembers whom it asked and since when each locker looks incomplete."""

    def __init__(
        self, *, rate_per_s: float = 50.0, burst: float | None = None, retry_s: float = 30.0,
        grace_s: float = 10.0, now_ms: int = 0,
    ) -> None:
        self.retry_ms = int(retry_s * 1000)
        self.grace_ms = int(grace_s * 1000)
        self._bucket = TokenBucket(rate_per_s, burst or max(1.0, rate_per_s * 5), now_ms)
        self._heard: dict[str, int] = {}
        self._since: dict[str, int] = {}
        self._asked: dict[str, int] = {}

    def heard(self, lockers: Iterable[str], now_ms: int) -> None:
        """These lockers sent something (events, results): they are connected."""
        for locker in lockers:
            self._heard[locker] = now_ms

    def plan(self, views: Iterable[LockerView], now_ms: int) -> list[ResyncAsk]:
        """The requests to publish now, oldest incomplete first."""
        due: list[tuple[int, str, tuple[str, ...] | None]] = []
        incomplete: set[str] = set()
        for view in views:
            parts = lacking(view, self._heard.get(view.locker))
            if parts == ():
                continue
            incomplete.add(view.locker)
            since = self._since.setdefault(view.locker, now_ms)
            asked = self._asked.get(view.locker)
            if now_ms - since < self.grace_ms:
                continue
            if asked is not None and now_ms - asked < self.retry_ms:
                continue
            due.append((since, view.locker, parts))
        for gone in [lk for lk in self._since if lk not in incomplete]:  # complete again
            self._since.pop(gone, None)
            self._asked.pop(gone, None)
        due.sort()
        granted = self._bucket.take(len(due), now_ms)
        spread = min(MAX_RESYNC_SPREAD_MS, int(granted * 1000 / self._bucket.rate_per_s))
        asks = []
        for _, locker, parts in due[:granted]:
            self._asked[locker] = now_ms
            what = None if parts is None or set(parts) >= set(RESYNC_PARTS) else parts
            asks.append(ResyncAsk(locker, what, spread))
        return asks
