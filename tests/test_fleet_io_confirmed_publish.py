"""fleet_io.mqtt_client.ConfirmedPublisher: every publish is confirmed exactly once, True only
once a real broker took it, False when it could not be sent or the connection was given up."""

from __future__ import annotations

import asyncio

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.mqtt import make_client
from fleet_io.mqtt_client import ConfirmedPublisher
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker


async def test_each_publish_is_confirmed_once_and_arrives(
    mqtt_broker: MqttBroker, console_mqtt: ConsoleMqtt, locker_credentials: LockerCredentials
) -> None:
    topic = Topics(console_mqtt.prefix).events_ack(locker_credentials.locker_id)
    locker = mqtt_broker.client(locker_credentials.username, locker_credentials.password)
    try:
        locker.subscribe(topic)
        outcomes: dict[int, list[bool]] = {n: [] for n in range(50)}
        all_done = asyncio.Event()

        def done(n: int, ok: bool) -> None:
            outcomes[n].append(ok)
            if all(outcomes.values()):
                all_done.set()

        async with make_client(console_mqtt) as client:
            publisher = ConfirmedPublisher(client)
            loop = asyncio.get_running_loop()
            for n in range(50):
                publisher.publish(topic, f'{{"up_to_seq": {n}}}'.encode(),
                                  lambda ok, n=n: done(n, ok), loop.time())
            await asyncio.wait_for(all_done.wait(), 5)
            assert all(v == [True] for v in outcomes.values()) and len(publisher) == 0
            await client.publish(topic, b'{"up_to_seq": 50}', qos=1)  # aiomqtt's still works
        got = [await asyncio.to_thread(locker.expect, topic) for _ in range(51)]
        assert [m.payload for m in got] == [f'{{"up_to_seq": {n}}}'.encode() for n in range(51)]
    finally:
        locker.close()


async def test_unsent_expired_and_abandoned_publishes_are_failures(
    console_mqtt: ConsoleMqtt,
) -> None:
    outcomes: list[tuple[str, bool]] = []
    async with make_client(console_mqtt) as client:
        publisher = ConfirmedPublisher(client)
        now = asyncio.get_running_loop().time()
        publisher.publish("lockers/x/events/ack", b"{}", lambda ok: outcomes.append(("a", ok)),
                          now - 60)  # sent "a minute ago"
        publisher.publish("lockers/x/events/ack", b"{}", lambda ok: outcomes.append(("b", ok)),
                          now)
        # No await in between: no PUBACK can have been read yet.
        publisher.expire(now - 10)  # "a" is given up on
        assert outcomes == [("a", False)] and len(publisher) == 1
        publisher.abandon()  # the connection is given up: "b" too
        assert outcomes == [("a", False), ("b", False)] and len(publisher) == 0
        await asyncio.sleep(0.2)  # their PUBACKs, if any come, confirm nothing again
    assert outcomes == [("a", False), ("b", False)]
    after: list[bool] = []
    publisher.publish("lockers/x/events/ack", b"{}", after.append, 0.0)  # disconnected
    assert after == [False]
