"""How every program of the fleet builds its aiomqtt client: TCP_NODELAY, MQTT 5 sessions, acks.

The locker's fleet link, the console's ingest, its operator commands and the benchmarks all
connect here, so that none forgets TCP_NODELAY (docs/architecture.md, "Latency": 88 ms -> 0.5 ms
per round trip) and a persistent session is set up the same way everywhere. aiomqtt has no switch
for manual acknowledgements; the paho client it wraps has: `_paho` below is the one place in the
project that reaches into aiomqtt's private `_client`.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt import ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract.config_file import BrokerConnection
from fleet_io import paho_tables
from fleet_io.inbox import MessageInbox

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

#: How long the broker keeps a persistent session (subscriptions and queued messages) while its
#: client is away; Mosquitto's `persistent_client_expiration` may cut it shorter.
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600

#: CONNACK codes of a refused login: 3.1.1's 4 (bad user name or password) and 5 (not
#: authorised), and MQTT 5's 0x86 and 0x87.
LOGIN_REFUSED = frozenset({4, 5, 0x86, 0x87})


def code_value(rc: int | ReasonCode | None) -> int | None:
    """The number of a CONNACK or SUBACK code: paho gives 3.1.1's as ints, MQTT 5's as
    `ReasonCode` objects."""
    return rc.value if isinstance(rc, ReasonCode) else rc


def make_client(
    broker: BrokerConnection,
    *,
    identifier: str,
    protocol: ProtocolVersion = ProtocolVersion.V5,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
    pending_calls_threshold: int | None = None,
    will: aiomqtt.Will | None = None,
    manual_ack: bool = False,
    timeout: float = 10.0,
    inbox: MessageInbox | None = None,
) -> aiomqtt.Client:
    """An unentered aiomqtt client for `broker`'s `[mqtt]` keys, with TCP_NODELAY.

    `session_expiry_s` set: a persistent session (clean start off) that the broker keeps for that
    long, so QoS 1 messages published while we are away are delivered when we come back (MQTT
    3.1.1: clean session off; the broker keeps it until reuse). Unset: a clean session that ends
    with the connection. `receive_maximum` is how many unacknowledged QoS 1 messages the broker
    may have in flight to us (MQTT 5 flow control; what lets a manual-ack consumer batch);
    `max_inflight` how many of our own QoS 1 publishes may await their PUBACK at once (paho's
    default is 20). `manual_ack`: received QoS 1 messages are acknowledged only by `ack()`, so a
    message the process dies with is delivered again (set before CONNECT, since a resumed
    session's queued messages arrive right after the CONNACK). `inbox`: received messages go
    there, to be taken in batches, instead of to `client.messages` (fleet_io.inbox).
    """
    paho_tables.share()  # MQTT 5 property tables once per process, not per packet
    persistent = session_expiry_s is not None
    version: dict[str, Any]
    if protocol is ProtocolVersion.V5:
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry_s is not None:
            properties.SessionExpiryInterval = session_expiry_s
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        version = {"clean_start": not persistent, "properties": properties}
    else:
        # paho refuses clean_start with 3.1.1 (but its default); clean_session does the same.
        version = {"clean_session": not persistent, "clean_start": paho.MQTT_CLEAN_START_FIRST_ONLY}
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=protocol,
        **version,
        will=will,
        keepalive=broker.keepalive,
        timeout=timeout,
        socket_options=NODELAY,
        tls_context=ssl.create_default_context() if broker.tls else None,
        max_inflight_messages=max_inflight,
        # aiomqtt only calls it (`queue_type(maxsize=...)`); the type names the default class.
        queue_type=None if inbox is None else cast("type[asyncio.Queue[aiomqtt.Message]]",
                                                   inbox.queue_type),
    )
    if pending_calls_threshold is not None:
        client.pending_calls_threshold = pending_calls_threshold
    if manual_ack:
        _paho(client).manual_ack_set(True)
    if inbox is not None:
        read_eagerly(client)
    return client


#: Packets one readiness callback reads at most (then the loop's other work has its turn).
EAGER_READ_PACKETS = 512


def read_eagerly(client: aiomqtt.Client, most: int = EAGER_READ_PACKETS) -> None:
    """Read every packet waiting on the socket (up to `most`) each time the loop finds it
    readable, not one.

    aiomqtt calls paho's `loop_read()` once per readiness callback, and paho reads as many
    packets as it has publishes of its own in flight, at least one. A consumer that publishes
    little (the ingest's presence connection) thus read one message per turn of an event loop
    busy storing batches: 51,000 retained messages of a connect storm took minutes
    (tests/test_fleet_io_inbox.py). Here each read is followed by another while the socket has
    more bytes.
    """
    inner = _paho(client)
    read_one = inner.loop_read

    def loop_read(max_packets: int = 1) -> paho.MQTTErrorCode:
        rc = read_one()
        for _ in range(most - 1):
            sock = inner.socket()
            if rc != paho.MQTT_ERR_SUCCESS or sock is None or not _readable(sock):
                break
            rc = read_one()
        return rc

    inner.loop_read = loop_read  # type: ignore[method-assign]


def _readable(sock: Any) -> bool:
    """Bytes wait on this socket (TLS: decrypted ones, or more on the wire)."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending() > 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Send the PUBACK of a QoS 1 message received with `manual_ack` (no-op for QoS 0)."""
    if qos > 0:
        _paho(client).ack(mid, qos)


class ConfirmedPublisher:
    """QoS 1 publishes straight through paho, each confirmed by a callback, for a sender of
    thousands a second that need not wait for each (the ingest's event acks).

    aiomqtt's `publish()` costs a task, an Event, a `wait_for` and two scans of every pending
    call per publish: with a thousand acks in flight, more than storing the events they cover.
    Here a publish is paho's `publish()` plus a dict entry; `done(True)` runs when the broker's
    PUBACK arrives (its reason code not looked at, as aiomqtt does not), `done(False)` when the
    publish could not be sent, was not confirmed within `expire`'s limit, or the connection is
    `abandon`ed. One publisher per connection; aiomqtt's own publishes still work beside it.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = _paho(client)
        #: mid -> (done, when sent).
        self._pending: dict[int, tuple[Callable[[bool], None], float]] = {}
        inner = self._paho.on_publish

        def on_publish(c: paho.Client, userdata: Any, mid: int, *rest: Any) -> None:
            if inner is not None:
                inner(c, userdata, mid, *rest)
            entry = self._pending.pop(mid, None)
            if entry is not None:
                entry[0](True)

        self._paho.on_publish = on_publish

    def publish(self, topic: str, payload: bytes, done: Callable[[bool], None],
                now: float) -> None:
        """Publish QoS 1; `done` is called exactly once (at once with False if not sent)."""
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            done(False)
            return
        stale = self._pending.pop(info.mid, None)  # its mid came round again: long lost
        self._pending[info.mid] = (done, now)
        if stale is not None:
            stale[0](False)

    def expire(self, sent_before: float) -> None:
        """Give up on publishes sent before this time and still unconfirmed."""
        for mid in [m for m, (_, at) in self._pending.items() if at < sent_before]:
            self._pending.pop(mid)[0](False)

    def abandon(self) -> None:
        """The connection is gone: every unconfirmed publish failed."""
        pending, self._pending = self._pending, {}
        for done, _ in pending.values():
            done(False)

    def __len__(self) -> int:
        return len(self._pending)


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside aiomqtt's: the project's ONE reach into aiomqtt's private state.

    aiomqtt (2.x) exposes neither `manual_ack_set` nor `ack`; if an upgrade renames `_client`,
    this is the only line to change.
    """
    return client._client
