"""Publish a parcel locker's directory: its configuration with the `parcels` section's
`recipients` and `staff` replaced by what the console database holds, other sections kept.

The base is the body last published to the locker: the retained signed configuration on the
broker (whoever published it: `publish-config`, or this), else the copy the console kept in
`config_bodies` (a broker that lost its retained messages). A locker that never had a
configuration published has no storage profile to keep: that is refused with a plain message
(publish its profile first), since lockerd refuses a body without one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from contract.messages import MalformedPayload, SignedConfig, deflate_body
from contract.profiles import sectioned
from contract.signing import COMPRESS_ABOVE, canonical_json
from contract.topics import Topics
from fleet_console.config import ConsoleConfig
from fleet_console.db import directory
from fleet_console.db.engine import Database
from fleet_console.mqtt import make_client
from fleet_console.operations import ConfigRun, Signer, Unusable, broker_failure
from fleet_console.remote import Remote

#: The signed envelope around the body (version, times, key id, signature, topic): generous.
_ENVELOPE_BYTES = 400


def with_directory(base: dict[str, Any], recipients: list[dict[str, Any]],
                   staff: list[dict[str, Any]]) -> dict[str, Any]:
    """`base` in sections with `parcels.recipients` and `parcels.staff` replaced (the other
    keys of `parcels` and the other sections as they were)."""
    body = dict(sectioned(base))
    parcels = dict(body.get("parcels") or {})
    parcels["recipients"] = recipients
    parcels["staff"] = staff
    body["parcels"] = parcels
    return body


async def _retained_body(remote: Remote, locker: str) -> tuple[int, dict[str, Any]] | None:
    for message in await remote.read_retained([remote.topics.config(locker)]):
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            cfg = SignedConfig.from_payload(payload)
        except MalformedPayload:
            continue
        if cfg.locker == locker:
            return cfg.version, cfg.content
    return None


def payload_size(body: dict[str, Any]) -> int:
    """About the bytes of the signed configuration carrying `body` (JSON, or `body_z` when
    the JSON is over COMPRESS_ABOVE): what the broker's `max_packet_size` must allow."""
    canonical = canonical_json(body)
    if len(canonical) > COMPRESS_ABOVE:
        return len(deflate_body(canonical)) + _ENVELOPE_BYTES
    return len(canonical) + _ENVELOPE_BYTES


async def retained_directory(cfg: ConsoleConfig, locker: str) -> tuple[int, int] | None:
    """(recipients, staff) in the `parcels` section of the locker's retained configuration;
    None without one (or without the broker: this is only for a warning)."""
    try:
        async with make_client(cfg.mqtt) as client, Remote(
            client, Topics(cfg.mqtt.prefix)
        ) as remote:
            retained = await _retained_body(remote, locker)
    except aiomqtt.MqttError:
        return None
    parcels = retained[1].get("parcels") if retained is not None else None
    if not isinstance(parcels, dict):
        return None
    recipients, staff = parcels.get("recipients") or [], parcels.get("staff") or []
    if not recipients and not staff:
        return None
    return len(recipients), len(staff)


@dataclass(frozen=True)
class DirectoryRun:
    """How publishing a directory ended, and how many entries it carried."""

    run: ConfigRun
    recipients: int
    staff: int
    payload_bytes: int = 0


async def publish_directory(
    cfg: ConsoleConfig,
    sign: Signer,
    db: Database,
    locker: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.time,
) -> DirectoryRun:
    """Build the body from the database and the last published one, sign, publish, wait;
    a published body is kept in `config_bodies`. Unusable when there is no base body."""

    def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
        with db.transaction() as s:
            return (directory.last_body(s, locker), directory.recipients_section(s, locker),
                    directory.staff_section(s, locker))

    kept, recipients, staff = await asyncio.to_thread(read)
    size = 0
    try:
        async with make_client(cfg.mqtt) as client, Remote(
            client, Topics(cfg.mqtt.prefix), private_key=sign.key, key_id=sign.key_id,
            clock=clock,
        ) as remote:
            retained = await _retained_body(remote, locker)
            base = retained[1] if retained is not None else kept
            if base is None:
                raise Unusable(
                    f"no configuration of {locker} was ever published (the directory is "
                    "stored, not published): publish its storage profile first "
                    f"(locker-console publish-config), then `locker-console recipients "
                    f"publish --locker {locker}`")
            body = with_directory(base, recipients, staff)
            size = payload_size(body)
            outcome = await remote.publish_config(locker, body, version=None, timeout=timeout)
    except aiomqtt.MqttError as exc:
        return DirectoryRun(ConfigRun(broker=broker_failure(exc)), len(recipients), len(staff),
                            size)
    if outcome.status == "applied" or outcome.status == "timeout":
        def record() -> None:
            with db.transaction() as s:
                directory.record_published_body(s, locker, outcome.version, outcome.hash, body,
                                                int(clock() * 1000))

        await asyncio.to_thread(record)
    return DirectoryRun(ConfigRun(outcome=outcome), len(recipients), len(staff), size)
