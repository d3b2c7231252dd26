"""What the locker owes the console, and when to send it again: the fleet link's policy, sans I/O.

Two objects, fed events with the time passed in, that hand back what to do; `FleetLink` does the
MQTT calls and reads the clock. Neither ever drops what the console has not confirmed:

- `OutboxWindow`, the outbox's events: sent in seq order with at most `max_in_flight` not
  covered by an `events/ack`, sent again from the ack watermark after a reconnect or when acks
  stall for `resend_after`, and dropped from the outbox (by the link, through its port) only
  when an ack covers them;
- `UntilDelivered`, command results and relayed notifications: kept until the console names them
  on `delivered` (a broker's PUBACK proves nothing: its queue for the console may overflow after
  it), sent again after a reconnect and every `resend_after`, given up after `deliver_for_s`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class AckVerdict(enum.Enum):
    """What an `events/ack` means to the window."""

    #: It covers a seq this link never sent: a confused or hostile console; ignored.
    NEVER_SENT = "never_sent"
    #: A duplicate or an older ack: nothing new.
    OLD = "old"
    #: It covers new events: drop them from the outbox, then call `acknowledged`.
    NEW = "new"


@dataclass(frozen=True)
class OutboxRead:
    """Read the outbox: events with seq > `after_seq`, ascending, at most `limit`."""

    after_seq: int
    limit: int


@dataclass(frozen=True)
class OutboxGap:
    """The outbox skipped seqs (worth a log line; the console raises the alarm)."""

    expected: int
    got: int


@dataclass(frozen=True)
class Resend:
    """Acks stalled: everything after `after_seq` (`unacked` events) goes out again."""

    after_seq: int
    unacked: int


class OutboxWindow:
    """The send window over the locker's durable outbox; `acked <= sent <= highest_sent`.

    `acked`: the console's ack watermark (or the outbox's start); `sent`: the last seq handed to
    the broker on this round; `highest_sent`: the last seq ever handed over, the bound of a
    believable ack.
    """

    def __init__(self, max_in_flight: int, resend_after: float, now: float) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self.resend_after = resend_after
        self.acked = 0
        self.sent = 0
        self.highest_sent = 0
        #: The outbox may hold events to send (it grew, an ack made room, a read failed).
        self.due = False
        #: When the window last moved (an ack, or a send with nothing in flight).
        self.last_progress = now

    @property
    def in_flight(self) -> bool:
        """Events sent and not acknowledged yet."""
        return self.sent > self.acked

    def outbox_grew(self) -> None:
        """The core committed new events (or a read of the outbox must be tried again)."""
        self.due = True

    def reconnected(self, now: float) -> None:
        """A new connection: whatever was in flight may be lost, so send from the watermark."""
        self.sent = self.acked
        self.due = True
        self.last_progress = now

    def next_read(self) -> OutboxRead | None:
        """The outbox read to do now, or None (nothing due, or the window is full: an ack
        makes room)."""
        if not self.due:
            return None
        self.due = False
        room = self.acked + self.max_in_flight - self.sent
        if room <= 0:
            return None
        return OutboxRead(self.sent, room)

    def sending(self, seqs: Sequence[int], now: float) -> list[OutboxGap]:
        """The outbox answered `next_read` with these seqs (ascending), about to be published
        in this order; returns the holes between them, if any."""
        if not seqs:
            return []
        if self.sent <= self.acked:
            # Starting from the watermark: what precedes the outbox's first event was acked
            # (maybe in a past run), so a console ack below it is no news.
            self.acked = max(self.acked, seqs[0] - 1)
            self.sent = self.acked
        gaps = []
        expected = self.sent + 1
        for seq in seqs:
            if seq != expected:
                gaps.append(OutboxGap(expected, seq))
            expected = seq + 1
        if self.sent == self.acked:
            self.last_progress = now  # nothing was in flight: the clock starts now
        self.sent = seqs[-1]
        self.highest_sent = max(self.highest_sent, self.sent)
        return gaps

    def judge_ack(self, up_to_seq: int) -> AckVerdict:
        """What an ack means; on NEW, drop the events from the outbox, then `acknowledged`."""
        if up_to_seq > self.highest_sent:
            return AckVerdict.NEVER_SENT
        if up_to_seq <= self.acked:
            return AckVerdict.OLD
        return AckVerdict.NEW

    def acknowledged(self, up_to_seq: int, now: float) -> int:
        """The outbox dropped every event up to `up_to_seq` (a NEW ack); returns how many.
        The window has room again, so the outbox is due."""
        count = up_to_seq - self.acked
        self.acked = up_to_seq
        self.sent = max(self.sent, up_to_seq)
        self.last_progress = now
        self.due = True
        return count

    def tick(self, now: float) -> Resend | None:
        """The timer: when acks stalled for `resend_after`, go back to the watermark."""
        if not self.in_flight or now - self.last_progress < self.resend_after:
            return None
        resend = Resend(self.acked, self.sent - self.acked)
        self.sent = self.acked
        self.due = True
        self.last_progress = now
        return resend

    def timeout(self) -> float | None:
        """How long to sleep before the next `tick` may matter (None: until woken)."""
        return self.resend_after if self.in_flight else None


@dataclass
class Outgoing:
    """A command result or notification, kept until the console confirms it on `delivered`."""

    key: tuple[str, str]
    topic: str
    payload: bytes
    is_result: bool
    queued_at: float
    #: When it was last handed to the broker; None: to be sent (again).
    sent_at: float | None = None


class UntilDelivered:
    """Results and notifications the console has not confirmed, in the order queued."""

    def __init__(self, resend_after: float, deliver_for_s: float) -> None:
        self.resend_after = resend_after
        self.deliver_for_s = deliver_for_s
        self._pending: dict[tuple[str, str], Outgoing] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._pending

    def add_result(self, key: str, topic: str, payload: bytes, now: float) -> None:
        """A result (`cmd_id/status`); a repeat goes out again, after what is queued."""
        full = ("result", key)
        self._pending.pop(full, None)
        self._pending[full] = Outgoing(full, topic, payload, True, now)

    def add_notification(self, key: str, topic: str, payload: bytes, now: float) -> None:
        """A notification (its id); one already queued stays where it is."""
        full = ("notification", key)
        if full not in self._pending:
            self._pending[full] = Outgoing(full, topic, payload, False, now)

    def reconnected(self) -> None:
        """A new connection: everything unconfirmed goes out again."""
        for item in self._pending.values():
            item.sent_at = None

    def due(self, now: float) -> tuple[list[Outgoing], list[tuple[str, str]]]:
        """(what to send now, in order; the keys given up after `deliver_for_s`, now dropped)."""
        expired = [k for k, o in self._pending.items() if now - o.queued_at > self.deliver_for_s]
        for key in expired:
            del self._pending[key]
        send = [
            o for o in self._pending.values()
            if o.sent_at is None or now - o.sent_at >= self.resend_after
        ]
        return send, expired

    def sent(self, items: Sequence[Outgoing], now: float) -> None:
        """The broker took these (PUBACK): offer them again only after `resend_after`."""
        for item in items:
            item.sent_at = now

    def delivered(self, results: Sequence[tuple[str, str]], notifications: Sequence[str]) -> None:
        """The console stored these (cmd_id, status) results and notification ids."""
        for cmd_id, status in results:
            self._pending.pop(("result", f"{cmd_id}/{status}"), None)
        for note_id in notifications:
            self._pending.pop(("notification", note_id), None)

    def timeout(self, now: float) -> float | None:
        """Seconds until the next unconfirmed item is due again (None: none is waiting)."""
        sent = [o.sent_at for o in self._pending.values() if o.sent_at is not None]
        if not sent:
            return None
        return max(0.0, min(sent) + self.resend_after - now)


@dataclass(frozen=True)
class ResendAnswer:
    """The locker's answer to an `events/resend`: the seqs to publish again on `events`, and
    the runs its outbox no longer holds, each `(from_seq, to_seq)`, for `events/gone`."""

    resend: list[int]
    gone: list[tuple[int, int]]


def answer_resend(
    from_seq: int, to_seq: int, held: Sequence[int], highest_sent: int
) -> ResendAnswer:
    """What to answer for `from_seq..to_seq`, given the seqs the outbox `held` (read from
    `from_seq - 1`, any order, any extent).

    Gone is said only for a seq at or below `highest_sent` that the outbox lacks: the console
    acks past what is gone, so a seq the locker still holds, or has not written or sent yet,
    must never be named (it would be acknowledged, then dropped, unstored). Seqs above
    `highest_sent` get no answer at all; the console asks again after another gap timeout."""
    have = {s for s in held if from_seq <= s <= to_seq}
    resend = sorted(have)
    gone: list[tuple[int, int]] = []
    run_start: int | None = None
    for seq in range(from_seq, min(to_seq, highest_sent) + 1):
        if seq in have:
            if run_start is not None:
                gone.append((run_start, seq - 1))
                run_start = None
        elif run_start is None:
            run_start = seq
    if run_start is not None:
        gone.append((run_start, min(to_seq, highest_sent)))
    return ResendAnswer(resend, gone)
