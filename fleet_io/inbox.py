"""A received-message inbox that a consumer empties in batches, in place of aiomqtt's queue.

aiomqtt hands each received message to its consumer through an `asyncio.Queue` and its
`messages` iterator, which starts a task and an `asyncio.wait` per message: at thousands of
messages a second that is a good part of a consumer's CPU (the console's ingest: issue 16). A
`MessageInbox` is given to `aiomqtt.Client` as its queue (`queue_type`, a public parameter):
aiomqtt still builds each `Message` and calls `put_nowait`, and the consumer takes what arrived
in one list with `take`. `client.messages` still ends with `MqttError` when the connection is
lost (its `get()` never returns a message), which is how a consumer notices.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import aiomqtt


class MessageInbox:
    """The messages received on one connection, in arrival order, taken in batches."""

    def __init__(self) -> None:
        self._messages: deque[aiomqtt.Message] = deque()
        self._arrived: asyncio.Event | None = None

    # -- the queue interface aiomqtt uses ----------------------------------------------------
    def put_nowait(self, message: aiomqtt.Message) -> None:
        """aiomqtt's receive callback (in the event loop's thread)."""
        self._messages.append(message)
        if self._arrived is not None:
            self._arrived.set()

    async def get(self) -> aiomqtt.Message:
        """Never returns: messages leave by `take`; aiomqtt's iterator waits here until the
        connection is lost (then it raises MqttError and cancels this)."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def qsize(self) -> int:
        return len(self._messages)

    # -- the consumer's side -----------------------------------------------------------------
    def take(self, limit: int) -> list[aiomqtt.Message]:
        """Up to `limit` messages, oldest first (none: an empty list)."""
        messages = self._messages
        if len(messages) <= limit:
            batch = list(messages)
            messages.clear()
            return batch
        return [messages.popleft() for _ in range(limit)]

    async def wait(self) -> None:
        """Return once a message is in the inbox (at once if one is)."""
        while not self._messages:
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()

    def queue_type(self, maxsize: int = 0, **_: Any) -> Any:
        """For `aiomqtt.Client(queue_type=...)`: aiomqtt calls it to build its queue."""
        return self

