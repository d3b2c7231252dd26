"""How the console connects to the fleet's broker: one place for TCP_NODELAY, MQTT 5 and sessions.

Every console program (ingest, operator CLI, benchmarks) builds its aiomqtt client here, so that
none forgets TCP_NODELAY (docs/architecture.md, "Latency": 88 ms -> 0.5 ms per round trip) and the
ingest's persistent session is set up the same way everywhere.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_console.config import ConsoleMqtt

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

#: How long the broker keeps the ingest's session (subscriptions and queued messages) while it
#: is disconnected; the broker's own `persistent_client_expiration` may cut it shorter.
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600


#: CONNACK codes of a refused login: MQTT 3.1.1's 4 and 5, MQTT 5's 0x86 and 0x87.
_LOGIN_REFUSED = {4, 5, 0x86, 0x87}


def login_refused(exc: BaseException) -> bool:
    """True when the broker answered and refused the login (not: the broker is unreachable)."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(exc, aiomqtt.MqttCodeError) and value in _LOGIN_REFUSED


def login_hint(exc: BaseException) -> str:
    """What to check when the broker refuses the console's login, or "" for other errors.

    Consoles have a listener of their own (the lockers' one takes only locker accounts), so a
    console configured for the lockers' port is refused: say so rather than just "Not authorized".
    """
    if not login_refused(exc):
        return ""
    return ("; check [mqtt] username and password, and that [mqtt] port is the broker's console "
            "listener (locker-broker's --console-port, by default its --port + 1), not the "
            "lockers' one")


def client_id(role: str) -> str:
    """A unique client id for a short-lived console client (CLI runs, benchmarks)."""
    return f"console-{role}-{uuid.uuid4().hex[:12]}"


def make_client(
    settings: ConsoleMqtt,
    *,
    identifier: str | None = None,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
    manual_ack: bool = False,
    timeout: float = 10.0,
) -> aiomqtt.Client:
    """An unentered aiomqtt client speaking MQTT 5 with TCP_NODELAY.

    `session_expiry_s` set: a persistent session (clean start off) that the broker keeps for that
    long, so QoS 1 messages published while we are away are delivered when we come back; it needs
    a stable `identifier`. Unset: a clean session that ends with the connection.
    `receive_maximum` is how many unacknowledged QoS 1 messages the broker may have in flight to
    us (MQTT 5 flow control; what lets a manual-ack consumer batch); `max_inflight` how many of
    our own QoS 1 publishes may await their PUBACK at once (paho's default is 20).
    `manual_ack`: received QoS 1 messages are acknowledged only by `ack(client, message)`, so a
    message the process dies with is delivered again (it is set before CONNECT, since a resumed
    session's queued messages arrive right after the CONNACK).
    """
    if session_expiry_s is not None and identifier is None:
        raise ValueError("a persistent session needs a stable client identifier")
    v5 = settings.protocol == "5"
    version: dict[str, Any]
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry_s is not None:
            properties.SessionExpiryInterval = session_expiry_s
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        version = {
            "protocol": aiomqtt.ProtocolVersion.V5,
            "clean_start": session_expiry_s is None,
            "properties": properties,
        }
    else:  # MQTT 3.1.1 (e.g. the embedded demo broker): the broker keeps a session until reuse
        version = {
            "protocol": aiomqtt.ProtocolVersion.V311,
            "clean_session": session_expiry_s is None,
        }
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=identifier or client_id("cli"),
        **version,
        keepalive=settings.keepalive,
        timeout=timeout,
        socket_options=NODELAY,
        tls_context=ssl.create_default_context() if settings.tls else None,
        max_inflight_messages=max_inflight,
    )
    if manual_ack:
        # aiomqtt has no switch for this; the paho client it wraps does.
        client._client.manual_ack_set(True)
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of a QoS 1 message received with `manual_ack` (no-op for QoS 0)."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)
