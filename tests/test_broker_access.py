"""Broker access rules (docs/architecture.md "Broker access"), proved against a real Mosquitto.

MQTT 3.1.1 cannot refuse a publish and may grant a subscription it will never feed, so every
negative check is "nothing arrives" after a positive control proved the path delivers.
"""

from __future__ import annotations

import pytest

from broker.runner import CONNACK_ACCEPTED
from tests.fixtures.mqtt_broker import (
    LockerCredentials,
    MqttBroker,
    MqttRefusedError,
    unique_id,
)

REFUSED = (4, 5)  # bad user name or password / not authorised


@pytest.fixture
def other_locker(mqtt_broker: MqttBroker) -> LockerCredentials:
    """A second locker, B, next to `locker_credentials` (A)."""
    locker_id = unique_id()
    creds = mqtt_broker.add_locker(locker_id)
    return LockerCredentials(locker_id, creds.username, creds.password)


def test_locker_cannot_read_another_lockers_topics(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, other_locker: LockerCredentials
) -> None:
    a, b = locker_credentials, other_locker
    with (
        mqtt_broker.client(a.username, a.password) as ca,
        mqtt_broker.client(b.username, b.password) as cb,
        mqtt_broker.console_client() as console,
    ):
        for topic in (f"lockers/{b.locker_id}/cmd", f"lockers/{b.locker_id}/config",
                      f"lockers/{b.locker_id}/events/ack", "lockers/+/cmd", "lockers/#"):
            ca.subscribe(topic)  # the SUBACK may well say "granted"
        cb.subscribe(f"lockers/{b.locker_id}/cmd")

        console.publish(f"lockers/{b.locker_id}/cmd", b'{"type":"open"}')
        console.publish(f"lockers/{b.locker_id}/events/ack", b'{"up_to_seq":1}')

        assert cb.expect(f"lockers/{b.locker_id}/cmd").payload == b'{"type":"open"}'
        ca.assert_silent(0.5)


def test_locker_cannot_publish_as_another_locker(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, other_locker: LockerCredentials
) -> None:
    a, b = locker_credentials, other_locker
    with (
        mqtt_broker.client(a.username, a.password) as ca,
        mqtt_broker.console_client() as console,
    ):
        console.subscribe(f"lockers/{b.locker_id}/#")
        console.subscribe(f"lockers/{a.locker_id}/events")

        ca.publish(f"lockers/{b.locker_id}/events", b"forged")
        ca.publish(f"lockers/{b.locker_id}/status", b"forged", retain=True)
        ca.publish(f"lockers/{b.locker_id}/cmd/result", b"forged")
        ca.publish(f"lockers/{b.locker_id}/notify", b"forged")
        ca.publish(f"lockers/{a.locker_id}/events", b"genuine")

        # Messages from one publisher arrive in order: a forged one would come first.
        first = console.expect()
        assert (first.topic, first.payload) == (f"lockers/{a.locker_id}/events", b"genuine")
        console.assert_silent(0.5)


def test_locker_cannot_log_in_with_another_lockers_password(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, other_locker: LockerCredentials
) -> None:
    a, b = locker_credentials, other_locker
    assert mqtt_broker.connack(a.username, b.password) in REFUSED
    with pytest.raises(MqttRefusedError):
        mqtt_broker.client(a.username, b.password)
    assert mqtt_broker.connack(a.username, a.password) == CONNACK_ACCEPTED


