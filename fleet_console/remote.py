"""Remote control of lockers: a signed command or configuration out, the locker's answer back.

The operator CLI and the benchmarks use this one API, so what a benchmark times is what an
operator gets. `Remote` owns a connected aiomqtt client's message stream while entered and routes
what arrives to whoever waits for it; it always subscribes to the answer topic before publishing,
so an answer cannot overtake the subscription. It never retries a command: a command whose answer
did not come in time has an unknown outcome (it may still run until it expires), and a second
command would be a second command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.messages import (
    CommandResult,
    ConfigApplied,
    Event,
    MalformedPayload,
    SignedConfig,
)
from contract.signing import config_hash, make_command, make_config
from contract.topics import Topics

FINAL = ("done", "failed", "rejected")


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended: `status` is done, failed, rejected or timeout (outcome unknown)."""

    cmd_id: str
    locker: str
    status: Literal["done", "failed", "rejected", "timeout"]
    reason: str | None
    data: dict[str, Any]
    accepted: bool
    expires_at: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict[str, Any]:
        """The final result object (what `--json` prints)."""
        out: dict[str, Any] = {"cmd_id": self.cmd_id, "locker": self.locker, "status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        out["data"] = self.data
        out["accepted"] = self.accepted
        out["expires_at"] = self.expires_at
        return out


@dataclass(frozen=True)
class ConfigOutcome:
    """How a configuration ended: applied, rejected (with the locker's reason) or timeout."""

    locker: str
    version: int
    hash: str
    status: Literal["applied", "rejected", "timeout"]
    reason: str | None = None
    previous_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class RetainedRead:
    """Retained messages collected; `quiet`: the stream fell silent before the time limit."""

    messages: list[aiomqtt.Message]
    quiet: bool
    elapsed_s: float


@dataclass
class _Listener:
    filters: tuple[str, ...]
    queue: asyncio.Queue[aiomqtt.Message] = field(default_factory=asyncio.Queue)


class Remote:
    """Commands and configurations over one connected client (`async with Remote(...)`).

    `private_key`/`key_id` are needed only to send; reading retained state needs neither.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        topics: Topics,
        *,
        private_key: Ed25519PrivateKey | None = None,
        key_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.topics = topics
        self.private_key = private_key
        self.key_id = key_id
        self._clock = clock
        self._listeners: list[_Listener] = []
        self._subscribed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Remote:
        self._task = asyncio.create_task(self._dispatch(), name="remote-dispatch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    async def _dispatch(self) -> None:
        async for message in self.client.messages:
            for listener in list(self._listeners):
                if any(message.topic.matches(f) for f in listener.filters):
                    listener.queue.put_nowait(message)

    @contextlib.asynccontextmanager
    async def listen(self, *filters: str) -> Any:
        """A queue of the messages matching `filters` (subscribed QoS 1) while inside."""
        listener = _Listener(tuple(filters))
        self._listeners.append(listener)
        try:
            new = [f for f in filters if f not in self._subscribed]
            if new:
                await self.client.subscribe([(f, 1) for f in new])
                self._subscribed.update(new)
            yield listener.queue
        finally:
            self._listeners.remove(listener)

    def _signer(self) -> tuple[Ed25519PrivateKey, str]:
        if self.private_key is None or self.key_id is None:
            raise ValueError("this Remote has no signing key")
        return self.private_key, self.key_id

    # -- commands -----------------------------------------------------------------------------
    async def send_command(
        self,
        locker: str,
        type: str,
        args: Mapping[str, Any],
        *,
        operator: str,
        reason: str,
        ttl_ms: int,
        timeout: float,
        on_issued: Callable[[dict[str, Any]], None] | None = None,
        on_result: Callable[[CommandResult], None] | None = None,
    ) -> CommandOutcome:
        """Sign, publish (QoS 1) and wait up to `timeout` s for the final result.

        `on_issued(command)` runs just before the publish, `on_result(result)` for every
        result of this cmd_id (accepted, then the final one).
        """
        key, key_id = self._signer()
        started = time.monotonic()
        async with self.listen(self.topics.cmd_result(locker)) as queue:
            command = make_command(
                locker, type, args, operator=operator, reason=reason, key_id=key_id,
                private_key=key, now_ms=int(self._clock() * 1000), ttl_ms=ttl_ms,
            )
            cmd_id = command["cmd_id"]
            if on_issued is not None:
                on_issued(command)
            await self.client.publish(self.topics.cmd(locker), _json(command), qos=1)
            accepted = False
            deadline = started + timeout
            while True:
                message = await _get(queue, deadline)
                if message is None:
                    return CommandOutcome(
                        cmd_id, locker, "timeout", None, {}, accepted, command["expires_at"],
                        time.monotonic() - started,
                    )
                try:
                    result = CommandResult.from_payload(_payload(message))
                except MalformedPayload:
                    continue
                if result.cmd_id != cmd_id:
                    continue
                if on_result is not None:
                    on_result(result)
                if result.status == "accepted":
                    accepted = True
                    continue
                return CommandOutcome(
                    cmd_id, locker, result.status, result.reason, dict(result.data),
                    accepted or result.status in ("done", "failed"), command["expires_at"],
                    time.monotonic() - started,
                )

    # -- retained state -----------------------------------------------------------------------
    async def read_retained(
        self, filters: Sequence[str], *, quiet_s: float = 0.3, max_s: float = 5.0
    ) -> list[aiomqtt.Message]:
        """The retained messages on `filters`: subscribe, collect until `quiet_s` of silence."""
        return (await self.collect_retained(filters, quiet_s=quiet_s, max_s=max_s)).messages

    async def collect_retained(
        self, filters: Sequence[str], *, quiet_s: float = 0.3, max_s: float = 5.0
    ) -> RetainedRead:
        """Like `read_retained`, and whether it ended in silence or was cut at `max_s` (then
        more may have been on their way)."""
        out: list[aiomqtt.Message] = []
        started = time.monotonic()
        async with self.listen(*filters) as queue:
            deadline = started + max_s
            while True:
                quiet_at = time.monotonic() + quiet_s
                message = await _get(queue, min(deadline, quiet_at))
                if message is None:
                    # Cut: the time limit came before `quiet_s` of silence did.
                    return RetainedRead(out, deadline >= quiet_at, time.monotonic() - started)
                if message.retain:
                    out.append(message)

    # -- configuration ------------------------------------------------------------------------
    async def current_config_version(self, locker: str, *, quiet_s: float = 0.3) -> int | None:
        """Version of the retained config/applied, else of the retained config, else None."""
        applied_topic, config_topic = self.topics.config_applied(locker), self.topics.config(locker)
        versions: dict[str, int] = {}
        for message in await self.read_retained([applied_topic, config_topic], quiet_s=quiet_s):
            model = ConfigApplied if str(message.topic) == applied_topic else SignedConfig
            try:
                versions[str(message.topic)] = model.from_payload(_payload(message)).version
            except MalformedPayload:
                continue
        return versions.get(applied_topic, versions.get(config_topic))

    async def publish_config(
        self,
        locker: str,
        body: Mapping[str, Any],
        *,
        version: int | None = None,
        timeout: float,
        quiet_s: float = 0.3,
    ) -> ConfigOutcome:
        """Sign `body` as `version` (default: the current one + 1), publish it retained, and wait
        for config/applied with that version and hash, or a `config_rejected` event."""
        key, key_id = self._signer()
        previous = await self.current_config_version(locker, quiet_s=quiet_s)
        if version is None:
            version = (previous or 0) + 1
        digest = config_hash(body)
        if previous is not None and version <= previous:
            # The locker would refuse it anyway; publishing it would only leave an older
            # configuration retained on the broker for lockers that boot later.
            return ConfigOutcome(locker, version, digest, "rejected",
                                 f"stale_version (the locker runs version {previous}; "
                                 "not published)", previous_version=previous)
        applied_topic = self.topics.config_applied(locker)
        async with self.listen(applied_topic, self.topics.events(locker)) as queue:
            signed = make_config(
                locker, version, body, key_id=key_id, private_key=key,
                now_ms=int(self._clock() * 1000),
            )
            await self.client.publish(self.topics.config(locker), _json(signed), qos=1, retain=True)
            deadline = time.monotonic() + timeout
            while True:
                message = await _get(queue, deadline)
                if message is None:
                    return ConfigOutcome(locker, version, digest, "timeout",
                                         previous_version=previous)
                try:
                    if str(message.topic) == applied_topic:
                        applied = ConfigApplied.from_payload(_payload(message))
                        if applied.version == version and applied.hash == digest:
                            return ConfigOutcome(locker, version, digest, "applied",
                                                 previous_version=previous)
                        continue
                    event = Event.from_payload(_payload(message))
                except MalformedPayload:
                    continue
                wanted = event.data.get("version", version) == version
                if event.type == "config_rejected" and wanted:
                    why = event.data.get("reason")
                    return ConfigOutcome(locker, version, digest, "rejected",
                                         str(why) if why is not None else "rejected",
                                         previous_version=previous)


async def send_command(
    client: aiomqtt.Client,
    topics: Topics,
    private_key: Ed25519PrivateKey,
    key_id: str,
    locker: str,
    type: str,
    args: Mapping[str, Any],
    *,
    operator: str,
    reason: str,
    ttl_ms: int,
    timeout: float,
    on_issued: Callable[[dict[str, Any]], None] | None = None,
    on_result: Callable[[CommandResult], None] | None = None,
) -> CommandOutcome:
    """One command over a connected client that nothing else reads from meanwhile."""
    async with Remote(client, topics, private_key=private_key, key_id=key_id) as remote:
        return await remote.send_command(
            locker, type, args, operator=operator, reason=reason, ttl_ms=ttl_ms,
            timeout=timeout, on_issued=on_issued, on_result=on_result,
        )


async def _get(queue: asyncio.Queue[aiomqtt.Message], deadline: float) -> aiomqtt.Message | None:
    """The next message, or None once the monotonic `deadline` passed."""
    left = deadline - time.monotonic()
    if left <= 0 and queue.empty():
        return None
    try:
        return await asyncio.wait_for(queue.get(), timeout=max(left, 0))
    except TimeoutError:
        return None


def _payload(message: aiomqtt.Message) -> bytes:
    return message.payload if isinstance(message.payload, bytes) else b""


def _json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
