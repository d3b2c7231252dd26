"""When a locker answers the console's `resync` requests, and how its reconnects are spread.

Pure: fed the time (monotonic seconds) and a random source, it says when to publish the
retained state again. Two fleet-scale rules live here because both are about not answering a
crowd in lock step:

- `ResyncGate`: a request is answered after a random delay in [0, spread_ms] (the console sizes
  the window so a thousand answers do not reach it at once), requests arriving while one is
  pending are merged into it, and none is accepted within `min_interval` of the last answer, so
  a flood of requests (a hostile or confused console) costs one republish;
- `Backoff`: the first reconnect after a lost connection waits a uniform delay in
  [0, `first_spread`] (full jitter: after a broker restart thousands of lockers must not come
  back in the same second), later ones back off exponentially with jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class ResyncVerdict(StrEnum):
    """What became of a resync request."""

    #: Accepted: the parts will be published at the returned due time.
    SCHEDULED = "scheduled"
    #: One is pending already: its parts now include these, no extra publish.
    MERGED = "merged"
    #: Answered less than `min_interval` ago: ignored (the console asks again later).
    TOO_SOON = "too_soon"


@dataclass(frozen=True)
class ResyncAsk:
    """The verdict on one request, and when the pending answer is due (monotonic s)."""

    verdict: ResyncVerdict
    due_at: float | None = None


class ResyncGate:
    """At most one republish per `min_interval` seconds, each after a random delay."""

    def __init__(self, min_interval: float, rng: random.Random | None = None) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        self.min_interval = min_interval
        self._rng = rng or random.Random()
        self._due_at: float | None = None
        self._parts: set[str] = set()
        self._done_at: float | None = None

    @property
    def pending(self) -> bool:
        return self._due_at is not None

    def asked(self, parts: frozenset[str], spread_ms: int, now: float) -> ResyncAsk:
        """A request for `parts` to be published within `spread_ms`."""
        if self._due_at is not None:
            self._parts |= parts
            return ResyncAsk(ResyncVerdict.MERGED, self._due_at)
        if self._done_at is not None and now - self._done_at < self.min_interval:
            return ResyncAsk(ResyncVerdict.TOO_SOON)
        self._due_at = now + self._rng.uniform(0, max(spread_ms, 0) / 1000)
        self._parts = set(parts)
        return ResyncAsk(ResyncVerdict.SCHEDULED, self._due_at)

    def due(self, now: float) -> frozenset[str]:
        """The parts to publish now (empty if nothing is due); counts as the answer."""
        if self._due_at is None or now < self._due_at:
            return frozenset()
        parts = frozenset(self._parts)
        self._due_at, self._parts, self._done_at = None, set(), now
        return parts

    def timeout(self, now: float) -> float | None:
        """Seconds until the pending answer is due (None: nothing pending)."""
        return None if self._due_at is None else max(0.0, self._due_at - now)


class Backoff:
    """Reconnect delays: after a lost connection first a uniform delay in [0, `first_spread`]
    (full jitter), then exponential with "equal jitter": each in [d/2, d], d doubling from
    `initial` to `maximum`. Before the first connection there is no spread (nothing was lost)."""

    def __init__(
        self, initial: float, maximum: float, rng: random.Random | None = None,
        first_spread: float = 0.0,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if first_spread < 0:
            raise ValueError("first_spread must not be negative")
        self.initial = initial
        self.maximum = maximum
        self.first_spread = first_spread
        self._rng = rng or random.Random()
        self._next = initial
        self._spread_due = False

    def next_delay(self) -> float:
        """The delay to wait now; the following one will be about twice as long."""
        if self._spread_due:
            self._spread_due = False
            return self._rng.uniform(0, self.first_spread)
        d = self._next
        self._next = min(self._next * 2, self.maximum)
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        """After a successful connection: the next loss is spread, then start from `initial`."""
        self._next = self.initial
        self._spread_due = self.first_spread > 0
