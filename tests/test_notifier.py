"""The locker's own notifier adapters: the relay to the console, the demo log, the routing.

The HTTP gateway and SMTP adapters are shared with the console: tests/test_senders.py."""

from __future__ import annotations

from typing import Any

from contract.messages import Notification
from daemon.io.notifier import CombinedNotifier, LogNotifier, MqttRelayNotifier, Notifier
from fleet_io.delivery import DeliveryResult

# -- MQTT relay and log -------------------------------------------------------------------------


async def test_mqtt_relay_publishes_the_message() -> None:
    published: list[dict[str, Any]] = []
    relay: Notifier = MqttRelayNotifier(published.append, new_id=lambda: "n-1")
    assert await relay.send_sms("+79001234567", "code 1") == DeliveryResult(
        True, "sms", "relayed as n-1"
    )
    assert (await relay.send_email("a@b.c", "Subj", "Body")).ok
    assert published == [
        {"id": "n-1", "channel": "sms", "to": "+79001234567", "text": "code 1"},
        {
            "id": "n-1",
            "channel": "email",
            "to": "a@b.c",
            "subject": "Subj",
            "text": "Body",
        },
    ]
    for message in published:  # what the console reads on lockers/{id}/notify
        assert Notification.from_dict(message).to_dict() == message


async def test_mqtt_relay_async_publish_and_failure() -> None:
    got: list[dict[str, Any]] = []

    async def publish(message: dict[str, Any]) -> None:
        got.append(message)

    assert (await MqttRelayNotifier(publish).send_sms("+79001234567", "t")).ok
    assert len(got[0]["id"]) == 32

    def broken(message: dict[str, Any]) -> None:
        raise ConnectionError("link down")

    result = await MqttRelayNotifier(broken).send_sms("+79001234567", "t")
    assert not result.ok and "link down" in result.detail


async def test_log_notifier_and_combined_routing() -> None:
    lines: list[str] = []
    log = LogNotifier(lines.append)
    published: list[dict[str, Any]] = []
    notifier: Notifier = CombinedNotifier(sms=log, email=MqttRelayNotifier(published.append))
    assert (await notifier.send_sms("+79001234567", "PIN 1234")).ok
    assert (await notifier.send_email("a@b.c", "S", "T")).ok
    assert lines == ["SMS to +79001234567: PIN 1234"]
    assert published[0]["channel"] == "email"
    assert (await log.send_email("a@b.c", "S", "T")).detail == "logged"
    assert lines[-1] == "E-mail to a@b.c: S\nT"


async def test_a_message_with_a_reference_is_relayed_under_it() -> None:
    """The console sends an id once: a parcel notice resent after a crash keeps its id."""
    published: list[dict[str, Any]] = []
    relay = CombinedNotifier(*(2 * [MqttRelayNotifier(published.append)]))
    for _ in range(2):
        assert (await relay.send_sms("+79001234567", "code 1", ref="parcel-abc")).ok
    assert (await relay.send_email("a@b.c", "S", "T", ref="parcel-def")).ok
    assert [p["id"] for p in published] == ["parcel-abc", "parcel-abc", "parcel-def"]
