"""Issue 16: a connect storm's retained flood does not hold up the events behind it.

The ingest takes events and the lockers' retained presence on two broker connections
(docs/architecture.md, "Two connections: events first"). On one connection the broker delivers in
order, so after an ingest restart (or a broker's, or a fleet connecting at once) every event
waited behind every status and cell snapshot: at 3,000 lockers, ~20 s for an ack. Here 20 lockers
publish 10,000 retained cell snapshots while the ingest is away, then one event; when the ingest
comes back, the event's ack must come while the snapshots are still being stored.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from contract.topics import Topics
from fleet_console.config import ConsoleMqtt
from fleet_console.db.models import Cell
from tests.fixtures.console_ingest import IngestRunner, SimLocker, db_query
from tests.fixtures.mqtt_broker import MqttBroker

TOPICS = Topics()
LOCKERS = 20
CELLS = 500


def _flood(locker: SimLocker) -> None:
    """A status declaring CELLS cells and a retained snapshot of each, QoS 1, not awaited one
    by one (then all confirmed by the broker)."""
    cells = list(range(1, CELLS + 1))
    status = {"online": True, "version": "1.2.3", "boot_id": "b-1",
              "started_at": 1_700_000_000_000, "cells": cells,
              "boards": [{"name": "bus0", "online": True, "failures": 0}]}
    infos = [locker.client.paho.publish(TOPICS.status(locker.id), json.dumps(status), qos=1,
                                        retain=True)]
    for cell in cells:
        body = {"cell": cell, "state": "free", "door": "closed", "size": "M",
                "since": 1_700_000_000_000}
        infos.append(locker.client.paho.publish(TOPICS.cell(locker.id, cell), json.dumps(body),
                                                qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(30)


def _cells(url: str, ids: list[str]) -> int:
    return int(db_query(url, lambda c: c.scalar(
        select(func.count()).select_from(Cell).where(Cell.locker.in_(ids)))))


async def test_an_event_is_acknowledged_while_a_retained_flood_is_still_being_stored(
    console_mqtt: ConsoleMqtt, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/console.db"
    runner = IngestRunner(console_mqtt, url)
    await runner.start()  # the events session and its subscriptions exist from now on
    await runner.stop()   # ... and the ingest is away while the fleet publishes
    flooders = [SimLocker(mqtt_broker, url) for _ in range(LOCKERS)]
    sender = SimLocker(mqtt_broker, url)
    try:
        await asyncio.gather(*(asyncio.to_thread(_flood, lk) for lk in flooders))
        await asyncio.to_thread(sender.event, 1)
        ids = [lk.id for lk in flooders]
        await runner.start()
        await asyncio.to_thread(sender.wait_ack, 1, 30.0)
        stored_then = _cells(url, ids)
        assert stored_then < LOCKERS * CELLS, (
            "the event was acknowledged only after every retained snapshot was stored")

        async def all_cells() -> Any:
            while _cells(url, ids) < LOCKERS * CELLS:
                await asyncio.sleep(0.1)
        await asyncio.wait_for(all_cells(), 60)  # and the flood is stored whole all the same
    finally:
        await runner.stop()
        await runner.forget_session()
        for lk in (*flooders, sender):
            lk.close()
