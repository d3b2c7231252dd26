"""The locker's MQTT link to the fleet: an adapter that knows MQTT and nothing of cells or stores.

It meets the daemon core only through `LockerPort` (defined here, implemented by the app), so the
core never sees a socket and this module never sees the store, the boards or the machines.

What it guarantees (docs/architecture.md, "MQTT contract" and "Nothing is lost"):
- on every (re)connect: retained online status, QoS 1 subscriptions to `cmd`, `config` and
  `events/ack`, every cell snapshot again (retained), then the outbox from the last acknowledged
  seq; the last will is the retained `{"online": false}`, and a clean stop publishes it too;
- the outbox stays the source of truth: events are read through the port, sent in seq order with
  at most `max_in_flight` unacknowledged, re-sent (same seq, same id) after a reconnect or when
  acks stall, and dropped only when the console acks them; a range the console asks for on
  `events/resend` goes out again from the outbox, and only seqs sent once and no longer held
  are named on `events/gone` (`answer_resend`);
- command results and relayed notifications, which the core stored before handing them over,
  are kept the same way: re-sent after a reconnect and every `resend_after` until the console
  names them on `delivered` (a broker whose queue for the ingest overflowed drops them after
  its PUBACK to us, so a PUBACK proves nothing), then the port is told; one the console never
  confirms is given up after `deliver_for_s`;
- a persistent session (MQTT 5 clean start off + session expiry, or 3.1.1 clean session off), so
  QoS 1 commands published while the locker is away are delivered when it comes back; incoming
  messages are PUBACKed only after the core handled them, so one the process dies with comes again
  (the core's replay cache makes that harmless);
- on the console's `resync` request (it lacks some retained state: a broker dropped it on the
  way in a connect storm): status, every cell snapshot and config/applied again, retained, after
  a random delay in [0, spread_ms], at most once per `resync_min_interval` (`ResyncGate`);
- reconnect for ever: the first attempt after a lost connection within a random delay in
  [0, `reconnect_spread`] (so a fleet does not come back in lock step after a broker restart),
  then exponential backoff with jitter; network errors never leave `run()`, and neither a port
  exception nor a malformed message stops the link.

The window, ack and resend rules are pure objects (`OutboxWindow`, `UntilDelivered` in
daemon/io/outbox_window.py; `ResyncGate`, `Backoff` in daemon/io/fleet_pacing.py); this
module does their MQTT calls and reads the clock for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiomqtt
from aiomqtt import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract.messages import (
    CellSnapshot,
    CommandResult,
    ConfigApplied,
    Delivered,
    Event,
    EventAck,
    EventResend,
    EventsGone,
    MalformedPayload,
    Message,
    Notification,
    ResyncRequest,
    Status,
)
from contract.topics import Topics
from daemon.io.fleet_pacing import Backoff, ResyncGate, ResyncVerdict
from daemon.io.outbox_window import (
    AckVerdict,
    OutboxWindow,
    Outgoing,
    UntilDelivered,
    answer_resend,
)
from fleet_io.mqtt_client import (
    DEFAULT_SESSION_EXPIRY_S,
    LOGIN_REFUSED,
    ack,
    code_value,
    make_client,
)

if TYPE_CHECKING:
    from daemon.config import MqttSettings

#: CONNACK codes that mean "this broker does not speak MQTT 5": 3.1.1's 1 as paho maps it (0x84).
_UNSUPPORTED_PROTOCOL = {1, 0x84}
#: A refused login is logged at level error at most this often (seconds); the retries between
#: are logged at info.
REFUSAL_REPEAT_S = 60.0

LogFn = Callable[..., None]
#: `events/resend` ranges kept waiting for the publisher; each spans at most MAX_RESEND_RANGE.
_MAX_RESEND_ASKS = 16
_logger = logging.getLogger(__name__)


class LockerPort(Protocol):
    """What the link needs from the daemon core; the app implements it (daemon/fleet.py)."""

    locker_id: str

    def status(self) -> dict:
        """The online Status fields: online, version, boot_id, started_at, boards."""
        ...

    def cell_snapshots(self) -> list[dict]:
        """CellSnapshot dicts of every cell: cell, state, door, size, since."""
        ...

    def unacked_events(self, after_seq: int, limit: int) -> list[dict]:
        """Outbox events with seq > after_seq, ascending, at most `limit` (Event dicts)."""
        ...

    def events_acknowledged(self, up_to_seq: int) -> None:
        """The console stored every event up to `up_to_seq`: drop them from the outbox."""
        ...

    def outbox_summary(self) -> dict:
        """OutboxSummary dict: {"depth", "oldest_at"}. Optional: a port without it reports
        no outbox in the status."""
        ...

    async def command_received(self, payload: bytes, topic_locker: str) -> None:
        """Verify and execute a command; answer through `FleetLink.send_result`."""
        ...

    async def config_received(self, payload: bytes) -> None:
        """Verify and apply a configuration; answer through `FleetLink.send_config_applied`."""
        ...

    def delivered(self, results: list[tuple[str, str]], notifications: list[str]) -> None:
        """The console has these (cmd_id, status) results and notification ids: forget them.
        Optional: a port without it keeps nothing to forget."""
        ...

    def config_applied(self) -> dict | None:
        """The running configuration's ConfigApplied fields (version, hash), None if none.
        Optional: without it a resync republishes the last one sent through this link."""
        ...


def _default_log(kind: str, level: str = "info", **fields: Any) -> None:
    _logger.log(logging.getLevelName(level.upper()), "mqtt_%s %s", kind,
                " ".join(f"{k}={v}" for k, v in fields.items()))


@dataclass
class LinkStats:
    """Counters for logs, tests and benchmarks."""

    connects: int = 0
    events_published: int = 0
    events_acked: int = 0
    #: Events published again on the console's `events/resend`, and `events/gone` runs said.
    events_resent: int = 0
    gone_said: int = 0
    cells_published: int = 0
    results_published: int = 0
    commands_received: int = 0
    configs_received: int = 0
    #: The console's `resync` requests received, and republishes made for them.
    resyncs_asked: int = 0
    resyncs_done: int = 0


@dataclass
class _Inbound:
    """A received cmd/config message waiting for the core, with the connection to PUBACK on."""

    kind: str
    payload: bytes
    topic_locker: str
    client: aiomqtt.Client
    mid: int
    qos: int


class FleetLink:
    """One locker's MQTT connection to the fleet broker, kept up for ever by `run()`.

    Every method but `run()` and `wait_connected()` is synchronous and must be called from the
    event loop that runs `run()` (the core calls them right after its durable commits).
    """

    def __init__(
        self,
        port: LockerPort,
        settings: MqttSettings,
        *,
        log: LogFn | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        protocol: ProtocolVersion | None = None,
        max_in_flight: int = 100,
        resend_after: float = 30.0,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        result_expiry_s: int | None = 24 * 3600,
        timeout: float = 10.0,
        deliver_for_s: float = 24 * 3600,
        reconnect_spread: float = 5.0,
        resync_min_interval: float = 10.0,
        rng: random.Random | None = None,
        status_refresh_s: float = 60.0,
    ) -> None:
        """`protocol` None: MQTT 5, falling back to 3.1.1 for good if the broker refuses 5;
        `ProtocolVersion.V311` or `.V5` forces one. `resend_after`: re-send the unacknowledged
        events, results and notifications when no ack came for that long. `result_expiry_s`:
        MQTT 5 message expiry of command results (None: none). `deliver_for_s`: how long a
        result or notification is offered to a console that never confirms it.
        `reconnect_spread`: the first reconnect after a lost connection waits a random delay up
        to this long. `resync_min_interval`: the least time between two answers to `resync`.
        `status_refresh_s`: while the last status reported events waiting in the outbox, the
        status is published again this often (so the console sees the backlog shrink)."""
        self.port = port
        self.settings = settings
        self.locker_id = port.locker_id
        self.topics = Topics(settings.prefix)
        self.stats = LinkStats()
        self._log_fn: LogFn = log or _default_log
        self._rng = rng or random.Random()
        self._backoff = Backoff(backoff_initial, backoff_max, self._rng,
                                first_spread=reconnect_spread)
        self._resync = ResyncGate(resync_min_interval, self._rng)
        if protocol is None:  # the configuration decides: "auto", "5" or "3.1.1"
            protocol = {"5": ProtocolVersion.V5, "3.1.1": ProtocolVersion.V311}.get(
                getattr(settings, "protocol", "auto")
            )
        self._protocol = protocol or ProtocolVersion.V5
        self._may_fall_back = protocol is None
        #: A session with the current protocol version got its CONNACK: no more switching.
        self._version_confirmed = False
        self._max_in_flight = max_in_flight
        self._session_expiry_s = session_expiry_s
        self._result_expiry_s = result_expiry_s
        self._timeout = timeout
        #: When a refused login was last logged at level error (monotonic), and refusals since.
        self._refusal_said_at: float | None = None
        self._refusals_unsaid = 0

        t, lk = self.topics, self.locker_id
        self._t_status = t.status(lk)
        self._t_events = t.events(lk)
        self._t_result = t.cmd_result(lk)
        self._t_applied = t.config_applied(lk)
        self._t_gone = t.events_gone(lk)
        self._inbound_kinds = {
            t.cmd(lk): "cmd", t.config(lk): "config", t.events_ack(lk): "ack",
            t.delivered(lk): "delivered", t.events_resend(lk): "resend",
            t.resync(lk): "resync",
        }
        #: The console's `events/resend` ranges not answered yet (at most _MAX_RESEND_ASKS;
        #: one more is dropped with a log line: the console asks again after its gap timeout).
        self._resend_asks: list[EventResend] = []

        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        # What the publisher owes the broker; survives reconnects.
        self._status_due = False
        self._status_refresh_s = status_refresh_s
        #: When the last status reporting a non-empty outbox went out (monotonic; None: the
        #: last one reported none or an empty one).
        self._backlog_said_at: float | None = None
        self._dirty_cells: set[int] = set()
        #: The outbox's events: window, acks and resends (the policy; this class does the I/O).
        self._window = OutboxWindow(max_in_flight, resend_after, time.monotonic())
        #: Results and notifications until the console confirms them, in the order queued.
        self._pending = UntilDelivered(resend_after, deliver_for_s)
        self._applied: bytes | None = None
        #: The last config/applied sent through this link (a resync may need it again).
        self._applied_last: bytes | None = None
        self._inbox: asyncio.Queue[_Inbound] = asyncio.Queue()

    def _log(self, kind: str, **fields: Any) -> None:
        try:
            self._log_fn(kind, **fields)
        except Exception:  # a broken log sink must not break the link
            _logger.exception("fleet link log callback failed")

    # --- the core's side ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True once connected, subscribed and the online status is out; False when cut off."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until `connected`; raises TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    def notify(self, changed_cells: Iterable[int] = (), events: bool = False) -> None:
        """After a durable commit: publish these cells' snapshots and any new outbox events.

        Never blocks; many calls before the publisher runs make one pass.
        """
        self._dirty_cells.update(changed_cells)
        if events:
            self._window.outbox_grew()
        self._wake.set()

    def send_result(self, result: dict) -> None:
        """Queue a command result for `cmd/result` (QoS 1, in order), kept and re-sent until
        the console confirms it on `delivered`. The core stored it first (replay cache).

        Raises MalformedPayload (a ValueError) if it does not fit CommandResult: a core bug.
        """
        msg = CommandResult.from_dict(result)
        self._pending.add_result(
            f"{msg.cmd_id}/{msg.status}", self._t_result, msg.to_payload(), time.monotonic()
        )
        self._wake.set()

    def send_notification(self, message: dict) -> None:
        """Queue an SMS / e-mail for the console (`notify`, QoS 1), kept and re-sent until the
        console confirms it on `delivered`; the core stored it first. The console sends a
        given id once, however often it arrives.

        Raises MalformedPayload (a ValueError) if it does not fit Notification.
        """
        msg = Notification.from_dict(message)
        self._pending.add_notification(
            msg.id, self.topics.notify(self.locker_id), msg.to_payload(), time.monotonic()
        )
        self._wake.set()

    @property
    def undelivered(self) -> int:
        """Results and notifications the console has not confirmed yet."""
        return len(self._pending)

    def send_config_applied(self, applied: dict) -> None:
        """Publish the running configuration, retained, on `config/applied` (latest wins)."""
        self._applied = self._applied_last = ConfigApplied.from_dict(applied).to_payload()
        self._wake.set()

    async def publish_notification(self, message: dict, timeout: float = 10.0) -> None:
        """Hand an SMS / e-mail to the console (`send_notification`). Raises ConnectionError
        while the link is down: the caller tells the client."""
        if self._client is None or not self.connected:
            raise ConnectionError("the fleet link is not connected")
        self.send_notification(message)

    def publish_status(self) -> None:
        """Publish the online status again (a board went offline or came back)."""
        self._status_due = True
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and stay connected for ever; returns only by cancellation.

        A cancelled run publishes the retained `{"online": false}` before disconnecting cleanly.
        """
        worker = asyncio.create_task(self._inbound_worker(), name=f"fleet-link-in-{self.locker_id}")
        try:
            while True:
                _raise_if_cancelling()
                try:
                    await self._session()
                except MqttConnectError as exc:
                    code = code_value(exc.rc)
                    if (
                        self._may_fall_back
                        and self._protocol is ProtocolVersion.V5
                        and code in _UNSUPPORTED_PROTOCOL
                    ):
                        self._protocol = ProtocolVersion.V311
                        self._log("protocol_fallback", to="3.1.1", reason=str(exc))
                        continue
                    self._refused(code, str(exc))
                except (aiomqtt.MqttError, OSError) as exc:
                    self._log("disconnected", reason=str(exc) or type(exc).__name__)
                    refused = isinstance(exc, ConnectionRefusedError) or "refused" in str(exc)
                    if self._may_fall_back and not self._version_confirmed and not refused:
                        # Some brokers (amqtt) drop a v5 CONNECT instead of refusing it:
                        # alternate versions until one gets a CONNACK.
                        self._protocol = (
                            ProtocolVersion.V311
                            if self._protocol is ProtocolVersion.V5
                            else ProtocolVersion.V5
                        )
                        self._log("protocol_switch", to=_version_name(self._protocol))
                except Exception as exc:  # a bug here must not take the daemon down: retry
                    self._log("link_error", error=repr(exc))
                delay = self._backoff.next_delay()
                self._log("reconnect", in_s=round(delay, 3))
                await asyncio.sleep(delay)
        finally:
            self._connected.clear()
            self._client = None
            with contextlib.suppress(asyncio.CancelledError):
                await _stop_tasks({worker})

    def _refused(self, code: int | None, reason: str) -> None:
        """A CONNACK refusal. A refused login is the operator's to fix, so it is an error with
        what to check, said at most once per REFUSAL_REPEAT_S while the retries go on."""
        if code not in LOGIN_REFUSED:
            self._log("connect_refused", level="warning", reason=reason, code=code)
            return
        self._refusals_unsaid += 1
        now = time.monotonic()
        if self._refusal_said_at is not None and now - self._refusal_said_at < REFUSAL_REPEAT_S:
            self._log("connect_refused", reason=reason, code=code, username=self.settings.username)
            return
        self._log(
            "connect_refused", level="error", reason=reason, code=code,
            username=self.settings.username, refusals=self._refusals_unsaid,
            hint=(f"the broker refused the login of user {self.settings.username!r}: check "
                  "[mqtt] username/password in this locker's configuration and the broker's "
                  f"accounts (`locker-broker add-locker {self.locker_id}` creates one and prints "
                  "its password); retrying with backoff"),
        )
        self._refusal_said_at, self._refusals_unsaid = now, 0

    def _make_client(self) -> aiomqtt.Client:
        # A persistent session, PUBACK only once the core handled a message, pipelining normal.
        return make_client(
            self.settings,
            identifier=self.locker_id,
            protocol=self._protocol,
            session_expiry_s=self._session_expiry_s,
            max_inflight=self._max_in_flight + 100,
            pending_calls_threshold=self._max_in_flight + 100,
            will=aiomqtt.Will(self._t_status, Status.offline().to_payload(), qos=1, retain=True),
            manual_ack=True,
            timeout=self._timeout,
        )

    async def _session(self) -> None:
        """One connection: set up, then read and publish until it breaks (MqttError)."""
        client = self._make_client()
        async with client:
            self._client = client
            self.stats.connects += 1
            try:
                # A stop that came with the CONNACK: aiomqtt's connect (`asyncio.wait_for` on
                # 3.11) returned the CONNACK and dropped the cancellation; without this the
                # session would run on and lockerd would never finish stopping.
                _raise_if_cancelling()
                reader = asyncio.create_task(self._read(client))
                publisher = asyncio.create_task(self._publish_loop(client))
                tasks = {reader, publisher}
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await _stop_tasks(tasks)
                for task in done:
                    task.result()  # raises what ended the connection
                raise aiomqtt.MqttError("connection tasks ended")
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._connected.clear()
                self._client = None

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """A clean stop is not a crash, but the locker is offline all the same."""
        try:
            await client.publish(
                self._t_status, Status.offline().to_payload(), qos=1, retain=True, timeout=2.0
            )
            self._log("stopped", status="offline")
        except (aiomqtt.MqttError, OSError) as exc:
            self._log("stopped", status="unannounced", reason=str(exc))

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        """Status, subscriptions, then everything republished from the port."""
        await client.publish(self._t_status, self._status_payload(), qos=1, retain=True)
        subs = self.topics.locker_subscriptions(self.locker_id)
        codes: Sequence[int | ReasonCode] = await client.subscribe([(topic, 1) for topic in subs])
        for topic, code in zip(subs, codes, strict=False):
            value = code_value(code)
            if value is not None and value >= 0x80:
                self._log("subscribe_refused", topic=topic, code=value)
        self._backoff.reset()
        self._refusal_said_at, self._refusals_unsaid = None, 0  # a new refusal is news again
        v = "5" if self._protocol is ProtocolVersion.V5 else "3.1.1"
        self._log("connected", host=self.settings.host, port=self.settings.port, protocol=v)
        # Everything again: the broker may have lost retained state, the console acks.
        self._status_due = False
        self._dirty_cells.update(int(c["cell"]) for c in self._safe(self.port.cell_snapshots, []))
        self._window.reconnected(time.monotonic())
        self._pending.reconnected()
        self._version_confirmed = True
        self._connected.set()

    # --- outgoing ----------------------------------------------------------------------------
    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        await self._on_connect(client)
        while True:
            _raise_if_cancelling()
            self._wake.clear()
            try:
                await self._publish_pass(client)
            except (aiomqtt.MqttError, OSError):
                raise
            except Exception as exc:  # a port bug: log, keep the link, try again soon
                self._log("publish_failed", error=repr(exc))
                self._window.outbox_grew()  # the outbox is asked again on the retry
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                continue
            resend = self._window.tick(time.monotonic())
            if resend is not None:
                self._log("resend", after_seq=resend.after_seq, unacked=resend.unacked)
                continue
            wait = self._window.timeout()
            if self._backlog_said_at is not None:
                due = self._backlog_said_at + self._status_refresh_s - time.monotonic()
                if due <= 0:
                    self._status_due = True
                    continue
                wait = due if wait is None else min(wait, due)
            now = time.monotonic()
            for other in (self._pending.timeout(now), self._resync.timeout(now)):
                if other is not None:
                    wait = other if wait is None else min(wait, other)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _publish_pass(self, client: aiomqtt.Client) -> None:
        """Publish what is due: status, results, config/applied, cells, then events."""
        self._resync_due()
        if self._status_due:
            self._status_due = False
            await client.publish(self._t_status, self._status_payload(), qos=1, retain=True)

        due = self._due_pending()
        if due:
            props = self._result_properties()
            await asyncio.gather(
                *(
                    client.publish(o.topic, o.payload, qos=1,
                                   properties=props if o.is_result else None)
                    for o in due
                )
            )
            self._pending.sent(due, time.monotonic())
            self.stats.results_published += sum(o.is_result for o in due)

        applied = self._applied
        if applied is not None:
            await client.publish(self._t_applied, applied, qos=1, retain=True)
            if self._applied is applied:
                self._applied = None

        cells = self._dirty_cells
        if cells:
            self._dirty_cells = set()
            try:
                n = await self._publish_cells(client, cells)
            except BaseException:
                self._dirty_cells |= cells
                raise
            self.stats.cells_published += n

        if self._resend_asks:
            await self._answer_resends(client)

        read = self._window.next_read()
        if read is not None:
            sent = await self._publish_events(client, read.after_seq, read.limit)
            if sent:
                w = self._window
                self._log("published", events=sent, up_to_seq=w.sent, acked=w.acked)

    async def _publish_cells(self, client: aiomqtt.Client, cells: set[int]) -> int:
        payloads = []
        for snap in self.port.cell_snapshots():
            if snap.get("cell") in cells:
                payload = _encode(CellSnapshot, snap, "cell", self._log)
                payloads.append((self.topics.cell(self.locker_id, int(snap["cell"])), payload))
        await asyncio.gather(
            *(client.publish(topic, p, qos=1, retain=True) for topic, p in payloads)
        )
        return len(payloads)

    async def _publish_events(self, client: aiomqtt.Client, after_seq: int, limit: int) -> int:
        """Send the outbox events the window asks for (after `after_seq`, at most `limit`)."""
        rows = self.port.unacked_events(after_seq, limit)
        if not rows:
            return 0
        gaps = self._window.sending([int(row["seq"]) for row in rows], time.monotonic())
        for gap in gaps:
            self._log("outbox_gap", expected=gap.expected, got=gap.got)
        payloads = [_encode(Event, row, "event", self._log) for row in rows]
        # Gathered coroutines start in order, so paho queues the PUBLISHes in seq order.
        await asyncio.gather(*(client.publish(self._t_events, p, qos=1) for p in payloads))
        self.stats.events_published += len(payloads)
        return len(payloads)

    def _resync_due(self) -> None:
        """A resync answer due now: mark its parts for this pass (retained, QoS 1)."""
        parts = self._resync.due(time.monotonic())
        if not parts:
            return
        if "status" in parts:
            self._status_due = True
        if "cells" in parts:
            snaps = self._safe(self.port.cell_snapshots, [])
            self._dirty_cells.update(int(c["cell"]) for c in snaps)
        if "config" in parts:
            applied = self._current_applied()
            if applied is not None and self._applied is None:
                self._applied = applied
        self.stats.resyncs_done += 1
        self._log("resynced", parts=",".join(sorted(parts)))

    def _current_applied(self) -> bytes | None:
        """The running configuration's config/applied payload, if any is known."""
        current = getattr(self.port, "config_applied", None)
        if current is not None:
            obj = self._safe(current, None)
            if obj is not None:
                return _encode(ConfigApplied, obj, "config_applied", self._log)
        return self._applied_last

    def _due_pending(self) -> list[Outgoing]:
        """Pending results and notifications to (re-)send now; those offered for longer than
        `deliver_for_s` are given up (a console that never confirms)."""
        due, expired = self._pending.due(time.monotonic())
        for item, key in expired:  # `kind` is the log line's own name: `item` says which
            self._log("undelivered_given_up", item=item, key=key)
        return due

    def _status_payload(self) -> bytes:
        obj = self._safe(self.port.status, None) or {"online": True}
        summary = getattr(self.port, "outbox_summary", None)
        outbox = self._safe(summary, None) if summary is not None else None
        if outbox is not None:
            obj = {**obj, "outbox": outbox}
        depth = outbox.get("depth") if isinstance(outbox, dict) else None
        self._backlog_said_at = time.monotonic() if depth else None
        return _encode(Status, obj, "status", self._log)

    def _result_properties(self) -> Properties | None:
        if self._protocol is not ProtocolVersion.V5 or not self._result_expiry_s:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = self._result_expiry_s
        return props

    def _safe(self, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            self._log("port_failed", call=getattr(fn, "__name__", "?"), error=repr(exc))
            return default

    # --- incoming ----------------------------------------------------------------------------
    async def _read(self, client: aiomqtt.Client) -> None:
        """Route messages: acks at once, commands and configs to the ordered worker."""
        async for message in client.messages:
            topic = message.topic.value
            kind = self._inbound_kinds.get(topic)
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode() if payload is not None else b""
            payload = bytes(payload)
            if kind == "ack":
                self._on_ack(payload)
                _puback(client, message.mid, message.qos)
            elif kind == "delivered":
                self._on_delivered(payload)
                _puback(client, message.mid, message.qos)
            elif kind == "resend":
                self._on_resend(payload)
                _puback(client, message.mid, message.qos)
            elif kind == "resync":
                self._on_resync(payload)
                _puback(client, message.mid, message.qos)
            elif kind in ("cmd", "config"):
                parsed = self.topics.parse(topic)
                topic_locker = parsed.locker if parsed else self.locker_id
                self._inbox.put_nowait(
                    _Inbound(kind, payload, topic_locker, client, message.mid, message.qos)
                )
            else:
                self._log("unexpected_message", topic=topic)
                _puback(client, message.mid, message.qos)

    def _on_ack(self, payload: bytes) -> None:
        try:
            up_to = EventAck.from_payload(payload).up_to_seq
        except MalformedPayload as exc:
            self._log("ack_malformed", reason=str(exc))
            return
        verdict = self._window.judge_ack(up_to)
        if verdict is AckVerdict.NEVER_SENT:
            self._log("ack_ignored", up_to_seq=up_to, reason="never sent",
                      highest_sent=self._window.highest_sent)
            return
        if verdict is AckVerdict.OLD:
            return  # a duplicate or an older ack: nothing new
        try:
            self.port.events_acknowledged(up_to)
        except Exception as exc:  # the outbox keeps them; a later ack covers them again
            self._log("port_failed", call="events_acknowledged", error=repr(exc))
            return
        count = self._window.acknowledged(up_to, time.monotonic())
        self.stats.events_acked += count
        self._log("acked", up_to_seq=up_to, count=count)
        self._wake.set()

    def _on_resend(self, payload: bytes) -> None:
        """The console misses a range: answered by the publisher (`_answer_resends`)."""
        try:
            ask = EventResend.from_payload(payload)
        except MalformedPayload as exc:
            self._log("resend_malformed", reason=str(exc))
            return
        if ask in self._resend_asks:
            return
        if len(self._resend_asks) >= _MAX_RESEND_ASKS:
            self._log("resend_dropped", from_seq=ask.from_seq, to_seq=ask.to_seq)
            return
        self._resend_asks.append(ask)
        self._wake.set()

    def _on_resync(self, payload: bytes) -> None:
        """The console lacks some retained state: answered by the publisher when due."""
        try:
            ask = ResyncRequest.from_payload(payload)
        except MalformedPayload as exc:
            self._log("resync_malformed", reason=str(exc))
            return
        self.stats.resyncs_asked += 1
        now = time.monotonic()
        answer = self._resync.asked(ask.parts(), ask.spread_ms, now)
        if answer.verdict is ResyncVerdict.SCHEDULED:
            assert answer.due_at is not None
            self._log("resync_scheduled", parts=",".join(sorted(ask.parts())),
                      in_s=round(answer.due_at - now, 3))
            self._wake.set()
        elif answer.verdict is ResyncVerdict.TOO_SOON:
            self._log("resync_ignored", reason="answered less than "
                      f"{self._resync.min_interval:g} s ago")

    async def _answer_resends(self, client: aiomqtt.Client) -> None:
        """Publish again what the outbox holds of each asked range (same seq, same id) and
        say `events/gone` for the sent seqs it lacks, never for one it holds."""
        while self._resend_asks:
            # taken off first: a port or network failure must not retry it for ever; the
            # console asks again after its gap timeout
            ask = self._resend_asks.pop(0)
            lo, hi = ask.from_seq, ask.to_seq
            rows = [r for r in self.port.unacked_events(lo - 1, hi - lo + 1)
                    if lo <= int(r["seq"]) <= hi]
            answer = answer_resend(lo, hi, [int(r["seq"]) for r in rows],
                                   self._window.highest_sent)
            payloads = [_encode(Event, r, "event", self._log) for r in rows]
            await asyncio.gather(*(client.publish(self._t_events, p, qos=1) for p in payloads))
            for f, t in answer.gone:
                await client.publish(
                    self._t_gone, EventsGone(from_seq=f, to_seq=t).to_payload(), qos=1
                )
            self.stats.events_resent += len(payloads)
            self.stats.gone_said += len(answer.gone)
            self._log("resent", from_seq=lo, to_seq=hi, events=len(payloads),
                      gone=len(answer.gone))

    def _on_delivered(self, payload: bytes) -> None:
        """The console has these results and notifications: stop offering them, tell the core."""
        try:
            msg = Delivered.from_payload(payload)
        except MalformedPayload as exc:
            self._log("delivered_malformed", reason=str(exc))
            return
        results = [(k.cmd_id, k.status) for k in msg.results]
        self._pending.delivered(results, msg.notifications)
        forget = getattr(self.port, "delivered", None)
        if forget is not None:
            try:
                forget(results, list(msg.notifications))
            except Exception as exc:  # the store keeps them; a re-send is confirmed again
                self._log("port_failed", call="delivered", error=repr(exc))

    async def _inbound_worker(self) -> None:
        """Hand commands and configs to the core one at a time, in arrival order, then PUBACK."""
        while True:
            item = await self._inbox.get()
            try:
                if item.kind == "cmd":
                    self.stats.commands_received += 1
                    await self.port.command_received(item.payload, item.topic_locker)
                else:
                    self.stats.configs_received += 1
                    await self.port.config_received(item.payload)
            except Exception as exc:  # the core answers its own faults; this is a last net
                self._log(f"{item.kind}_failed", level="error", error=repr(exc),
                          traceback=traceback.format_exc())
            # A message of a lost connection is not acked: the broker delivers it again.
            if item.client is self._client:
                _puback(item.client, item.mid, item.qos)


def _raise_if_cancelling() -> None:
    """Honour a cancellation that something below us swallowed (see `_stop_tasks`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _stop_tasks(tasks: set[asyncio.Task]) -> None:
    """Cancel tasks and wait until they are done, cancelling again any that swallowed it (on
    3.11, `asyncio.wait_for` loses a cancellation that races with its result: aiomqtt uses it).
    Our own cancellation is held back until they are all gone, then re-raised."""
    cancelled = False
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        try:
            await asyncio.wait(pending, timeout=0.5)
        except asyncio.CancelledError:
            cancelled = True
        pending = {t for t in pending if not t.done()}
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
    if cancelled:
        raise asyncio.CancelledError


def _encode(model: type[Message], obj: dict, what: str, log: LogFn) -> bytes:
    """The payload of `obj` checked against its model; an invalid one is logged and sent as is,
    so that a core bug shows at the console instead of leaving a silent hole."""
    try:
        return model.from_dict(obj).to_payload()
    except MalformedPayload as exc:
        log(f"{what}_invalid", reason=str(exc))
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _puback(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Acknowledge a QoS 1 message received with manual acks (aiomqtt exposes no such call)."""
    ack(client, mid, qos)


def _version_name(protocol: ProtocolVersion) -> str:
    return "5" if protocol is ProtocolVersion.V5 else "3.1.1"
