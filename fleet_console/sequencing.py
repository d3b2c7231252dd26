"""Per-locker event sequencing at the console: which events to store, what to ack, which gaps to
report; sans I/O (time in epoch milliseconds is passed in, the ingest reads and writes the rows).

The rules (README, "Ack and gap policy"):
- events are stored once per (locker, seq): a duplicate is not counted again (the database's
  unique key drops it) but is acknowledged;
- the first event ever seen from a locker sets its baseline (watermark = its seq - 1); with
  several ingest replicas (`baseline_from_first=False`) the first one seen may not be the
  locker's first (another replica may hold an earlier one): the watermark starts at 0 and
  whatever is missing below is asked for like any hole;
- the ack watermark is the end of the contiguous prefix: an ack never covers a seq not stored,
  so the locker keeps everything after a hole and sends it again;
- an event past the next expected one is stored at once and reported as a gap (`expected`,
  `got`); a hole not filled within the gap timeout is asked for again (`ResendRequest`, on
  `events/resend`), and again every gap timeout while it stays open: the watermark never moves
  past a hole while the locker may still hold its events;
- only the locker's own word (`events/gone`: its outbox no longer holds `from_seq..to_seq`)
  moves the watermark past a hole, and only past what it names; that is reported permanent
  (`missing_from`, `missing_to`: the `seq_gap_permanent` alarm). It is the one case where an
  ack covers seqs that were not stored;
- an event that fills a hole late (even after it was declared permanent) is still stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class SeqState:
    """Where a locker's sequence stands: `acked` is the contiguous prefix (None: no event seen
    yet), `above` the seqs stored past a hole, `gap_since` when the current hole was seen."""

    acked: int | None
    above: set[int] = field(default_factory=set)
    gap_since: int | None = None
    #: When the current hole was last asked for again (stored with the watermark, so a restart
    #: or another replica does not ask again before the gap timeout).
    asked_at: int | None = None

    def absorb(self) -> None:
        """Move the watermark over seqs already stored right after it."""
        assert self.acked is not None
        while self.acked + 1 in self.above:
            self.above.remove(self.acked + 1)
            self.acked += 1


@dataclass(frozen=True)
class SeqGap:
    """An event arrived past the next expected one (`seq_gap`)."""

    locker: str
    expected: int
    got: int


@dataclass(frozen=True)
class PermanentGap:
    """A hole not filled in time: the watermark moved past `missing_from..missing_to`."""

    locker: str
    missing_from: int
    missing_to: int


@dataclass(frozen=True)
class ResendRequest:
    """Ask the locker for `from_seq..to_seq` again (`events/resend`)."""

    locker: str
    from_seq: int
    to_seq: int
    #: This hole was asked for before (False: the first request since it opened).
    again: bool = field(default=False, compare=False)


@dataclass
class Sequenced:
    """What to do with one batch of events."""

    #: Indices into the batch of the events to insert (in this order; a duplicate of a stored
    #: seq may be among them: the unique key drops it).
    store: list[int] = field(default_factory=list)
    #: How many of them are new events.
    new: int = 0
    gaps: list[SeqGap] = field(default_factory=list)
    permanent: list[PermanentGap] = field(default_factory=list)
    #: Holes open for longer than the gap timeout: ask the lockers for them again.
    resend: list[ResendRequest] = field(default_factory=list)
    #: The ack watermark to publish per locker, once the batch is committed.
    acks: dict[str, int] = field(default_factory=dict)
    #: Lockers whose stored watermark (`acked`, `gap_since`, `asked_at`) changed.
    changed: set[str] = field(default_factory=set)


class Sequencer:
    """The sequence state of every locker the ingest has seen since it (re)loaded them.

    The ingest restores a locker's state (`restore`) before a batch names it, and `forget`s
    everything when a transaction fails (memory may be ahead of the rolled-back rows).
    """

    def __init__(
        self, gap_timeout_ms: int, max_resend: int = 1000, *, baseline_from_first: bool = True
    ) -> None:
        """`max_resend`: the longest range one resend request names (the contract's
        MAX_RESEND_RANGE). `baseline_from_first=False`: a locker never seen before starts at
        0 (seqs start at 1), for when events may arrive out of order (several replicas)."""
        self.gap_timeout_ms = gap_timeout_ms
        self.max_resend = max_resend
        self.baseline_from_first = baseline_from_first
        self.states: dict[str, SeqState] = {}
        #: The lockers that may have a hole open (a superset, pruned as holes close): what the
        #: timeout checks look at, instead of every locker on every batch (3,000 lockers at a
        #: few hundred batches a second).
        self._gapped: set[str] = set()
        #: The lockers left with a hole by a previous run were restored (they need a timer).
        self.gapped_restored = False

    def forget(self) -> None:
        """Drop what memory holds; the database is the truth again."""
        self.states.clear()
        self._gapped.clear()
        self.gapped_restored = False

    def missing(self, lockers: Iterable[str]) -> list[str]:
        """The lockers among these whose state must be restored first."""
        return [lk for lk in set(lockers) if lk not in self.states]

    def restore(
        self, locker: str, acked: int | None, gap_since: int | None, above: Iterable[int] = (),
        asked_at: int | None = None,
    ) -> None:
        """A locker's stored watermark, and the seqs stored past it (when it has a hole)."""
        self.states[locker] = SeqState(acked, set(above), gap_since, asked_at)
        if gap_since is not None:
            self._gapped.add(locker)

    def gap_due(self, now: int) -> bool:
        """A batch is worth running even when empty: a hole may have timed out."""
        if not self.gapped_restored:
            return True
        limit = now - self.gap_timeout_ms
        return any(
            st.gap_since is not None and max(st.gap_since, st.asked_at or 0) <= limit
            for st in self._gapped_states()
        )

    def _gapped_states(self) -> list[SeqState]:
        """The states with a hole open, dropping from `_gapped` those whose hole closed."""
        open_: list[SeqState] = []
        for lk in list(self._gapped):
            st = self.states.get(lk)
            if st is None or st.gap_since is None:
                self._gapped.discard(lk)
            else:
                open_.append(st)
        return open_

    def sequence(
        self,
        events: Sequence[tuple[str, int]],
        now: int,
        gone: Sequence[tuple[str, int, int]] = (),
    ) -> Sequenced:
        """Take a batch of (locker, seq) and of the lockers' `events/gone` (locker, from_seq,
        to_seq), every locker named restored; then ask again for holes open too long."""
        out = Sequenced()
        seen: set[tuple[str, int]] = set()
        # In seq order: a batch holding a redelivery must not look like a gap.
        for index in sorted(range(len(events)), key=lambda i: events[i][1]):
            lk, seq = events[index]
            st = self.states[lk]
            if (lk, seq) in seen:
                continue
            seen.add((lk, seq))
            if st.acked is None:  # first event ever seen from this locker: the baseline
                st.acked = seq - 1 if self.baseline_from_first else 0
                out.changed.add(lk)
            if seq <= st.acked:
                out.store.append(index)  # a duplicate (the unique key drops it) or a late fill
            elif seq not in st.above:
                out.store.append(index)
                out.new += 1
                out.changed.add(lk)
                if seq == st.acked + 1:
                    st.acked = seq
                    if st.above:
                        st.absorb()
                        st.gap_since = now if st.above else None
                        if st.gap_since is None:
                            st.asked_at = None
                        else:
                            self._gapped.add(lk)
                else:
                    top = max(st.acked, max(st.above, default=0))
                    if seq > top + 1:
                        out.gaps.append(SeqGap(lk, top + 1, seq))
                    st.above.add(seq)
                    if st.gap_since is None:
                        st.gap_since = now
                        self._gapped.add(lk)
            out.acks[lk] = st.acked
        for lk, from_seq, to_seq in gone:
            self._gone(lk, from_seq, to_seq, now, out)
        limit = now - self.gap_timeout_ms
        for lk in sorted(self._gapped):
            held = self.states.get(lk)
            if held is None or held.gap_since is None:
                self._gapped.discard(lk)
                continue
            st, since = held, held.gap_since
            if st.acked is None or not st.above:
                continue
            if max(since, st.asked_at or since) > limit:
                continue
            first_missing = st.acked + 1
            last_missing = min(min(st.above) - 1, first_missing + self.max_resend - 1)
            out.resend.append(ResendRequest(lk, first_missing, last_missing,
                                            again=st.asked_at is not None))
            st.asked_at = now
            out.changed.add(lk)
        return out

    def _gone(self, lk: str, from_seq: int, to_seq: int, now: int, out: Sequenced) -> None:
        """The locker says its outbox no longer holds `from_seq..to_seq`: move past the part
        of the first hole it names (nothing else: not past a seq the console never saw)."""
        st = self.states[lk]
        if st.acked is None or not st.above or not from_seq <= st.acked + 1 <= to_seq:
            return
        new_acked = min(to_seq, min(st.above) - 1)
        out.permanent.append(PermanentGap(lk, st.acked + 1, new_acked))
        st.acked = new_acked
        st.absorb()
        st.gap_since = now if st.above else None
        if st.above:
            self._gapped.add(lk)
        st.asked_at = None
        out.changed.add(lk)
        out.acks[lk] = st.acked


