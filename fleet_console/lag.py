"""How far behind the ingest runs: a lag meter fed per batch, summed up per heartbeat (pure).

The ingest feeds `LagMeter.stored` after each committed batch (the time, the `at` of each of its
events), `heard` for each locker the batch came from, and `waiting` with how many messages it
received and has not stored yet; every heartbeat it calls `beat(now)`, which hands back a
`Beat`: the interval's lag (now - event.at) p50 and max, events/s, batches/s, the inbox depth,
the lockers heard of since the last beat (to write to `lockers`), and whether an `ingest_lag`
alarm starts or ends.

**Lag alarm.** One episode per stretch of falling behind: it starts when the interval's p50 lag
has stayed above `alarm_ms` for `alarm_for_ms` (each beat above; the stretch began at the first
beat above), and ends at the first beat back under. The p50, not the max: one locker emptying a
day-old outbox after an outage is not the ingest falling behind. A beat with no event stored says
nothing about lag unless the inbox is empty too (an idle ingest is caught up), so it neither
starts nor ends an episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LockerHeard:
    """What the committed batches of one interval said about one locker."""

    last_heard_at: int
    #: The newest `at` and the highest seq of the events stored (None: none stored).
    last_event_at: int | None = None
    stored_seq: int | None = None


@dataclass(frozen=True)
class Beat:
    """One heartbeat's summary of the interval since the previous one."""

    at: int
    interval_ms: int
    inbox_depth: int
    lag_p50_ms: int | None
    lag_max_ms: int | None
    events_per_s: float
    batches_per_s: float
    lockers: dict[str, LockerHeard]
    #: An `ingest_lag` episode starts now (the alarm to raise) / ends now (the alarm to end).
    alarm_starts: bool = False
    alarm_ends: bool = False
    #: When the current episode's stretch above the threshold began (None: under).
    lagging_since: int | None = None


@dataclass
class LagMeter:
    """The ingest's own picture of its lag; time is passed in (epoch ms)."""

    alarm_ms: int = 60_000
    alarm_for_ms: int = 60_000
    started_at: int = 0
    _last_beat: int | None = None
    _ages: list[int] = field(default_factory=list)
    _events: int = 0
    _batches: int = 0
    _inbox: int = 0
    _heard: dict[str, LockerHeard] = field(default_factory=dict)
    #: Start of the current stretch above the threshold, and whether its alarm is raised.
    _above_since: int | None = None
    alarm_open: bool = False

    def stored(self, now: int, event_ats: list[int]) -> None:
        """A batch committed at `now` with events of these `at` times."""
        self._batches += 1
        self._events += len(event_ats)
        self._ages.extend(max(0, now - at) for at in event_ats)

    def waiting(self, inbox_depth: int) -> None:
        """How many messages the ingest received and has not stored yet."""
        self._inbox = inbox_depth

    def heard(self, locker: str, now: int, last_event_at: int | None = None,
              stored_seq: int | None = None) -> None:
        """A committed batch held messages of `locker` (and events up to these)."""
        prior = self._heard.get(locker)
        if prior is not None:
            last_event_at = _max(prior.last_event_at, last_event_at)
            stored_seq = _max(prior.stored_seq, stored_seq)
        self._heard[locker] = LockerHeard(now, last_event_at, stored_seq)

    def beat(self, now: int) -> Beat:
        """Sum up the interval since the last beat (or the start) and reset it."""
        since = self._last_beat if self._last_beat is not None else self.started_at
        interval = max(1, now - since)
        ages = sorted(self._ages)
        p50 = ages[(len(ages) - 1) // 2] if ages else None
        starts = ends = False
        if p50 is not None and p50 > self.alarm_ms:
            if self._above_since is None:
                self._above_since = now
            if not self.alarm_open and now - self._above_since >= self.alarm_for_ms:
                self.alarm_open = starts = True
        elif p50 is not None or self._inbox == 0:
            self._above_since = None
            if self.alarm_open:
                self.alarm_open, ends = False, True
        beat = Beat(
            at=now, interval_ms=interval, inbox_depth=self._inbox, lag_p50_ms=p50,
            lag_max_ms=ages[-1] if ages else None,
            events_per_s=round(self._events * 1000 / interval, 2),
            batches_per_s=round(self._batches * 1000 / interval, 2),
            lockers=self._heard, alarm_starts=starts, alarm_ends=ends,
            lagging_since=self._above_since,
        )
        self._last_beat = now
        self._ages, self._events, self._batches, self._heard = [], 0, 0, {}
        return beat

    def unbeat(self, beat: Beat) -> None:
        """A beat's write failed: keep its lockers for the next one (newer values win) and
        undo its alarm transition, so it is tried again."""
        for lk, h in beat.lockers.items():
            now = self._heard.get(lk)
            if now is None:
                self._heard[lk] = h
            else:
                self._heard[lk] = LockerHeard(
                    now.last_heard_at, _max(now.last_event_at, h.last_event_at),
                    _max(now.stored_seq, h.stored_seq))
        if beat.alarm_starts:
            self.alarm_open = False
        if beat.alarm_ends:
            self.alarm_open = True


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
