"""The ingest: everything lockers publish goes into the database, and events are acknowledged.

One MQTT 5 connection with a persistent session (stable client id, clean start off, session
expiry), subscribed QoS 1 to every locker's status, cells, events, cmd/result, config/applied
and notify.
QoS 1 messages are acknowledged to the broker (PUBACK) only after the transaction holding them
committed, so a message the ingest dies with is delivered again: with the persistent session,
nothing published while the ingest is away or crashing is lost. Messages are batched (a few ms or
up to a few hundred, a few thousand under a backlog, one transaction); after the commit, each
locker with events in the batch gets one `events/ack` with its ack watermark (acks go out
together at most every `ack_interval_s`, so one covers all of a locker's batches within it).

**Ack and gap policy** (the pure `Sequencer` and `AckPacer` of fleet_console/sequencing.py;
this module restores their state from the database and publishes the acks).
Events are stored once per (locker, seq) (a duplicate is dropped but still
acknowledged). The first event ever seen from a locker sets its baseline. The ack watermark is the
end of the contiguous prefix: `up_to_seq` never covers a missing seq, so the locker keeps
everything after a hole in its outbox and can send it again. An event past the next expected one
is stored at once and raises a `seq_gap` alarm (`expected`, `got`). If the hole is not filled
within `gap_timeout_s` (default 30 s), the locker is asked for it on `events/resend` (again every
`gap_timeout_s`); the watermark moves past it only when the locker answers on `events/gone` that
its outbox no longer holds it, recorded as a `seq_gap_permanent` alarm (`missing_from`,
`missing_to`). An event that fills a hole late (even after that) is still stored.

**Quarantine** (fleet_console/quarantine.py). A message that cannot be stored is never retried
for ever and never blocks the others: one that is not JSON or out of the contract's bounds, larger
than `max_payload_bytes`, on a topic under the locker's id that the contract does not have, or a
snapshot of a cell its status does not declare (a locker that declares none: past
`max_undeclared_cells` cells) is kept in `quarantine` (locker, topic, reason, the first 512 bytes;
nothing of a relayed notification's text), a `quarantined` alarm is raised (one per locker per
minute and reason, at most `quarantine_keep_per_min` rows per locker and reason per minute), and
it is acknowledged.
**Broker loss and restart** (issue 16). Reconnect with backoff, for ever. After a broker restart
the session's whole backlog comes at once and the broker's PUBACKs for our acks queue behind it:
acks in flight on the old connection are due again, and an ack unconfirmed for `ACK_CONFIRM_S`
is sent again. (Before the batch inbox and the capped acks, thousands of unconfirmed acks made
paho read that many packets per wake-up while aiomqtt's iterator took one message per few: the
ingest stored next to nothing after a restart; tests/test_ingest_broker_restart.py.)
Database errors that may pass (connection lost, locked, disk full) retry the batch with backoff,
unacknowledged meanwhile; any other error (the database refuses a value) stores the batch again
message by message, and the one it refuses is quarantined (`store_failed`); a refused event
counts as stored for the ack watermark (its quarantine row is what is kept), or the locker would
re-send it for ever behind a hole.

**Flood alarm** (fleet_console/flood.py): a locker whose messages exceed `flood_rate_per_s` over a
window of `flood_window_s` raises one `flood` alarm per episode.

**Replicas** (`[ingest] replica`, `locker-console ingest --replica NAME`). Several ingests may
share one database (PostgreSQL; SQLite works but serialises them), each with its own client id
(`ingest-NAME`) and broker account. Events, `events/gone`, command results and relayed
notifications come on the shared subscription `$share/ingest/...` (`[ingest] share_group`): the
broker hands each message to one replica. Status, cell snapshots and config/applied (retained, last
one wins) come to every replica on a plain subscription, so each gets the retained ones when it
subscribes and writes them in the locker's order. The watermark and the hole live in the database,
not in memory: each batch locks its lockers' rows (`SELECT ... FOR UPDATE`, in id order, so two
replicas never deadlock), reloads `acked_seq`, `gap_since`, `gap_asked_at` and the seqs stored past
a hole (whatever another replica stored), sequences, and writes them back in the same transaction.
The replica that moves a watermark publishes the ack; the one that finds a hole due asks for it
(locked rows: once). Events of one locker reach the replicas out of order all the time, so a
`seq_gap` alarm is raised only for a hole that outlived `gap_timeout_s` (when it is first asked
for: `expected` its first seq, `got` the seq after the range asked for), and a locker never seen
before starts at 0, not at its first seq: what is missing below is asked for like a hole. Without a
replica name, one ingest per database is assumed: the state is kept in memory too.

**Heartbeat and lag** (fleet_console/lag.py): every `beat_interval_s` the ingest writes its row in
`ingest_replicas` (inbox depth, lag of the stored events, rates) and the freshness of each locker
heard of; an `ingest_lag` alarm is raised once per episode of falling behind and ended after.

**Relayed notifications** (`notify`: SMS / e-mail a locker without its own provider hands over)
are taken out of the batch and handled beside it, a few at a time, so a slow gateway never holds
up events: unless a row for (locker, id) exists already (a QoS 1 duplicate: not sent again), the
message goes out through the `[notifier]` channel (a failure that may pass is tried again,
`[notifier] attempts` and `retry_s`), then a `notifications` row records the masked recipient and
the outcome (`sent`, `failed`, `no_channel`), and only then is it acknowledged to the broker.
A crash between the provider's acceptance and that commit sends it again on redelivery (at least
once); so does a stop while it waits to try again. The text (codes, PINs) is never stored or
logged, not even the text of a malformed payload.

**Resync** (the pure `ResyncPlanner` of fleet_console/resync.py). Every `resync_check_s` the
ingest reads from the database which lockers' retained state it lacks (no status, fewer cell
snapshots than the status declares, snapshots older than the status, or heard from while stored
offline) and asks them on `resync`, at most `resync_rate_per_s`, once per `resync_retry_s` per
locker while still incomplete, after `resync_grace_s` of looking incomplete; the locker
publishes its status, cells and config/applied again, spread over `spread_ms`.

**Delivered.** A broker may drop a message to the ingest after acknowledging it to the locker
(its queue for us overflowed), so lockers keep command results and notifications until told
otherwise: after the commit that stored a batch's results, and after a notification's row was
recorded (or found: a re-sent one), the locker gets `delivered` naming them and stops re-sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import aiomqtt
from sqlalchemy import (
    BigInteger,
    BindParameter,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from contract.messages import (
    DELIVERED_MAX_ITEMS,
    CellSnapshot,
    CommandResult,
    ConfigApplied,
    Delivered,
    Event,
    EventAck,
    EventResend,
    EventsGone,
    MalformedPayload,
    Notification,
    ResultKey,
    ResyncRequest,
    Status,
)
from contract.topics import TopicKind, Topics, locker_of
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import Database
from fleet_console.db.models import (
    Alarm,
    Cell,
    EventRow,
    IngestReplica,
    Locker,
    NotificationRow,
    QuarantineRow,
)
from fleet_console.db.parcel_facts import store_parcel_facts
from fleet_console.db.writes import insert_for, record_command_results, upsert
from fleet_console.flood import FloodMeter
from fleet_console.lag import Beat, LagMeter, LockerHeard
from fleet_console.mqtt import ack, login_hint, make_client
from fleet_console.notify import ConsoleNotifier, Delivery, mask_recipient
from fleet_console.quarantine import (
    MAX_DETAIL_CHARS,
    MAX_TOPIC_CHARS,
    QuarantineGate,
    QuarantineReason,
    bounded_text,
    excerpt,
)
from fleet_console.resync import LockerView, ResyncAsk, ResyncPlanner
from fleet_console.sequencing import AckPacer, ResendRequest, SeqGap, Sequencer
from fleet_io.inbox import MessageInbox
from fleet_io.mqtt_client import DEFAULT_SESSION_EXPIRY_S, ConfirmedPublisher

log = logging.getLogger("fleet_console.ingest")

_SUBSCRIBED_KINDS = (
    TopicKind.STATUS,
    TopicKind.CELL,
    TopicKind.EVENTS,
    TopicKind.CMD_RESULT,
    TopicKind.CONFIG_APPLIED,
    TopicKind.NOTIFY,
    TopicKind.EVENTS_GONE,
)
_RETAINED_KINDS = (TopicKind.STATUS, TopicKind.CELL, TopicKind.CONFIG_APPLIED)
#: The kinds replicas take turns on (`$share/SHARE_GROUP/...`): each message to one replica.
#: The retained kinds are not among them: every replica gets each one (and the retained ones at
#: subscribe time, which a broker need not send on a shared subscription).
_SHARED_KINDS = (TopicKind.EVENTS, TopicKind.EVENTS_GONE, TopicKind.CMD_RESULT, TopicKind.NOTIFY)
#: What each of the ingest's two broker connections takes (see `_Lane`).
_EVENT_LANE_KINDS = tuple(k for k in _SUBSCRIBED_KINDS if k not in _RETAINED_KINDS)
_PRESENCE_LANE_KINDS = tuple(k for k in _SUBSCRIBED_KINDS if k in _RETAINED_KINDS)
#: A presence batch at most this big (a batch holds up the events behind it, ~50 ms; smaller
#: ones cost more commits: at 50, a connect storm's presence took 17 s instead of 10 s).
PRESENCE_BATCH_MAX = 500
#: Presence waits while the events lane works (gathering or storing a batch), but takes at least
#: this share of the time (its last batch's duration times (1 - share) / share since it ended)
#: and never waits longer than PRESENCE_MAX_WAIT_S: the lockers' state must not starve under a
#: flood of events.
PRESENCE_SHARE = 0.25
PRESENCE_MAX_WAIT_S = 1.0
#: The shared subscription group of the ingest replicas (`[ingest] share_group`).
SHARE_GROUP = "ingest"
#: Resync checks wait while this many messages (or a batch's worth) are waiting to be stored:
#: what looks lost may be among them.
RESYNC_BACKLOG = 500
#: Lockers whose freshness one heartbeat transaction writes (the loop runs between them).
FRESHNESS_CHUNK = 250
#: Event acks awaiting the broker's PUBACK at once (the rest wait their turn in the AckPacer).
ACKS_IN_FLIGHT = 5000
#: An event ack not confirmed by the broker within this many seconds is sent again.
ACK_CONFIRM_S = 10.0


@dataclass(frozen=True)
class IngestSettings:
    """Tuning of the ingest; the defaults suit a fleet of a few thousand lockers."""

    #: Stable MQTT client id: the broker keeps this session's messages while we are away.
    client_id: str = "locker-console-ingest"
    #: This ingest's name among several sharing the work (None: the only ingest of its
    #: database): shared subscriptions, sequencing state reloaded from the database per batch.
    replica: str | None = None
    #: The replicas' shared subscription group: the same for all of them. On Mosquitto, whose
    #: ACL file does not check subscriptions, an account that joins it takes a share of every
    #: locker's events (and drops it): make it a secret there (docs/broker.md).
    share_group: str = SHARE_GROUP
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    #: A replica's session ends with its connection: Mosquitto keeps handing a share of the
    #: group's messages to an offline member with a session, so a replica that died would take
    #: half the events into a queue nobody reads until it came back. Nothing needs the session:
    #: the lockers keep every event, result and notification until the console confirms it.
    replica_session_expiry_s: int = 0
    batch_max: int = 500
    batch_window_s: float = 0.005
    #: With more than `batch_max` messages waiting (a backlog), batches of up to this many: one
    #: commit and one round of acks for more events.
    batch_max_backlog: int = 2000
    #: Messages the broker may have in flight to us unacknowledged (MQTT 5 Receive Maximum, at
    #: most 65535): room for thousands of lockers' windows, so that they wait in our inbox
    #: rather than in the broker's queue for us (whose limit drops what arrives past it).
    receive_maximum: int = 10_000
    #: The same for the presence connection (status, cells, config/applied): the protocol's
    #: most, so that a connect storm's retained flood (17 messages a locker) waits in our inbox
    #: (~1 KB a message) rather than overflowing the broker's queue for us, which drops what is
    #: past its limit (and then only a resync brings it back).
    presence_receive_maximum: int = 65_535
    #: Event acks go out together at most this often: a locker whose events arrive in several
    #: batches within it gets one `events/ack` (0: one after every batch, as soon as possible).
    ack_interval_s: float = 0.05
    gap_timeout_s: float = 30.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    #: Store batches in the event loop's thread (True) or a worker thread (False); None:
    #: inline for SQLite, a thread for PostgreSQL.
    store_inline: bool | None = None
    #: Relayed notifications being sent at once, and how long a stop waits for them.
    notify_concurrency: int = 8
    notify_drain_s: float = 15.0
    #: A payload larger than this is quarantined unread (a status or event is a few hundred
    #: bytes; the broker's message_size_limit should refuse far less than a 100 MB one).
    max_payload_bytes: int = 65_536
    #: Cells kept for a locker whose status declares none (an older lockerd).
    max_undeclared_cells: int = 512
    #: Quarantine rows kept per locker and reason per minute (more are counted in the alarm).
    quarantine_keep_per_min: int = 100
    #: A locker sending more than this many messages per second, on average over
    #: `flood_window_s`, raises a `flood` alarm.
    flood_rate_per_s: float = 50.0
    flood_window_s: float = 10.0
    #: How often the database is checked for lockers whose retained state is lacking (0: never),
    #: how many `resync` requests go out per second at most, how long a locker must look
    #: incomplete before it is asked, and how long before it is asked again.
    resync_check_s: float = 5.0
    resync_rate_per_s: float = 50.0
    resync_grace_s: float = 10.0
    resync_retry_s: float = 30.0
    #: Heartbeat: every `beat_interval_s` the ingest writes its `ingest_replicas` row (lag,
    #: inbox depth, rates) and each locker's freshness (fleet_console/lag.py). An `ingest_lag`
    #: alarm is raised when the stored events' p50 age stays above `lag_alarm_s` for
    #: `lag_alarm_for_s`, and ended when it is back under.
    beat_interval_s: float = 5.0
    lag_alarm_s: float = 60.0
    lag_alarm_for_s: float = 60.0


@dataclass
class IngestStats:
    """Counters for logs and benchmarks."""

    batches: int = 0
    messages: int = 0
    events_new: int = 0
    malformed: int = 0
    acks_sent: int = 0
    #: `events/resend` requests published (holes asked for again).
    resends_asked: int = 0
    alarms: int = 0
    connects: int = 0
    notifications: int = 0
    notify_duplicates: int = 0
    quarantined: int = 0
    floods: int = 0
    #: `resync` requests published (lockers asked for their retained state again).
    resyncs_asked: int = 0


@dataclass(frozen=True)
class _Quarantine:
    """A message on its way to the quarantine table."""

    locker: str
    topic: str
    reason: str
    detail: str
    payload: bytes
    secret: bool = False


@dataclass
class _Parsed:
    """One batch, decoded and reduced: last status/snapshot wins, results merged per cmd_id."""

    statuses: dict[str, Status] = field(default_factory=dict)
    cells: dict[tuple[str, int], CellSnapshot] = field(default_factory=dict)
    applied: dict[str, ConfigApplied] = field(default_factory=dict)
    events: list[tuple[str, Event]] = field(default_factory=list)
    #: The lockers' word that their outbox no longer holds a range (`events/gone`).
    gone: list[tuple[str, int, int]] = field(default_factory=list)
    results: dict[str, tuple[str, CommandResult]] = field(default_factory=dict)
    #: Relayed notifications: handled (and acknowledged) apart from the batch.
    notifications: list[tuple[aiomqtt.Message, str, Notification]] = field(default_factory=list)
    #: Every result of the batch, per locker, to confirm on `delivered` after the commit.
    delivered: dict[str, list[ResultKey]] = field(default_factory=dict)
    #: Topic and payload of each cell snapshot (quarantined if the cell is not declared).
    cell_sources: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict)
    quarantine: list[_Quarantine] = field(default_factory=list)
    #: Events the database refused, kept in quarantine: sequenced as stored (no `events` row),
    #: or the locker's outbox would stall behind them for ever.
    refused_events: list[tuple[str, int]] = field(default_factory=list)
    #: Alarms raised while reading the batch (`flood`).
    alarms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.statuses or self.cells or self.applied or self.events or self.results
                    or self.quarantine or self.alarms or self.gone)


def _restore_sequences(seq: Sequencer, session: Session, lockers: Iterable[str]) -> None:
    """Load the watermarks of these lockers (and, once, of every locker a previous run left
    with a hole) into the sequencer, with the seqs stored past each hole."""
    missing = seq.missing(lockers)
    if not seq.gapped_restored:  # lockers left with a hole by the previous run
        missing += session.scalars(select(Locker.id).where(Locker.gap_since.is_not(None))).all()
        seq.gapped_restored = True
    missing = seq.missing(missing)
    for chunk in (missing[i : i + 500] for i in range(0, len(missing), 500)):
        rows = session.execute(_sequence_rows().where(Locker.id.in_(chunk))).all()
        _restore_rows(seq, session, chunk, rows)


def _sequence_rows() -> Select[str, int | None, int | None, int | None]:
    return select(Locker.id, Locker.acked_seq, Locker.gap_since, Locker.gap_asked_at)


def _restore_rows(seq: Sequencer, session: Session, lockers: Sequence[str], rows: Any) -> None:
    """Restore these lockers from their `lockers` rows (absent: never seen), with the seqs
    stored past each one's hole."""
    found = {r.id: r for r in rows}
    above: dict[str, set[int]] = {}
    gapped = [lk for lk in lockers if lk in found and found[lk].gap_since is not None]
    for chunk in (gapped[i : i + 500] for i in range(0, len(gapped), 500)):
        for lk, s in session.execute(
            select(EventRow.locker, EventRow.seq)
            .join(Locker, Locker.id == EventRow.locker)
            .where(EventRow.locker.in_(chunk), EventRow.seq > Locker.acked_seq)
        ):
            above.setdefault(lk, set()).add(s)
    for lk in lockers:
        r = found.get(lk)
        if r is None:
            seq.restore(lk, None, None)
        else:
            seq.restore(lk, r.acked_seq, r.gap_since, above.get(lk, ()), r.gap_asked_at)


