"""A per-locker message-rate meter: which locker floods the console (pure, time passed in).

One locker publishing far more than a locker does (a bug or an attack) fills the broker's queue
towards the ingest and delays every other locker's messages. The broker's limits bound the harm;
this meter names the culprit: a locker whose messages in one window of `window_s` exceed
`rate_per_s * window_s` starts a *flood episode* (one alarm); the episode ends after a whole
window below the threshold, so a flood that goes on raises no further alarms.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Window:
    start: int
    count: int = 0
    exceeded: bool = False


@dataclass(frozen=True)
class Flood:
    """A flood episode that just started: messages seen in the window so far."""

    locker: str
    count: int
    window_s: float
    rate_per_s: float


@dataclass
class FloodMeter:
    rate_per_s: float = 50.0
    window_s: float = 10.0
    _windows: dict[str, _Window] = field(default_factory=dict)
    _flooding: set[str] = field(default_factory=set)

    @property
    def limit(self) -> float:
        """Messages per window above which a locker floods."""
        return self.rate_per_s * self.window_s

    def observe(self, locker: str, count: int, now_ms: int) -> Flood | None:
        """Count `count` messages of `locker` at `now_ms`; a Flood when an episode starts."""
        span = self.window_s * 1000
        w = self._windows.get(locker)
        if w is None or now_ms - w.start >= span:
            calm = w is None or not w.exceeded or now_ms - w.start >= 2 * span
            if calm:
                self._flooding.discard(locker)
            w = self._windows[locker] = _Window(start=now_ms)
        w.count += count
        if w.count <= self.limit or w.exceeded:
            return None
        w.exceeded = True
        if locker in self._flooding:
            return None
        self._flooding.add(locker)
        return Flood(locker, w.count, self.window_s, self.rate_per_s)
