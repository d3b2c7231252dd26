"""How the console connects to the fleet's broker: its `[mqtt]` keys, client ids, login hints.

The client itself (TCP_NODELAY, MQTT 5 sessions, manual acknowledgements) is built by
`fleet_io.mqtt_client`, as the locker's is; here is only what is the console's own: the protocol
version its configuration names, a fresh id for a short-lived client, and what to tell an
operator whose login the broker refused.
"""

from __future__ import annotations

import uuid

import aiomqtt
from aiomqtt import ProtocolVersion

from fleet_console.config import ConsoleMqtt
from fleet_io import mqtt_client
from fleet_io.inbox import MessageInbox
from fleet_io.mqtt_client import LOGIN_REFUSED, code_value


def login_refused(exc: BaseException) -> bool:
    """True when the broker answered and refused the login (not: the broker is unreachable)."""
    return isinstance(exc, aiomqtt.MqttCodeError) and code_value(exc.rc) in LOGIN_REFUSED


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
    inbox: MessageInbox | None = None,
) -> aiomqtt.Client:
    """An unentered client for the console's `[mqtt]` (see `fleet_io.mqtt_client.make_client`).

    `session_expiry_s` set needs a stable `identifier` (a persistent session); unset, a fresh
    `console-cli-...` id and a clean session.
    """
    if session_expiry_s is not None and identifier is None:
        raise ValueError("a persistent session needs a stable client identifier")
    return mqtt_client.make_client(
        settings,
        identifier=identifier or client_id("cli"),
        protocol=ProtocolVersion.V5 if settings.protocol == "5" else ProtocolVersion.V311,
        session_expiry_s=session_expiry_s,
        receive_maximum=receive_maximum,
        max_inflight=max_inflight,
        manual_ack=manual_ack,
        timeout=timeout,
        inbox=inbox,
    )


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of a QoS 1 message received with `manual_ack` (no-op for QoS 0)."""
    mqtt_client.ack(client, message.mid, message.qos)