class AckPacer:
    """When to publish each locker's ack watermark: at most one `events/ack` per locker in
    flight; a newer watermark waits for it and then goes out alone (under load, one ack covers
    several batches). A failed one stays due for the next try or the next connection: a
    locker's outbox must never stall. A lost ack is harmless (the locker sends again).

    Paced (`interval_ms` > 0): due acks go out together (`flush`) at most once per interval, so
    a locker whose events arrive over several batches within it gets one ack, not one per batch
    (each publish costs the ingest more CPU than storing an event); an ack waits at most
    `interval_ms` for it. At most `max_in_flight` acks (all lockers) await the broker at once:
    the MQTT client's cost per publish grows with the publishes pending, and those queued
    behind its own in-flight window would time out; the rest go out as earlier ones finish."""

    def __init__(self, interval_ms: int = 0, max_in_flight: int = 1000) -> None:
        self.interval_ms = interval_ms
        self.max_in_flight = max_in_flight
        #: Watermarks not yet published, and lockers with an ack in flight.
        self.due: dict[str, int] = {}
        self.busy: set[str] = set()
        #: When (ms, any monotonic clock) the last flush went out.
        self.flushed_at: int | None = None

    def wait_ms(self, now: int) -> int:
        """How long the due acks wait before the next `flush` (0: flush now)."""
        if self.flushed_at is None:
            return 0
        return max(0, self.flushed_at + self.interval_ms - now)

    def flush(self, now: int) -> list[str]:
        """The lockers whose due watermark goes out now (each then `take`n): the due ones
        without an ack in flight, oldest due first, as many as `max_in_flight` leaves room for.
        Starts the next interval."""
        self.flushed_at = now
        room = self.max_in_flight - len(self.busy)
        ready: list[str] = []
        for lk in self.due:
            if len(ready) >= room:
                break
            if lk not in self.busy:
                ready.append(lk)
        return ready

    def watermark(self, locker: str, up_to_seq: int) -> bool:
        """A committed batch moved this watermark; True: publish now (`take`)."""
        self.due[locker] = up_to_seq
        return locker not in self.busy

    def take(self, locker: str) -> int:
        """The watermark to publish now; the locker has an ack in flight until `finished`."""
        seq = self.due.pop(locker)
        self.busy.add(locker)
        return seq

    def failed(self, locker: str, up_to_seq: int) -> None:
        """The broker did not take this ack: keep it due."""
        self.due[locker] = max(self.due.get(locker, 0), up_to_seq)

    def finished(self, locker: str) -> bool:
        """The ack in flight is done (on the current connection); True: a newer one is due."""
        self.busy.discard(locker)
        return locker in self.due

    def reconnected(self) -> list[str]:
        """A new connection: acks in flight on the old one are gone; these are due now."""
        self.busy.clear()
        return list(self.due)