def lock_sequences(
    seq: Sequencer, session: Session, lockers: Iterable[str], now: int, *, due: bool = True
) -> None:
    """A replica's batch: lock the rows of its lockers (in id order: two replicas never wait
    for each other in a circle) and reload their sequence state, whatever another replica
    stored; then (`due`) take the lockers whose hole is due to be asked for again and that no
    other replica holds (SKIP LOCKED: never waits). SQLite has no row locks: its writers take
    turns on the whole database, which is as safe."""
    seq.forget()
    wanted = sorted(set(lockers))
    for chunk in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
        rows = session.execute(
            _sequence_rows().where(Locker.id.in_(chunk)).order_by(Locker.id).with_for_update()
        ).all()
        _restore_rows(seq, session, chunk, rows)
    seq.gapped_restored = True
    if not due:
        return
    limit = now - seq.gap_timeout_ms
    rows = [
        r for r in session.execute(
            _sequence_rows()
            .where(Locker.gap_since.is_not(None), Locker.gap_since <= limit,
                   or_(Locker.gap_asked_at.is_(None), Locker.gap_asked_at <= limit))
            .order_by(Locker.id).limit(500).with_for_update(skip_locked=True)
        ).all()
        if r.id not in seq.states
    ]
    _restore_rows(seq, session, [r.id for r in rows], rows)