def test_unknown_users_and_anonymous_are_refused(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    assert mqtt_broker.connack(None, None) in REFUSED
    assert mqtt_broker.connack("nobody", "whatever") in REFUSED
    assert mqtt_broker.connack(locker_credentials.username, "") in REFUSED
    assert mqtt_broker.connack(locker_credentials.username, None) in REFUSED
    with pytest.raises(MqttRefusedError):
        mqtt_broker.client(None, None)
    with pytest.raises(MqttRefusedError):
        mqtt_broker.client("nobody", "whatever")


def test_locker_talks_to_console_on_its_own_topics(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    lid = locker_credentials.locker_id
    with (
        mqtt_broker.client(locker_credentials.username, locker_credentials.password) as locker,
        mqtt_broker.console_client() as console,
    ):
        # The locker reads what the console sends it ...
        for suffix in ("cmd", "config", "events/ack"):
            locker.subscribe(f"lockers/{lid}/{suffix}")
        for suffix in ("cmd", "config", "events/ack"):
            console.publish(f"lockers/{lid}/{suffix}", suffix.encode())
            assert locker.expect(timeout=2).topic == f"lockers/{lid}/{suffix}"

        # ... and the console reads everything the locker may write.
        console.subscribe(f"lockers/{lid}/#")
        for suffix in ("status", "cells/3", "events", "cmd/result", "config/applied", "notify"):
            locker.publish(f"lockers/{lid}/{suffix}", suffix.encode())
            msg = console.expect(timeout=2)
            assert (msg.topic, msg.payload) == (f"lockers/{lid}/{suffix}", suffix.encode())


def test_notify_is_the_lockers_own_and_only_the_console_reads_it(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials, other_locker: LockerCredentials
) -> None:
    """A relayed SMS/e-mail (its text holds codes and PINs): A may publish it on its own notify
    topic only; the console reads it; another locker can neither forge it nor read it."""
    a, b = locker_credentials, other_locker
    with (
        mqtt_broker.client(a.username, a.password) as ca,
        mqtt_broker.client(b.username, b.password) as cb,
        mqtt_broker.console_client() as console,
    ):
        console.subscribe("lockers/+/notify")
        for topic in (f"lockers/{a.locker_id}/notify", "lockers/+/notify", "lockers/#"):
            cb.subscribe(topic)  # the SUBACK may well say "granted"

        ca.publish(f"lockers/{b.locker_id}/notify", b"forged")
        ca.publish(f"lockers/{a.locker_id}/notify", b"genuine")

        first = console.expect()
        assert (first.topic, first.payload) == (f"lockers/{a.locker_id}/notify", b"genuine")
        console.assert_silent(0.3)
        cb.assert_silent(0.2)


def test_locker_cannot_forge_messages_meant_for_itself(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    """A compromised locker must not inject commands, configs or acks on its own topics."""
    lid = locker_credentials.locker_id
    with (
        mqtt_broker.client(locker_credentials.username, locker_credentials.password) as locker,
        mqtt_broker.console_client() as console,
    ):
        locker.subscribe(f"lockers/{lid}/cmd")
        console.subscribe(f"lockers/{lid}/#")

        for suffix in ("cmd", "config", "events/ack"):
            locker.publish(f"lockers/{lid}/{suffix}", b"forged")
        console.publish(f"lockers/{lid}/cmd", b"genuine")

        assert locker.expect().payload == b"genuine"
        first = console.expect()
        assert (first.topic, first.payload) == (f"lockers/{lid}/cmd", b"genuine")
        locker.assert_silent(0.3)
        console.assert_silent(0.2)


def test_console_reads_and_writes_any_lockers_topics(mqtt_broker: MqttBroker) -> None:
    # Lockers that have no account yet are the console's business too (e.g. a retained config).
    lid = unique_id("no-account")
    with mqtt_broker.console_client() as sender, mqtt_broker.console_client() as reader:
        reader.subscribe("lockers/+/cmd")
        reader.subscribe(f"lockers/{lid}/config")
        sender.publish(f"lockers/{lid}/cmd", b"c")
        sender.publish(f"lockers/{lid}/config", b"v", retain=True)
        assert reader.expect(f"lockers/{lid}/cmd").payload == b"c"
        assert reader.expect(f"lockers/{lid}/config").payload == b"v"
        sender.publish(f"lockers/{lid}/config", b"", retain=True)  # clear the retained copy


def test_console_cannot_leave_the_lockers_tree(mqtt_broker: MqttBroker) -> None:
    lid = unique_id()
    with mqtt_broker.console_client() as sender, mqtt_broker.console_client() as reader:
        reader.subscribe("elsewhere/#")
        reader.subscribe(f"lockers/{lid}/status")
        sender.publish(f"elsewhere/{lid}", b"no")
        sender.publish(f"lockers/{lid}/status", b"yes")
        assert reader.expect().payload == b"yes"
        reader.assert_silent(0.3)


def test_new_locker_can_log_in_at_once_without_restart(mqtt_broker: MqttBroker) -> None:
    pid = mqtt_broker.process.pid
    locker_id = unique_id()
    assert mqtt_broker.connack(locker_id, "not yet") in REFUSED
    creds = mqtt_broker.add_locker(locker_id)
    assert mqtt_broker.connack(creds.username, creds.password) == CONNACK_ACCEPTED
    assert mqtt_broker.process.pid == pid, "the account was added by SIGHUP reload, not restart"


async def test_aiomqtt_clients_round_trip(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    import asyncio

    lid = locker_credentials.locker_id
    user, password = mqtt_broker.console_credentials
    async with (
        mqtt_broker.aiomqtt_client(user, password) as console,
        mqtt_broker.aiomqtt_client(locker_credentials.username, locker_credentials.password) as lk,
    ):
        await console.subscribe(f"lockers/{lid}/events", qos=1)
        await lk.publish(f"lockers/{lid}/events", b'{"seq":1}', qos=1)
        async with asyncio.timeout(5):
            msg = await anext(aiter(console.messages))
        assert msg.payload == b'{"seq":1}'


def test_broker_restart_keeps_port_retained_messages_and_queued_commands(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials
) -> None:
    lid = locker_credentials.locker_id
    port = mqtt_broker.port
    session_id = f"lockerd-{lid}"
    with mqtt_broker.client(
        locker_credentials.username, locker_credentials.password,
        client_id=session_id, clean_session=False,
    ) as locker:
        locker.subscribe(f"lockers/{lid}/cmd")
        locker.publish(f"lockers/{lid}/status", b'{"online":true}', retain=True)
    with mqtt_broker.console_client() as console:
        console.publish(f"lockers/{lid}/cmd", b"queued while offline")

    try:
        mqtt_broker.stop()
        assert not mqtt_broker.running
        with pytest.raises(OSError):  # really down: nothing listens on the port
            mqtt_broker.connack(*mqtt_broker.console_credentials)
    finally:
        mqtt_broker.start()
    assert mqtt_broker.port == port

    with mqtt_broker.console_client() as console:
        console.subscribe(f"lockers/{lid}/status")
        assert console.expect().payload == b'{"online":true}'
    with mqtt_broker.client(
        locker_credentials.username, locker_credentials.password,
        client_id=session_id, clean_session=False,
    ) as locker:
        assert locker.expect().payload == b"queued while offline"
