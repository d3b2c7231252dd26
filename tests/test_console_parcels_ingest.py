"""The ingest keeps the parcel tables (issue 12), on SQLite and PostgreSQL: a locker on its own
broker account publishes real parcel events over a real Mosquitto, some out of order (a hole
filled late), and `locker-console parcels` lists what the tables hold."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleet_console.cli import main
from fleet_console.db.engine import open_database
from fleet_console.db.models import KioskRecipientRow, ParcelReturnRow, ParcelRow, StaffLoginRow
from fleet_console.ingest import Ingest, IngestSettings
from tests.fixtures.console_ingest import IngestRunner, SimLocker, db_query, seqs
from tests.fixtures.mqtt_broker import MqttBroker, unique_id
from tests.fixtures.postgres import PrivatePostgres
from tests.test_console_directory import console
from tests.test_ingest_replicas import forget_session, replica_mqtt


def _rows(url: str, model: Any, locker: str) -> list[dict[str, Any]]:
    return db_query(url, lambda c: [dict(r._mapping) for r in c.execute(
        select(model).where(model.locker == locker).order_by(model.id))])


async def test_parcel_events_become_parcels_returns_recipients_and_logins(
    runner: IngestRunner, make_locker: Any, db_url: str, mqtt_broker: MqttBroker,
    tmp_path: Path,
) -> None:
    lk: SimLocker = make_locker()
    deposit = {"parcel_id": "p1", "barcode": "4600001", "recipient_id": "r1", "cell": 3,
               "size": "M", "courier_id": "c1", "deposited_at": 1_700_000_000_000,
               "due_at": 1_700_172_800_000, "parcels": ["p1"], "added": False}
    sends: list[tuple[int, str, dict[str, Any]]] = [
        (1, "staff_login", {"staff_id": "c1", "role": "courier"}),
        (2, "recipient_added", {"recipient_id": "r1", "name": "Иванов", "courier_id": "c1",
                                "has_phone": True, "has_email": False}),
        # seq 3 (the deposit) comes last: the pickup is stored before it
        (4, "parcel_picked_up", {"parcel_id": "p1", "cell": 3}),
        (5, "parcel_deposited", {**deposit, "parcel_id": "p2", "barcode": "4600002",
                                 "parcels": ["p2"]}),
        (6, "return_deposited", {"return_id": "R1", "cell": 5, "size": "L"}),
        (7, "staff_login_locked", {"staff_id": "c2", "failures": 5, "until": 99,
                                   "alarm": True}),
        (3, "parcel_deposited", deposit),
    ]
    for seq, type_, data in sends:
        await asyncio.to_thread(lk.event, seq, type_, **data)
    await asyncio.to_thread(lk.wait_ack, 7)

    parcels = {r["parcel_id"]: r for r in _rows(db_url, ParcelRow, lk.id)}
    assert parcels["p1"]["status"] == "picked_up"  # not moved back by the late deposit
    assert (parcels["p1"]["barcode"], parcels["p1"]["size"], parcels["p1"]["courier_id"],
            parcels["p1"]["expires_at"]) == ("4600001", "M", "c1", 1_700_172_800_000)
    assert parcels["p2"]["status"] == "deposited" and parcels["p2"]["cell"] == 3
    [ret] = _rows(db_url, ParcelReturnRow, lk.id)
    assert (ret["return_id"], ret["status"], ret["cell"]) == ("R1", "deposited", 5)
    [added] = _rows(db_url, KioskRecipientRow, lk.id)
    assert (added["recipient_id"], added["name"], added["has_phone"]) == ("r1", "Иванов", True)
    logins = _rows(db_url, StaffLoginRow, lk.id)
    assert [(r["staff_id"], r["outcome"]) for r in logins] == [("c1", "ok"), ("c2", "locked")]

    # The same events delivered again (a locker that lost its acks) change nothing.
    await runner.stop()
    await runner.start()
    before = _rows(db_url, ParcelRow, lk.id)
    for seq, type_, data in sends:
        await asyncio.to_thread(lk.event, seq, type_, **data)
    await asyncio.to_thread(lk.event, 8, "staff_logout", staff_id="c1")
    # What no column holds (a NUL, a cell past INTEGER) is left out; the event is still stored.
    await asyncio.to_thread(lk.event, 9, "parcel_deposited", parcel_id="p9",
                            barcode="46\x0000", cell=2**40)
    await asyncio.to_thread(lk.wait_ack, 9)
    assert seqs(db_url, lk.id) == list(range(1, 10))
    p9 = _rows(db_url, ParcelRow, lk.id)[-1]
    assert (p9["parcel_id"], p9["barcode"], p9["cell"]) == ("p9", None, None)
    assert _rows(db_url, ParcelRow, lk.id)[:-1] == before
    assert len(_rows(db_url, StaffLoginRow, lk.id)) == 2

    # `locker-console parcels` lists them (filters, JSON, paging)
    cfg = tmp_path / "console.toml"
    user, password = mqtt_broker.console_credentials
    cfg.write_text(f'[mqtt]\nhost = "{mqtt_broker.host}"\nport = {mqtt_broker.console_port}\n'
                   f'username = "{user}"\npassword = "{password}"\n'
                   f'[database]\nurl = "{db_url}"\n')
    out = await asyncio.to_thread(console, cfg, "parcels", "--locker", lk.id, "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [p["parcel_id"] for p in listed["parcels"]] == ["p1", "p2", "p9"]
    assert listed["parcels"][0]["status"] == "picked_up"
    out = await asyncio.to_thread(console, cfg, "parcels", "--locker", lk.id, "--status",
                                  "deposited")
    assert out.returncode == 0 and "p2" in out.stdout and "p1 " not in out.stdout, out.stdout
    out = await asyncio.to_thread(console, cfg, "parcels", "--barcode", "4600001", "--json")
    assert [p["parcel_id"] for p in json.loads(out.stdout)["parcels"]] == ["p1"]
    out = await asyncio.to_thread(console, cfg, "parcels", "--locker", lk.id, "--limit", "1",
                                  "--json")
    page = json.loads(out.stdout)
    assert [p["parcel_id"] for p in page["parcels"]] == ["p1"]
    out = await asyncio.to_thread(console, cfg, "parcels", "--locker", lk.id, "--limit", "1",
                                  "--after", page["page"]["next_after"], "--json")
    page = json.loads(out.stdout)
    assert [p["parcel_id"] for p in page["parcels"]] == ["p2"]
    assert page["page"]["matching"] == 3 and page["page"]["next_after"] == f"{lk.id}/p2"
    assert main(["--config", str(cfg), "parcels", "--status", "lost"]) == 2


async def test_two_replicas_sharing_a_lockers_events_end_in_the_same_rows(
    mqtt_broker: MqttBroker, postgres_cluster: PrivatePostgres,
) -> None:
    """Each replica gets part of every locker's events, out of order; each batch folds its own
    under the locker's row lock: every parcel ends picked up, with its deposit's fields."""
    url = postgres_cluster.create_database(f"parcels_{uuid.uuid4().hex[:8]}")
    replicas = [Ingest(replica_mqtt(mqtt_broker, name), open_database(url),
                       IngestSettings(client_id=unique_id(f"ingest-{name}"), replica=name,
                                      gap_timeout_s=3.0))
                for name in ("a", "b")]
    lk = SimLocker(mqtt_broker, url)
    try:
        for r in replicas:
            await r.start()
        for n in range(1, 41):
            await asyncio.to_thread(lk.event, 2 * n - 1, "parcel_deposited",
                                    parcel_id=f"p{n}", barcode=f"46{n:05d}", cell=n % 8 + 1,
                                    size="S", courier_id="c1", recipient_id=f"r{n}",
                                    due_at=10**12 + n)
            await asyncio.to_thread(lk.event, 2 * n, "parcel_picked_up", parcel_id=f"p{n}",
                                    cell=n % 8 + 1)
        await asyncio.to_thread(lk.wait_ack, 80, 20.0)
    finally:
        lk.close()
        for r in replicas:
            await r.stop()
            r.db.dispose()
            await forget_session(r.mqtt, r.settings.client_id)
    assert all(r.stats.events_new > 0 for r in replicas), [r.stats.events_new for r in replicas]
    rows = {r["parcel_id"]: r for r in _rows(url, ParcelRow, lk.id)}
    assert len(rows) == 40
    for n in range(1, 41):
        row = rows[f"p{n}"]
        assert (row["status"], row["barcode"], row["cell"], row["recipient_id"],
                row["expires_at"], row["updated_seq"]) == (
            "picked_up", f"46{n:05d}", n % 8 + 1, f"r{n}", 10**12 + n, 2 * n), row


async def test_a_failing_projection_never_costs_an_event(
    runner: IngestRunner, make_locker: Any, db_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The events are what must be stored: a fault in the parcel tables' update (a bug, a
    value the database refuses) leaves those tables as they were and the events stored and
    acknowledged, with the failure logged."""
    from fleet_console.db import parcel_facts

    def broken(*args: Any) -> Any:
        raise ValueError("a bug in the projection")

    monkeypatch.setattr(parcel_facts, "project", broken)
    lk: SimLocker = make_locker()
    with caplog.at_level(logging.ERROR, logger="fleet_console.parcel_facts"):
        for seq in (1, 2):
            await asyncio.to_thread(lk.event, seq, "parcel_deposited", parcel_id=f"p{seq}",
                                    cell=seq)
        await asyncio.to_thread(lk.wait_ack, 2)
    assert seqs(db_url, lk.id) == [1, 2]
    assert _rows(db_url, ParcelRow, lk.id) == []
    assert "parcel tables not updated" in caplog.text
    monkeypatch.undo()
    await asyncio.to_thread(lk.event, 3, "parcel_deposited", parcel_id="p3", cell=3)
    await asyncio.to_thread(lk.wait_ack, 3)
    assert [r["parcel_id"] for r in _rows(db_url, ParcelRow, lk.id)] == ["p3"]