def subscriptions(topics: Topics, settings: IngestSettings,
                  kinds: Iterable[TopicKind] = _SUBSCRIBED_KINDS) -> list[str]:
    """The ingest's topic filters (of `kinds`: all of them by default): a replica takes the
    shared form of the kinds replicas share."""
    shared = _SHARED_KINDS if settings.replica is not None else ()
    return [
        f"$share/{settings.share_group}/{topics.wildcard(kind)}" if kind in shared
        else topics.wildcard(kind)
        for kind in kinds
    ]


@dataclass
class _Lane:
    """One of the ingest's two broker connections.

    Events (with results, notifications and `events/gone`: what replicas share) and the
    lockers' retained presence (status, cells, config/applied) come on connections of their
    own. A broker delivers each connection's messages in order, so on one connection a connect
    storm's retained flood (17 messages a locker, 51,000 at 3,000 lockers) queued every event
    behind it for ~20 s; on two, the ingest takes events first and stores presence in between
    (`PRESENCE_BATCH_MAX` at a time, at least `PRESENCE_SHARE` of the time). The
    presence connection needs no persistent session: the broker sends every retained message
    again on each subscribe.
    """

    name: str
    kinds: tuple[TopicKind, ...]
    client_id: str
    persistent: bool
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: MessageInbox | None = None
    #: Waiting for messages (or not connected): not in the middle of a batch.
    idle: bool = True

    @property
    def waiting(self) -> int:
        return self.inbox.qsize() if self.inbox is not None else 0


