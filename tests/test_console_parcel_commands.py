"""`locker-console parcels expect`, `returns create`, `report cells` (issue 12) against a real
Mosquitto and a stand-in locker on the locker's own account that verifies every command's
signature with the console's public key and answers as lockerd's parcel business would.

A return code is shown to the operator once and kept nowhere by the console: after a
`create-return` round trip, with a real ingest storing the locker's results beside the command's
own audit, no table of the console database (nor its file) holds the code.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select, text

from contract.messages import Delivered
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import make_engine
from fleet_console.db.models import QuarantineRow
from tests.fixtures.console_cli import (
    TOPICS,
    audit_row,
    config,
    done,
    locker,
    rejected,
    signing_key,
    the_command,
)
from tests.fixtures.console_ingest import IngestRunner
from tests.fixtures.mqtt_broker import MqttBroker, MqttTestClient
from tests.test_console_directory import console

__all__ = ["config", "locker", "signing_key"]

#: What the stand-in locker issues: 8 digits, distinctive enough to search a database file for.
RETURN_CODE = "90817263"


def test_expect_sends_a_signed_expect_parcel(
    config: Path, locker: Any, tmp_path: Path
) -> None:
    lk = locker(done({"parcel_id": "P-1"}))
    out = console(config, "parcels", "expect", "--locker", lk.locker, "--barcode", "4600123",
                  "--recipient", "r1", "--parcel-id", "P-1", "--operator", "alice",
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.strip() == (
        f"done: {lk.locker} expects parcel P-1 (barcode 4600123) for recipient r1")
    cmd = the_command(lk)
    assert (cmd["type"], cmd["args"], cmd["operator"]) == (
        "expect-parcel", {"parcel_id": "P-1", "barcode": "4600123", "recipient_id": "r1"},
        "alice")
    assert audit_row(tmp_path, cmd["cmd_id"]).status == "done"


def test_expect_makes_up_a_parcel_id_and_refuses_what_the_locker_would(
    config: Path, locker: Any
) -> None:
    lk = locker(done({}))
    out = console(config, "parcels", "expect", "--locker", lk.locker, "--barcode", "B 1",
                  "--recipient", "r1")
    assert out.returncode == 2 and "expect-parcel: barcode: String should match" in out.stderr
    out = console(config, "report", "cells", "--locker", lk.locker, "--email", "nobody")
    assert out.returncode == 2
    assert lk.verdicts == []  # nothing was sent
    out = console(config, "parcels", "expect", "--locker", lk.locker, "--barcode", "B1",
                  "--recipient", "r1", "--json", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert len(the_command(lk)["args"]["parcel_id"]) == 36  # a UUID


def test_a_locker_without_a_parcel_business_says_unsupported(
    config: Path, locker: Any
) -> None:
    lk = locker(rejected("unsupported"))
    out = console(config, "report", "cells", "--locker", lk.locker, "--email",
                  "admin@example.org", "--timeout", "5")
    assert out.returncode == 1
    assert out.stdout.strip() == "rejected: unsupported"


def test_report_cells_sends_the_address(config: Path, locker: Any) -> None:
    lk = locker(done({}))
    out = console(config, "report", "cells", "--locker", lk.locker, "--email",
                  "admin@example.org", "--timeout", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"done: {lk.locker} e-mails its cell report to admin@example.org"
    cmd = the_command(lk)
    assert (cmd["type"], cmd["args"]) == ("report-cells", {"email": "admin@example.org"})


async def test_a_return_code_is_shown_once_and_stored_nowhere(
    config: Path, locker: Any, tmp_path: Path, console_mqtt: ConsoleMqtt,
    mqtt_broker: MqttBroker,
) -> None:
    url = f"sqlite:///{tmp_path}/console.db"
    ingest = IngestRunner(console_mqtt, url)  # stores the locker's results too
    await ingest.start()
    delivered = mqtt_broker.console_client()
    try:
        lk = locker(lambda cmd: [
            {"status": "accepted"},
            {"status": "done", "data": {"return_id": cmd["args"]["return_id"],
                                        "return_code": RETURN_CODE}}])
        delivered.subscribe(TOPICS.delivered(lk.locker))
        out = await asyncio.to_thread(
            console, config, "returns", "create", "--locker", lk.locker, "--recipient", "r1",
            "--return-id", "R-77", "--timeout", "5")
        assert out.returncode == 0, out.stderr + out.stdout
        assert out.stdout.count(RETURN_CODE) == 1
        assert out.stdout.startswith(f"return code: {RETURN_CODE}  (return R-77 at {lk.locker};")
        cmd = the_command(lk)
        assert (cmd["type"], cmd["args"]) == ("create-return",
                                              {"return_id": "R-77", "recipient_id": "r1"})
        out = await asyncio.to_thread(
            console, config, "returns", "create", "--locker", lk.locker, "--json",
            "--timeout", "5")
        assert json.loads(out.stdout)["data"]["return_code"] == RETURN_CODE
        # the ingest stored the results of both (as the command's own audit did): it says
        # so to the locker on `delivered` after its commit
        cmd_ids = {c["cmd_id"] for _, c in lk.verdicts}
        await asyncio.to_thread(_wait_delivered, delivered, cmd_ids)
        # A result the ingest cannot read (a bad status) is quarantined: its excerpt, not the code
        bad = {"cmd_id": cmd["cmd_id"], "status": "bogus",
               "data": {"return_id": "R-77", "return_code": RETURN_CODE}}
        await asyncio.to_thread(lk.client.publish, TOPICS.cmd_result(lk.locker),
                                json.dumps(bad).encode(), 1)
        excerpt = await _quarantined_excerpt(url, lk.locker)
        assert b'"return_code": "redacted"' in excerpt and b"R-77" in excerpt
    finally:
        delivered.close()
        await ingest.stop()
        await ingest.forget_session()
    assert audit_row(tmp_path, cmd["cmd_id"]).result_data == {"return_id": "R-77",
                                                         "return_code": "redacted"}
    assert _tables_holding(url, RETURN_CODE) == []
    for file in tmp_path.glob("console.db*"):
        assert RETURN_CODE.encode() not in file.read_bytes(), file


async def _quarantined_excerpt(url: str, locker: str, timeout: float = 10.0) -> bytes:
    """The excerpt of the locker's first quarantined message, once there is one."""
    engine = make_engine(url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with engine.connect() as conn:
                found = conn.execute(select(QuarantineRow.excerpt).where(
                    QuarantineRow.locker == locker)).scalars().first()
            if found is not None:
                return bytes(found)
            assert asyncio.get_running_loop().time() < deadline, "nothing quarantined"
            await asyncio.sleep(0.05)
    finally:
        engine.dispose()


def _wait_delivered(client: MqttTestClient, cmd_ids: set[str]) -> None:
    """Until the ingest confirmed the `done` result of each of these commands."""
    seen: set[str] = set()
    while not cmd_ids <= seen:
        msg = client.expect(timeout=10)
        seen.update(r.cmd_id for r in Delivered.from_payload(msg.payload).results
                    if r.status == "done")


def _tables_holding(url: str, needle: str) -> list[str]:
    """The tables with a row whose text holds `needle`."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            found = []
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    if needle in repr(tuple(row)):
                        found.append(table)
                        break
            return found
    finally:
        engine.dispose()
