"""fleet_io.inbox: a consumer takes what a real broker delivered in batches, in order, and still
learns that the connection was lost."""

from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.mqtt import ack, make_client
from fleet_io.inbox import MessageInbox
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker, unique_id


async def test_messages_are_taken_in_batches_in_arrival_order(
    mqtt_broker: MqttBroker, console_mqtt: ConsoleMqtt, locker_credentials: LockerCredentials
) -> None:
    topics = Topics(console_mqtt.prefix)
    inbox = MessageInbox()
    client = make_client(console_mqtt, manual_ack=True, inbox=inbox)
    async with client:
        await client.subscribe(topics.events(locker_credentials.locker_id), qos=1)
        locker = mqtt_broker.client(locker_credentials.username, locker_credentials.password)
        try:
            for n in range(5):
                locker.publish(topics.events(locker_credentials.locker_id), f"{n}".encode())
            async with asyncio.timeout(5):
                while inbox.qsize() < 5:
                    await inbox.wait()
                    await asyncio.sleep(0)
        finally:
            locker.close()
        first, rest = inbox.take(2), inbox.take(100)
        assert [m.payload for m in first + rest] == [b"0", b"1", b"2", b"3", b"4"]
        assert inbox.take(100) == [] and inbox.qsize() == 0
        for message in first + rest:
            ack(client, message)


async def test_the_message_stream_still_ends_when_the_connection_is_lost(
    console_mqtt: ConsoleMqtt,
) -> None:
    client_id = unique_id("inbox")
    inbox = MessageInbox()
    client = make_client(console_mqtt, identifier=client_id, inbox=inbox)
    async with client:
        async def watch() -> None:
            async for _ in client.messages:
                pass

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        async with make_client(console_mqtt, identifier=client_id):  # takes the session over
            with pytest.raises(aiomqtt.MqttError):
                await asyncio.wait_for(watcher, 5)


async def test_a_busy_consumer_still_reads_everything_waiting_on_its_socket(
    mqtt_broker: MqttBroker, console_mqtt: ConsoleMqtt, locker_credentials: LockerCredentials
) -> None:
    """A consumer with nothing of its own in flight (the ingest's presence connection) must read
    every message waiting on its socket when the loop comes round, not one: paho's `loop_read`
    reads one packet per readiness callback then, and a loop busy storing batches (~10 ms a
    turn here) came round a hundred times a second: a connect storm's 51,000 retained
    messages took minutes."""
    topics = Topics(console_mqtt.prefix)
    inbox = MessageInbox()
    client = make_client(console_mqtt, manual_ack=True, inbox=inbox, receive_maximum=5000)
    async with client:
        await client.subscribe(topics.events(locker_credentials.locker_id), qos=1)
        locker = mqtt_broker.client(locker_credentials.username, locker_credentials.password)

        def publish_all() -> None:
            for n in range(2000):
                locker.publish(topics.events(locker_credentials.locker_id), f"{n}".encode())

        try:
            publishing = asyncio.create_task(asyncio.to_thread(publish_all))
            turns_after = 0  # loop turns after the last message reached the broker
            async with asyncio.timeout(10):
                while inbox.qsize() < 2000:
                    time.sleep(0.01)  # a batch being stored, the loop blocked
                    await asyncio.sleep(0)
                    turns_after += publishing.done()
            await publishing
        finally:
            locker.close()
        assert turns_after < 50, f"{turns_after} loop turns to read what was waiting"
        for message in inbox.take(2000):
            ack(client, message)