class Ingest:
    """The ingest service, run in the caller's event loop: `await start()` ... `await stop()`,
    or `await run()` until cancelled or stopped."""

    def __init__(
        self,
        mqtt: ConsoleMqtt,
        db: Database,
        settings: IngestSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        notifier: ConsoleNotifier | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.notifier = notifier or ConsoleNotifier()
        self.db = db
        self.settings = settings or IngestSettings()
        self.topics = Topics(mqtt.prefix)
        self.stats = IngestStats()
        self._clock = clock
        self._seq = Sequencer(int(self.settings.gap_timeout_s * 1000),
                              baseline_from_first=self.settings.replica is None)
        #: When this replica last looked for holes due in the database (epoch ms).
        self._holes_looked_at = 0
        self._stop = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._delivered_tasks: set[asyncio.Task[None]] = set()
        #: Event ack watermarks not yet published, and lockers with an ack in flight.
        self._acks = AckPacer(int(self.settings.ack_interval_s * 1000), ACKS_IN_FLIGHT)
        self._ack_flush: asyncio.TimerHandle | None = None
        #: Sends the event acks of the current connection.
        self._publisher: ConfirmedPublisher | None = None
        self._client: aiomqtt.Client | None = None
        self._notify_tasks: set[asyncio.Task[None]] = set()
        #: Holes to ask the lockers for again, from the last committed batch.
        self._resends: list[ResendRequest] = []
        self._notify_busy: dict[tuple[str, str], asyncio.Event] = {}
        self._notify_slots = asyncio.Semaphore(self.settings.notify_concurrency)
        inline = self.settings.store_inline
        #: SQLite work is CPU under the GIL: a worker thread only adds GIL hand-offs per row
        #: (the sqlite3 module releases the GIL around every step). PostgreSQL waits on the
        #: server, which a thread overlaps with reading the next batch.
        self._store_inline = db.dialect == "sqlite" if inline is None else inline
        self._store_thread: ThreadPoolExecutor | None = None
        s = self.settings
        self._gate = QuarantineGate(keep_per_window=s.quarantine_keep_per_min, window_s=60.0)
        self._flood = FloodMeter(rate_per_s=s.flood_rate_per_s, window_s=s.flood_window_s)
        self._resync = ResyncPlanner(
            rate_per_s=s.resync_rate_per_s, burst=max(1.0, s.resync_rate_per_s * s.resync_check_s),
            retry_s=s.resync_retry_s, grace_s=s.resync_grace_s, now_ms=self._now_ms(),
        )
        #: When the next resync check is due (the loop's monotonic clock).
        self._resync_next = 0.0
        self._lag = LagMeter(alarm_ms=int(s.lag_alarm_s * 1000),
                             alarm_for_ms=int(s.lag_alarm_for_s * 1000),
                             started_at=self._now_ms())
        self._events = _Lane("events", _EVENT_LANE_KINDS, s.client_id, persistent=True)
        self._presence = _Lane("presence", _PRESENCE_LANE_KINDS, f"{s.client_id}-presence",
                               persistent=False)
        self._lanes = (self._events, self._presence)
        #: The last presence batch's start and end, and when presence last had a backlog
        #: (the loop's clock).
        self._presence_took = (0.0, 0.0)
        self._presence_behind_at = -1e9

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._subscribed.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Run in the background; return once subscribed (TimeoutError if not within timeout)."""
        if self._task is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name="ingest")
        waiter = asyncio.create_task(self._subscribed.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                self._task.result()  # raises what ended it
            raise TimeoutError(f"ingest not connected to {self.mqtt.host}:{self.mqtt.port}")

    def request_stop(self) -> None:
        """Ask `run()` to finish (safe from a signal handler)."""
        self._stop.set()

    async def stop(self) -> None:
        """Finish the batch in hand, disconnect cleanly; unprocessed messages stay queued on
        the broker for the next run."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run(self) -> None:
        """Connect, consume, reconnect with backoff, until `stop()`; beat meanwhile."""
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="ingest-store")
        try:
            await self._run()
        finally:
            self._store_thread.shutdown(wait=False)

    async def _run(self) -> None:
        beats = asyncio.create_task(self._beat_loop(), name="ingest-heartbeat")
        lanes = [asyncio.create_task(self._connect_loop(lane), name=f"ingest-{lane.name}")
                 for lane in self._lanes]
        try:
            done, _ = await asyncio.wait(lanes, return_when="FIRST_EXCEPTION")
            for task in done:
                task.result()  # raises what ended a lane early
        finally:
            for task in (beats, *lanes):
                task.cancel()
            for task in (beats, *lanes):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:  # a clean stop (not a crash or a cancel): `status` says stopped, not STALE
            await self._in_store_thread(self._write_stopped, self._now_ms())
        except Exception as exc:
            log.error("could not record the stop in ingest_replicas (%s)", _first_line(exc))

    async def _connect_loop(self, lane: _Lane) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        while not self._stop.is_set():
            inbox = MessageInbox()
            client = make_client(
                self.mqtt,
                identifier=lane.client_id,
                session_expiry_s=(None if not lane.persistent
                                  else s.session_expiry_s if s.replica is None
                                  else s.replica_session_expiry_s),
                receive_maximum=(s.presence_receive_maximum if lane is self._presence else
                                 min(65_535, max(s.receive_maximum, s.batch_max_backlog,
                                                 s.batch_max * 2))),
                # Unlimited in paho: the AckPacer keeps the acks in flight to ACKS_IN_FLIGHT, and
                # a limit makes paho scan every message in flight on each PUBACK.
                max_inflight=0,
                manual_ack=True,
                inbox=inbox,
            )
            try:
                async with client:
                    await client.subscribe(
                        [(topic, 1) for topic in subscriptions(self.topics, s, lane.kinds)])
                    if lane is self._events:
                        self.stats.connects += 1
                    log.info("%s connection up as %s (%s)", lane.name, lane.client_id,
                             ", ".join(k.value for k in lane.kinds))
                    if lane is self._events:
                        client.pending_calls_threshold = 100_000  # acks are many by design
                        self._resume_acks(client)
                    lane.subscribed.set()
                    if all(ln.subscribed.is_set() for ln in self._lanes):
                        self._subscribed.set()
                        log.info("connected to %s:%s as %s; subscribed to %s/+/...%s",
                                 self.mqtt.host, self.mqtt.port, s.client_id, self.mqtt.prefix,
                                 f" as replica {s.replica} (a shared subscription)"
                                 if s.replica else "")
                    delay = s.reconnect_min_s
                    await self._consume(client, inbox, lane)
            except aiomqtt.MqttError as exc:
                lane.subscribed.clear()
                self._subscribed.clear()
                if self._stop.is_set():
                    break
                hint = login_hint(exc)  # a refused login will not pass by itself: an error
                log.log(logging.ERROR if hint else logging.WARNING,
                        "broker connection lost (%s%s); reconnecting in %.1f s (%s connection)",
                        exc, hint, delay, lane.name)
                await self._pause(delay)
                delay = min(delay * 2, s.reconnect_max_s)
        lane.subscribed.clear()
        self._subscribed.clear()
        if lane is self._events:
            log.info("stopped")

    def subscriptions(self) -> list[str]:
        return subscriptions(self.topics, self.settings)

    # -- consuming ----------------------------------------------------------------------------
    async def _consume(self, client: aiomqtt.Client, inbox: MessageInbox, lane: _Lane) -> None:
        """Batch messages from this connection until stop or disconnect."""
        lane.inbox = inbox
        presence = lane is self._presence

        async def watch() -> None:
            # Messages go to the inbox; aiomqtt's iterator only ends with the connection.
            async for _ in client.messages:
                pass

        watch_task = asyncio.create_task(watch(), name="ingest-watch")
        stop_task = asyncio.create_task(self._stop.wait())
        loop = asyncio.get_running_loop()
        batch_max = self.settings.batch_max
        batch_max_backlog = max(batch_max, self.settings.batch_max_backlog)
        if presence:
            batch_max = batch_max_backlog = min(batch_max, PRESENCE_BATCH_MAX)
        try:
            while not self._stop.is_set():
                if not inbox.qsize():
                    waiter = asyncio.create_task(inbox.wait())
                    lane.idle = True  # nothing to do: presence may have the loop
                    done, _ = await asyncio.wait(
                        {waiter, watch_task, stop_task}, timeout=1.0,
                        return_when="FIRST_COMPLETED",
                    )
                    lane.idle = False
                    if waiter not in done:
                        waiter.cancel()
                    if watch_task in done and not inbox.qsize():
                        watch_task.result()  # raises the MqttError that ended the connection
                        raise aiomqtt.MqttError("message stream ended")
                if presence:
                    await self._events_first()
                    started = loop.time()
                # A backlog: bigger batches (fewer commits and acks per event).
                limit = batch_max if inbox.qsize() <= batch_max else batch_max_backlog
                batch = inbox.take(limit)
                if batch:
                    deadline = loop.time() + self.settings.batch_window_s
                    while len(batch) < limit:
                        if not inbox.qsize():
                            left = deadline - loop.time()
                            if left <= 0 or watch_task.done():
                                break
                            await asyncio.sleep(min(left, 0.001))
                            continue
                        batch += inbox.take(limit - len(batch))
                await self._handle(client, batch)
                if presence:
                    self._presence_took = (started, loop.time())
                    if len(batch) >= batch_max or inbox.qsize():
                        self._presence_behind_at = loop.time()
                else:
                    await self._resync_tick(client, backlog=inbox.qsize(),
                                            presence=self._presence.waiting)
        finally:
            lane.idle = True
            if self._ack_flush is not None and not presence:
                self._ack_flush.cancel()  # what is due goes out before the connection ends
                self._flush_acks(client)
            if self._notify_tasks and not presence:  # their acks go out on this connection
                await asyncio.wait(set(self._notify_tasks), timeout=self.settings.notify_drain_s)
            stop_task.cancel()
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watch_task

    async def _events_first(self) -> None:
        """Presence waits until the events lane is idle (nothing in its inbox, not in the
        middle of a batch: it yields the loop while it gathers one), or its share is due."""
        loop = asyncio.get_running_loop()
        began, ended = self._presence_took
        turn = ended + (ended - began) * (1 - PRESENCE_SHARE) / PRESENCE_SHARE
        deadline = min(turn, loop.time() + PRESENCE_MAX_WAIT_S)
        while (not self._events.idle and loop.time() < deadline
               and not self._stop.is_set()):
            await asyncio.sleep(0.002)

    async def _handle(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        """Parse, store (retrying on database errors), then PUBACK and publish event acks."""
        parsed = self._parse(batch)
        parsed.alarms.extend(self._meter(batch))
        self._resync.heard({lk for lk, _ in parsed.events} | {lk for lk, _ in parsed.cells}
                           | {lk for lk, _ in parsed.results.values()}, self._now_ms())
        if parsed.notifications:
            held = {id(m) for m, _, _ in parsed.notifications}
            for message, locker, note in parsed.notifications:
                task = asyncio.create_task(self._notify(client, message, locker, note))
                self._notify_tasks.add(task)
                task.add_done_callback(self._notify_tasks.discard)
            batch = [m for m in batch if id(m) not in held]  # acknowledged once handled
        if parsed.empty and not self._gap_due():
            for message in batch:
                ack(client, message)
            return
        delay = self.settings.reconnect_min_s
        while True:
            try:
                acks = await self._in_store_thread(self._store, parsed, self._now_ms())
                break
            except Exception as exc:
                self._seq.forget()
                if not _may_pass(exc):
                    log.error("database refused the batch of %d (%s); storing it message by "
                              "message", len(batch), _first_line(exc))
                    try:
                        acks = await self._store_one_by_one(batch, parsed)
                        break
                    except Exception as again:
                        if not _may_pass(again):
                            raise
                        exc = again
                log.error("database error, batch of %d not stored (%s); retrying in %.1f s",
                          len(batch), _first_line(exc), delay)
                if await self._pause(delay):
                    return  # not acknowledged: the broker delivers them again next time
                delay = min(delay * 2, self.settings.reconnect_max_s)
        for message in batch:
            ack(client, message)
        self._lag_fed(parsed)
        # Requests and acks to lockers go out on the events connection (this one, or the
        # presence one's sister): the lockers' acks are paced and confirmed there.
        out = self._client if self._client is not None else client
        resends, self._resends = self._resends, []
        for ask in resends:
            self._send_resend(out, ask)
        for locker, keys in parsed.delivered.items():
            self._send_delivered(out, locker, results=keys)
        self.stats.batches += 1
        self.stats.messages += len(batch)
        if acks:
            # Not awaited: waiting for the broker's PUBACKs would stall the next batch. At most
            # one ack per locker is in flight; a newer watermark waits for it and then goes out
            # alone (under load, one ack covers several batches); acks go out together at most
            # every `ack_interval_s`. A lost ack is harmless: the locker sends again and its
            # duplicate is acknowledged.
            for locker, seq in acks.items():
                self._acks.watermark(locker, seq)
            self._pace_acks(out)

    # -- lag and heartbeat (fleet_console/lag.py) ---------------------------------------------
    def _lag_fed(self, p: _Parsed) -> None:
        """Tell the lag meter what a committed batch held."""
        now = self._now_ms()
        self._lag.stored(now, [ev.at for _, ev in p.events])
        newest: dict[str, tuple[int, int]] = {}
        for lk, ev in p.events:
            at, seq = newest.get(lk, (ev.at, ev.seq))
            newest[lk] = (max(at, ev.at), max(seq, ev.seq))
        for lk, (at, seq) in newest.items():
            self._lag.heard(lk, now, at, seq)
        for lk in (set(p.statuses) | set(p.applied) | {lk for lk, _ in p.cells}
                   | {lk for lk, _ in p.results.values()}) - newest.keys():
            self._lag.heard(lk, now)

    async def _beat_loop(self) -> None:
        """Write the heartbeat every `beat_interval_s`, the first at once; a failed write is
        logged and its content kept for the next one (it never stops the ingest)."""
        while True:
            self._lag.waiting(sum(lane.waiting for lane in self._lanes))
            beat = self._lag.beat(self._now_ms())
            try:
                await self._in_store_thread(self._write_beat, beat)
                # Each locker's freshness in transactions of FRESHNESS_CHUNK, the loop free in
                # between: at 3,000 lockers one transaction held SQLite (inline) 60-200 ms
                # every beat, a stall every event arriving meanwhile waited out.
                heard = sorted(beat.lockers.items())
                for i in range(0, len(heard), FRESHNESS_CHUNK):
                    await self._in_store_thread(self._write_freshness,
                                                heard[i:i + FRESHNESS_CHUNK])
                    await asyncio.sleep(0)
            except Exception as exc:
                self._lag.unbeat(beat)
                log.error("heartbeat not written (%s); trying again in %.1f s",
                          _first_line(exc), self.settings.beat_interval_s)
            if await self._pause(self.settings.beat_interval_s):
                return

    def _write_stopped(self, now: int) -> None:
        with self.db.transaction() as s:
            s.execute(update(IngestReplica)
                      .where(IngestReplica.client_id == self.settings.client_id)
                      .values(stopped_at=now, last_beat_at=now))

    def _write_beat(self, beat: Beat) -> None:
        """The replica's row and the lag alarm, in one transaction (the freshness follows)."""
        s_ = self.settings
        with self.db.transaction() as s:
            row = s.get(IngestReplica, s_.client_id)
            if row is None:
                row = IngestReplica(client_id=s_.client_id, lag_alarm_id=None)
                s.add(row)
            row.host, row.pid = socket.gethostname(), os.getpid()
            row.started_at = self._lag.started_at
            row.last_beat_at, row.beat_interval_ms = beat.at, int(s_.beat_interval_s * 1000)
            row.inbox_depth = beat.inbox_depth
            row.lag_p50_ms, row.lag_max_ms = beat.lag_p50_ms, beat.lag_max_ms
            row.events_per_s, row.batches_per_s = beat.events_per_s, beat.batches_per_s
            row.lagging_since = beat.lagging_since
            row.stopped_at = None
            if row.lag_alarm_id is not None and not self._lag.alarm_open:
                # Back under, or an episode a previous run of this replica left open.
                s.execute(update(Alarm).where(Alarm.id == row.lag_alarm_id)
                          .values(ended_at=beat.at))
                log.info("ingest lag back under %.0f s: alarm ended", s_.lag_alarm_s)
                row.lag_alarm_id = None
            if beat.alarm_starts:
                alarm = Alarm(**self._alarm("", "ingest_lag", {
                    "replica": s_.client_id, "lag_p50_ms": beat.lag_p50_ms,
                    "lag_max_ms": beat.lag_max_ms, "inbox_depth": beat.inbox_depth,
                    "threshold_s": s_.lag_alarm_s, "for_s": s_.lag_alarm_for_s,
                    "since": beat.lagging_since}, beat.at))
                s.add(alarm)
                s.flush()
                row.lag_alarm_id = alarm.id
                self.stats.alarms += 1
                log.warning("ingest falls behind: stored events are %.0f s old (p50) since "
                            "%.0f s, %d messages waiting", (beat.lag_p50_ms or 0) / 1000,
                            (beat.at - (beat.lagging_since or beat.at)) / 1000,
                            beat.inbox_depth)

    def _write_freshness(self, heard: list[tuple[str, LockerHeard]]) -> None:
        with self.db.transaction() as s:
            _write_freshness(s, heard)

    def _send_delivered(
        self, client: aiomqtt.Client, locker: str, *, results: Sequence[ResultKey] = (),
        notifications: Sequence[str] = (),
    ) -> None:
        """Tell a locker what it may stop re-sending (only after what it names is committed).
        Not awaited; a lost one only means the locker sends again and is confirmed again."""
        n = DELIVERED_MAX_ITEMS
        for i in range(0, max(len(results), len(notifications)), n):
            payload = Delivered(results=list(results[i:i + n]),
                                notifications=list(notifications[i:i + n])).to_payload()
            task = asyncio.create_task(client.publish(
                self.topics.delivered(locker), payload, qos=1, timeout=10,
            ))
            self._delivered_tasks.add(task)
            task.add_done_callback(self._delivered_done)

    def _delivered_done(self, task: asyncio.Task[None]) -> None:
        self._delivered_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivered not confirmed by the broker: %s", task.exception())

    async def _in_store_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._store_inline:
            return fn(*args)
        # One thread: the two lanes' transactions (and the sequencer they share) one at a time.
        return await asyncio.get_running_loop().run_in_executor(
            self._store_thread, functools.partial(fn, *args))

    async def _store_one_by_one(
        self, batch: list[aiomqtt.Message], parsed: _Parsed
    ) -> dict[str, int]:
        """After the database refused a batch: each message in its own transaction, the one
        it refuses quarantined. Errors that may pass are raised (the batch is retried)."""
        acks: dict[str, int] = {}
        alarms = parsed.alarms
        for message in batch:
            unit = self._parse([message])
            unit.alarms, alarms = alarms, []
            try:
                done = await self._in_store_thread(self._store, unit, self._now_ms())
            except Exception as exc:
                if _may_pass(exc):
                    raise
                locker = locker_of(str(message.topic), self.mqtt.prefix) or "?"
                payload = message.payload if isinstance(message.payload, bytes) else b""
                q = _Quarantine(locker, str(message.topic), QuarantineReason.STORE_FAILED,
                                _first_line(exc), payload)
                refused = _Parsed(quarantine=[q], alarms=unit.alarms,
                                  refused_events=[(lk, ev.seq) for lk, ev in unit.events])
                try:
                    done = await self._in_store_thread(self._store, refused, self._now_ms())
                except Exception as lost:
                    if _may_pass(lost):
                        raise
                    log.error("message on %s refused and not quarantined (%s); dropped",
                              message.topic, _first_line(lost))
                    continue
            for locker, seq in done.items():
                acks[locker] = max(acks.get(locker, seq), seq)
        return acks

    def _meter(self, batch: list[aiomqtt.Message]) -> list[dict[str, Any]]:
        """Count each locker's messages; a `flood` alarm when one starts flooding."""
        counts: dict[str, int] = {}
        for message in batch:
            locker = locker_of(str(message.topic), self.mqtt.prefix)
            if locker is not None:
                counts[locker] = counts.get(locker, 0) + 1
        now = self._now_ms()
        alarms = []
        for locker, n in counts.items():
            flood = self._flood.observe(locker, n, now)
            if flood is not None:
                self.stats.floods += 1
                log.warning("locker %s floods the console: %d messages in %.0f s (alarm above "
                            "%.0f/s)", locker, flood.count, flood.window_s, flood.rate_per_s)
                alarms.append(self._alarm(locker, "flood", {
                    "messages": flood.count, "window_s": flood.window_s,
                    "rate_per_s": flood.rate_per_s}, now))
        return alarms

    async def _resync_tick(self, client: aiomqtt.Client, backlog: int = 0,
                           presence: int = 0) -> None:
        """Every `resync_check_s`: ask the lockers whose retained state the database lacks.
        Put off while a batch's worth of messages waits, or any presence at all: what looks
        lost may be in it (or in the broker's queue behind it), and answers would only add
        to the load."""
        period = self.settings.resync_check_s
        now = asyncio.get_running_loop().time()
        if period <= 0 or now < self._resync_next or presence or backlog >= max(
                self.settings.batch_max, RESYNC_BACKLOG):
            return
        if now - self._presence_behind_at < self.settings.resync_grace_s:
            return  # presence had a backlog lately: the broker may hold more of it
        self._resync_next = now + period
        try:
            # Read-only, and 40-70 ms at 3,000 lockers on SQLite: in a thread of its own, so
            # that the loop goes on taking events (a stall every check was a p99 of its own).
            views = await (asyncio.to_thread(self._resync_views)
                           if self.db.shared_across_threads
                           else self._in_store_thread(self._resync_views))
        except SQLAlchemyError as exc:  # the next check tries again
            log.warning("resync check failed (%s)", _first_line(exc))
            return
        asks = self._resync.plan(views, self._now_ms())
        for ask in asks:
            self._send_resync(client, ask)
        if asks:
            log.info("asked %d locker(s) to publish their retained state again (%s%s), "
                     "answers spread over %d ms", len(asks), ", ".join(a.locker for a in asks[:5]),
                     ", ..." if len(asks) > 5 else "", asks[0].spread_ms)

    def _resync_views(self) -> list[LockerView]:
        """Each locker's stored status, its cell snapshots' count and the oldest one's time."""
        with self.db.transaction() as s:
            cells = {
                r.locker: (int(r.n), r.oldest)
                for r in s.execute(
                    select(Cell.locker, func.count().label("n"),
                           func.min(Cell.updated_at).label("oldest")).group_by(Cell.locker)
                )
            }
            views = []
            for r in s.execute(select(Locker.id, Locker.online, Locker.last_status_at,
                                      Locker.declared_cells)):
                n, oldest = cells.get(r.id, (0, None))
                declared = len(r.declared_cells) if isinstance(r.declared_cells, list) else None
                views.append(LockerView(r.id, r.last_status_at, r.online, declared, n, oldest))
            return views

    def _send_resync(self, client: aiomqtt.Client, ask: ResyncAsk) -> None:
        """Not awaited: a lost request is asked again after `resync_retry_s`."""
        what = list(ask.what) if ask.what is not None else None
        payload = ResyncRequest.model_validate(
            {"at": self._now_ms(), "spread_ms": ask.spread_ms, "what": what}).to_payload()
        task = asyncio.create_task(client.publish(
            self.topics.resync(ask.locker), payload, qos=1, timeout=10))
        self._ack_tasks.add(task)
        task.add_done_callback(self._resync_done)
        self.stats.resyncs_asked += 1

    def _resync_done(self, task: asyncio.Task[None]) -> None:
        self._ack_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("resync request not confirmed by the broker: %s", task.exception())
    def _pace_acks(self, client: aiomqtt.Client) -> None:
        """Publish the due acks now, or once the pacing interval has passed."""
        if self._ack_flush is not None or not self._acks.due:
            return
        loop = asyncio.get_running_loop()
        wait_ms = self._acks.wait_ms(int(loop.time() * 1000))
        if wait_ms <= 0:
            self._flush_acks(client)
        else:
            self._ack_flush = loop.call_later(wait_ms / 1000, self._flush_acks, client)

    def _flush_acks(self, client: aiomqtt.Client) -> None:
        self._ack_flush = None
        if client is not self._client or self._publisher is None:
            return  # a connection that is gone; the new one sends what is due
        now = asyncio.get_running_loop().time()
        waiting = len(self._publisher)
        self._publisher.expire(now - ACK_CONFIRM_S)  # due again, sent below
        if len(self._publisher) < waiting:
            log.warning("%d event acks not confirmed by the broker within %.0f s; sending them "
                        "again", waiting - len(self._publisher), ACK_CONFIRM_S)
        for locker in self._acks.flush(int(now * 1000)):
            self._send_ack(client, locker)

    def _send_ack(self, client: aiomqtt.Client, locker: str) -> None:
        """Publish a locker's due watermark (paho directly: thousands a second, not awaited)."""
        assert self._publisher is not None
        seq = self._acks.take(locker)
        self.stats.acks_sent += 1
        self._publisher.publish(
            self.topics.events_ack(locker), EventAck(up_to_seq=seq).to_payload(),
            functools.partial(self._ack_done, client, locker, seq),
            asyncio.get_running_loop().time(),
        )

    def _send_resend(self, client: aiomqtt.Client, ask: ResendRequest) -> None:
        """Ask a locker for a hole again; not awaited (a lost request is asked again after
        another gap timeout)."""
        task = asyncio.create_task(client.publish(
            self.topics.events_resend(ask.locker),
            EventResend(from_seq=ask.from_seq, to_seq=ask.to_seq).to_payload(), qos=1,
            timeout=10,
        ))
        self._ack_tasks.add(task)
        task.add_done_callback(self._resend_done)
        self.stats.resends_asked += 1

    def _resend_done(self, task: asyncio.Task[None]) -> None:
        self._ack_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("resend request not confirmed by the broker: %s", task.exception())

    def _ack_done(self, client: aiomqtt.Client, locker: str, seq: int, confirmed: bool) -> None:
        if not confirmed:
            # Keep the watermark due: it goes out again with this connection's next acks, or
            # with the next connection (a locker's outbox must never stall).
            self._acks.failed(locker, seq)
        if client is not self._client:
            return  # an ack of a connection that is gone; the new one re-sends what is due
        self._acks.finished(locker)
        if confirmed:  # a newer watermark of this locker, or others waiting for room
            self._pace_acks(client)

    def _resume_acks(self, client: aiomqtt.Client) -> None:
        """On a new connection: forget acks in flight on the old one, send every due one."""
        old, self._publisher = self._publisher, ConfirmedPublisher(client)
        self._client = client
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        if old is not None:
            old.abandon()
        for task in list(self._ack_tasks):
            task.cancel()
        for locker in self._acks.reconnected():
            self._send_ack(client, locker)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _gap_due(self) -> bool:
        if self.settings.replica is not None:  # the holes are in the database
            return self._holes_due(self._now_ms())
        return self._seq.gap_due(self._now_ms())

    def _holes_due(self, now: int) -> bool:
        """A replica looks for holes due to be asked for again (in the database) at most
        every second, or every half gap timeout if shorter."""
        period = min(1000, self._seq.gap_timeout_ms // 2)
        return now - self._holes_looked_at >= period

    def _parse(self, batch: list[aiomqtt.Message]) -> _Parsed:
        out = _Parsed()
        for message in batch:
            topic = str(message.topic)
            parsed = self.topics.parse(topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if parsed is None or parsed.kind not in _SUBSCRIBED_KINDS:
                stray = locker_of(topic, self.mqtt.prefix)
                if stray is None or not payload:
                    log.log(logging.WARNING if payload else logging.DEBUG,
                            "skipped message on unexpected topic %s", topic)
                else:
                    out.quarantine.append(_Quarantine(
                        stray, topic, QuarantineReason.UNEXPECTED_TOPIC,
                        "not a topic of the contract", payload))
                continue
            if not payload and parsed.kind in _RETAINED_KINDS:
                log.info("retained message on %s was cleared; nothing to store", topic)
                continue
            locker = parsed.locker
            secret = parsed.kind is TopicKind.NOTIFY
            if len(payload) > self.settings.max_payload_bytes:
                out.quarantine.append(_Quarantine(
                    locker, topic, QuarantineReason.TOO_LARGE,
                    f"{len(payload)} bytes (at most {self.settings.max_payload_bytes})",
                    payload, secret))
                continue
            try:
                if parsed.kind is TopicKind.STATUS:
                    out.statuses[locker] = Status.from_payload(payload)
                elif parsed.kind is TopicKind.CELL:
                    snap = CellSnapshot.from_payload(payload)
                    if snap.cell != parsed.cell:
                        raise MalformedPayload(
                            f"cell {snap.cell} sent on the topic of cell {parsed.cell}"
                        )
                    out.cells[(locker, snap.cell)] = snap
                    out.cell_sources[(locker, snap.cell)] = (topic, payload)
                elif parsed.kind is TopicKind.CONFIG_APPLIED:
                    out.applied[locker] = ConfigApplied.from_payload(payload)
                elif parsed.kind is TopicKind.EVENTS:
                    out.events.append((locker, Event.from_payload(payload)))
                elif parsed.kind is TopicKind.EVENTS_GONE:
                    gone = EventsGone.from_payload(payload)
                    out.gone.append((locker, gone.from_seq, gone.to_seq))
                elif parsed.kind is TopicKind.NOTIFY:
                    try:
                        note = Notification.from_payload(payload)
                    except MalformedPayload as exc:  # its reason may quote a value (a code)
                        raise MalformedPayload(_without_values(exc.reason)) from None
                    out.notifications.append((message, locker, note))
                else:
                    result = CommandResult.from_payload(payload)
                    out.delivered.setdefault(locker, []).append(
                        ResultKey(cmd_id=result.cmd_id, status=result.status))
                    prior = out.results.get(result.cmd_id)
                    if not (prior and result.status == "accepted"):
                        out.results[result.cmd_id] = (locker, result)
            except MalformedPayload as exc:
                self.stats.malformed += 1
                out.quarantine.append(_Quarantine(
                    locker, topic, QuarantineReason.MALFORMED, exc.reason, payload, secret))
        return out

    # -- relayed notifications ----------------------------------------------------------------
    async def _notify(
        self, client: aiomqtt.Client, message: aiomqtt.Message, locker: str, note: Notification
    ) -> None:
        """Send one notification unless seen before, record it, then acknowledge it."""
        key = (locker, note.id)
        while (busy := self._notify_busy.get(key)) is not None:  # a duplicate in flight
            await busy.wait()
        done = self._notify_busy[key] = asyncio.Event()
        try:
            async with self._notify_slots:
                handled = await self._notify_once(locker, note)
        except Exception:
            log.exception("notification %s of locker %s not handled", note.id, locker)
            handled = False
        finally:
            del self._notify_busy[key]
            done.set()
        if handled and client is self._client:
            ack(client, message)
            self._send_delivered(client, locker, notifications=[note.id])

    async def _notify_once(self, locker: str, note: Notification) -> bool:
        """False if stopped before the outcome was recorded (then it is not acknowledged)."""
        try:
            if await self._in_db(self._notification_seen, locker, note.id):
                self.stats.notify_duplicates += 1
                log.info("notification %s of locker %s seen before: not sent again",
                         note.id, locker)
                return True
            delivery = await self._deliver(locker, note)
            row = {"locker": locker, "notification_id": note.id, "channel": note.channel,
                   "recipient": mask_recipient(note.to), "status": delivery.status,
                   "detail": delivery.detail, "at": self._now_ms()}
            await self._in_db(self._record_notification, row)
        except _Stopped:
            return False
        self.stats.notifications += 1
        level = logging.INFO if delivery.status == "sent" else logging.WARNING
        log.log(level, "notification %s of locker %s: %s to %s %s (%s)", note.id, locker,
                note.channel, row["recipient"], delivery.status, delivery.detail)
        return True

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` or until stop; True if stopped (backoffs end at once on a stop)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    async def _deliver(self, locker: str, note: Notification) -> Delivery:
        """Send, trying a transient failure again with a doubling wait (raises _Stopped on stop,
        so the message stays unacknowledged and the broker hands it over again)."""
        attempts, delay = self.notifier.attempts, self.notifier.retry_s
        for attempt in range(1, attempts + 1):
            delivery = await self.notifier.deliver(note)
            if not delivery.transient or attempt == attempts:
                break
            log.warning("notification %s of locker %s: try %d of %d failed (%s); again in %.1f s",
                        note.id, locker, attempt, attempts, delivery.detail, delay)
            if await self._pause(delay):
                raise _Stopped
            delay *= 2
        if attempt > 1:
            delivery = replace(delivery, detail=f"{delivery.detail} (try {attempt} of {attempts})")
        return delivery

    async def _in_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` with the batch's threading rule, retried on database errors until
        stop (then _Stopped)."""
        delay = self.settings.reconnect_min_s
        while True:
            try:
                if self._store_inline:
                    return fn(*args)
                return await asyncio.to_thread(fn, *args)
            except SQLAlchemyError as exc:
                log.error("database error on a notification (%s); retrying in %.1f s",
                          exc.__class__.__name__, delay)
                if await self._pause(delay):
                    raise _Stopped from None
                delay = min(delay * 2, self.settings.reconnect_max_s)

    def _notification_seen(self, locker: str, notification_id: str) -> bool:
        with self.db.transaction() as s:
            return s.scalar(select(NotificationRow.id).where(
                NotificationRow.locker == locker,
                NotificationRow.notification_id == notification_id,
            )) is not None

    def _record_notification(self, row: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            s.execute(
                insert_for(s, NotificationRow).on_conflict_do_nothing(
                    index_elements=["locker", "notification_id"]
                ),
                [row],
            )

    # -- storing (runs in a worker thread, one batch at a time) ------------------------------
    def _store(self, p: _Parsed, now: int) -> dict[str, int]:
        """One transaction for the batch; returns the event acks to send after the commit."""
        try:
            with self.db.transaction() as s:
                touched = (
                    set(p.statuses) | set(p.applied) | {lk for lk, _ in p.cells}
                    | {lk for lk, _ in p.events} | {lk for lk, _ in p.results.values()}
                    | {lk for lk, _ in p.refused_events}
                )
                upsert(s, Locker, [{"id": lk} for lk in sorted(touched)], ["id"], [])
                looked = self.settings.replica is not None and self._holes_due(now)
                if self.settings.replica is not None:
                    lock_sequences(self._seq, s, touched | {lk for lk, _, _ in p.gone}, now,
                                   due=looked)
                self._keep_declared_cells(s, p)
                self._store_presence(s, p, now)
                acks, alarms, changed = self._sequence_events(s, p, now)
                alarms = p.alarms + self._store_quarantine(s, p.quarantine, now) + alarms
                if alarms:
                    s.execute(insert_for(s, Alarm), alarms)
                    self.stats.alarms += len(alarms)
                if changed:
                    s.execute(
                        update(Locker),
                        [
                            {"id": lk, "acked_seq": st.acked, "gap_since": st.gap_since,
                             "gap_asked_at": st.asked_at}
                            for lk, st in ((lk, self._seq.states[lk]) for lk in sorted(changed))
                        ],
                    )
            if looked:
                self._holes_looked_at = now
            return acks
        except BaseException:
            self._seq.forget()  # the in-memory watermarks may be ahead of the rolled-back rows
            raise

    def _keep_declared_cells(self, s: Session, p: _Parsed) -> None:
        """Move the snapshots of cells the locker never declared to the quarantine."""
        if not p.cells:
            return
        lockers = {lk for lk, _ in p.cells}
        declared: dict[str, set[int] | None] = {
            lk: None if st.cells is None else set(st.cells)
            for lk, st in p.statuses.items() if st.online and lk in lockers
        }
        rest = lockers - declared.keys()
        if rest:
            for lk, cells in s.execute(
                select(Locker.id, Locker.declared_cells).where(Locker.id.in_(rest))
            ):
                declared[lk] = None if cells is None else {int(c) for c in cells}
        legacy = [lk for lk in lockers if declared.get(lk) is None]
        known: dict[str, set[int]] = {lk: set() for lk in legacy}
        if legacy:
            for lk, cell in s.execute(
                select(Cell.locker, Cell.cell).where(Cell.locker.in_(legacy))
            ):
                known[lk].add(cell)
        cap = self.settings.max_undeclared_cells
        for key in sorted(p.cells):
            lk, cell = key
            cells = declared.get(lk)
            if cells is not None:
                if cell in cells:
                    continue
                why = f"cell {cell} is not among the {len(cells)} cells of its status"
            else:
                if cell in known[lk] or len(known[lk]) < cap:
                    known[lk].add(cell)
                    continue
                why = f"cell {cell} past the {cap} cells kept for a locker declaring none"
            del p.cells[key]
            topic, payload = p.cell_sources.get(key, ("", b""))
            p.quarantine.append(
                _Quarantine(lk, topic, QuarantineReason.UNDECLARED_CELL, why, payload))

    def _store_quarantine(
        self, s: Session, entries: list[_Quarantine], now: int
    ) -> list[dict[str, Any]]:
        """Insert what the gate keeps; returns the `quarantined` alarms to raise."""
        rows: list[dict[str, Any]] = []
        alarms: list[dict[str, Any]] = []
        for q in entries:
            admission = self._gate.admit(q.locker, q.reason, now)
            topic = bounded_text(q.topic, MAX_TOPIC_CHARS)
            detail = bounded_text(q.detail, MAX_DETAIL_CHARS)
            if q.secret:
                detail = _without_values(detail)
            if admission.keep:
                rows.append({"locker": q.locker, "topic": topic, "reason": q.reason,
                             "detail": detail, "excerpt": excerpt(q.payload, secret=q.secret),
                             "size": len(q.payload), "at": now})
                log.warning("skipped %s payload on %s: %s (quarantined)", q.reason, topic, detail)
            if admission.alarm:
                alarms.append(self._alarm(q.locker, "quarantined", {
                    "reason": q.reason, "topic": topic, "suppressed": admission.suppressed}, now))
        if rows:
            s.execute(insert_for(s, QuarantineRow), rows)
        self.stats.quarantined += len(entries)
        return alarms

    def _store_presence(self, s: Session, p: _Parsed, now: int) -> None:
        online = [
            {
                "id": lk, "online": True, "version": st.version, "boot_id": st.boot_id,
                "started_at": st.started_at, "last_status_at": now,
                "boards": [b.model_dump(mode="json") for b in st.boards or []],
                "declared_cells": st.cells,
                "outbox_depth": st.outbox.depth if st.outbox else None,
                "outbox_oldest_at": st.outbox.oldest_at if st.outbox else None,
            }
            for lk, st in p.statuses.items() if st.online
        ]
        offline = [
            {"id": lk, "online": False, "last_status_at": now}
            for lk, st in p.statuses.items() if not st.online
        ]
        upsert(s, Locker, online, ["id"])
        upsert(s, Locker, offline, ["id"])
        upsert(
            s, Locker,
            [
                {"id": lk, "config_version": a.version, "config_hash": a.hash,
                 "config_applied_at": now}
                for lk, a in p.applied.items()
            ],
            ["id"],
        )
        upsert(
            s, Cell,
            [
                {"locker": lk, "cell": c.cell, "state": c.state, "door": c.door, "size": c.size,
                 "since": c.since, "updated_at": now}
                for (lk, _), c in p.cells.items()
            ],
            ["locker", "cell"],
        )
        record_command_results(
            s,
            [
                {"cmd_id": cmd_id, "locker": lk, "status": r.status, "result_reason": r.reason,
                 "result_data": r.data, "updated_at": now}
                for cmd_id, (lk, r) in p.results.items()
            ],
        )

    def _sequence_events(
        self, s: Session, p: _Parsed, now: int
    ) -> tuple[dict[str, int], list[dict[str, Any]], set[str]]:
        """Insert new events, move watermarks, raise gap alarms; (acks, alarms, changed)."""
        _restore_sequences(
            self._seq, s,
            [lk for lk, _ in p.events] + [lk for lk, _ in p.refused_events]
            + [lk for lk, _, _ in p.gone],
        )
        done = self._seq.sequence(
            [(lk, ev.seq) for lk, ev in p.events] + p.refused_events, now, p.gone
        )
        self._resends.extend(done.resend)  # both lanes' batches: sent by the next to finish
        rows = []
        for i in done.store:
            if i >= len(p.events):
                continue  # refused by the database: its quarantine row is what is kept
            lk, ev = p.events[i]
            rows.append({"locker": lk, "seq": ev.seq, "event_id": ev.id, "at": ev.at,
                         "type": ev.type, "data": ev.data, "received_at": now})
        self.stats.events_new += done.new
        alarms: list[dict[str, Any]] = []
        gaps = done.gaps
        if self.settings.replica is not None:
            # Replicas see a locker's events out of order all the time: a hole is worth an
            # alarm only once it outlived the gap timeout (its first resend request).
            gaps = [SeqGap(a.locker, a.from_seq, a.to_seq + 1) for a in done.resend
                    if not a.again]
        for gap in gaps:
            alarms.append(self._alarm(gap.locker, "seq_gap",
                                      {"expected": gap.expected, "got": gap.got}, now))
            log.warning("locker %s: seq gap, expected %d, got %d",
                        gap.locker, gap.expected, gap.got)
        for lost in done.permanent:
            alarms.append(self._alarm(lost.locker, "seq_gap_permanent", {
                "missing_from": lost.missing_from, "missing_to": lost.missing_to}, now))
            log.warning("locker %s: events %d..%d are gone from its outbox; acknowledging past "
                        "them", lost.locker, lost.missing_from, lost.missing_to)
        for ask in done.resend:
            log.info("locker %s: events %d..%d missing; asking for them again",
                     ask.locker, ask.from_seq, ask.to_seq)
        if rows:
            s.execute(
                insert_for(s, EventRow).on_conflict_do_nothing(index_elements=["locker", "seq"]),
                rows,
            )
            store_parcel_facts(s, rows)  # parcels, returns, kiosk logins (parcel_records.py)
        return done.acks, alarms, done.changed

    @staticmethod
    def _alarm(locker: str, kind: str, data: dict[str, Any], now: int) -> dict[str, Any]:
        return {"locker": locker, "kind": kind, "data": data, "at": now, "received_at": now}


def _write_freshness(s: Session, heard: list[tuple[str, LockerHeard]]) -> None:
    """Each locker heard of: when, and its newest stored event (never moved backwards). One
    Core statement executed many, in id order (the batch's upserts lock rows in that order
    too, so a heartbeat and a batch in two threads cannot deadlock on PostgreSQL)."""
    if not heard:
        return
    table = Locker.__table__
    assert isinstance(table, Table)
    t = table.c
    at: BindParameter[int] = bindparam("b_at", type_=BigInteger)
    seq: BindParameter[int] = bindparam("b_seq", type_=BigInteger)
    s.execute(
        update(table).where(t.id == bindparam("b_id")).values(
            last_heard_at=bindparam("b_heard", type_=BigInteger),
            last_event_at=case((and_(at.is_not(None), or_(t.last_event_at.is_(None),
                                                          t.last_event_at < at)), at),
                               else_=t.last_event_at),
            stored_seq=case((and_(seq.is_not(None), or_(t.stored_seq.is_(None),
                                                         t.stored_seq < seq)), seq),
                            else_=t.stored_seq),
        ),
        [{"b_id": lk, "b_heard": h.last_heard_at, "b_at": h.last_event_at,
          "b_seq": h.stored_seq} for lk, h in heard],
    )


def _may_pass(exc: BaseException) -> bool:
    """A database error worth retrying the same batch for (the connection, a lock, a full disk),
    as opposed to a value the database refuses, which retrying never changes."""
    if isinstance(exc, SQLAlchemyError):
        return isinstance(exc, OperationalError | InterfaceError) or bool(
            getattr(exc, "connection_invalidated", False))
    return False


def _first_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


class _Stopped(Exception):
    """The ingest is stopping while a notification waits for the database."""


def _without_values(reason: str) -> str:
    """A validation reason without the `(got ...)` it quotes from the payload."""
    head, got, _ = reason.partition(" (got ")
    if not got:
        return reason
    more = re.search(r" \(and \d+ more problems?\)$", reason)
    return head + (more.group(0) if more else "")
