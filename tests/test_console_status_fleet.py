"""`locker-console status` at fleet scale, and the ingest's lag made visible (issue 16, items 3
and 6). Real parts: the session's Mosquitto, a real ingest, SQLite and PostgreSQL (a fresh
database per test: the totals are the whole fleet's), the real `locker-console` process.

What an operator relies on: the listing is complete however many lockers there are (1,500 stored
rows, beyond what a broker's retained read or queue holds, plus lockers live through the ingest),
page by page with nothing missed or doubled; the filters select what they say while the totals
stay the fleet's; each locker says how fresh its data is and what its outbox holds; an ingest that
falls behind raises one `ingest_lag` alarm per episode, shown in `status` and ended when it is
back; an ingest that stopped shows STALE.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from contract.topics import Topics
from fleet_console import cli
from fleet_console.config import ConsoleMqtt
from fleet_console.db.engine import open_database
from fleet_console.db.models import Alarm, Cell, IngestReplica, Locker
from fleet_console.ingest import Ingest, IngestSettings
from tests.fixtures.console_ingest import SimLocker, db_query
from tests.fixtures.mqtt_broker import MqttBroker, unique_id
from tests.fixtures.postgres import PrivatePostgres

CONSOLE = str(Path(sys.executable).with_name("locker-console"))
TOPICS = Topics()
BULK = 1500


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/console.db"
    cluster: PrivatePostgres = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"status_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def ingest(console_mqtt: ConsoleMqtt, fresh_url: str) -> AsyncIterator[Ingest]:
    ing = Ingest(console_mqtt, open_database(fresh_url), IngestSettings(
        client_id=unique_id("ingest"), beat_interval_s=0.2, lag_alarm_s=5.0,
        lag_alarm_for_s=0.4))
    await ing.start()
    yield ing
    await ing.stop()
    ing.db.dispose()


def _config(tmp_path: Path, broker: MqttBroker, url: str) -> Path:
    user, password = broker.console_credentials
    path = tmp_path / "console.toml"
    path.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.console_port}\n'
                    f'username = "{user}"\npassword = "{password}"\n[database]\nurl = "{url}"\n')
    return path


async def _status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, run beside the ingest's event loop."""
    out = await asyncio.to_thread(
        subprocess.run, [CONSOLE, "--config", str(config), "status", *args],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out


def _in_process(config: Path, *args: str) -> dict[str, Any]:
    """`status --json` through the command's own entry point, without a process's start-up
    (the paging and filter checks run it many times); the text checks run the real process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["--config", str(config), "status", "--json", *args])
    assert code == 0
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


async def _json(config: Path, *args: str) -> dict[str, Any]:
    return await asyncio.to_thread(_in_process, config, *args)


def _bulk(url: str) -> dict[str, set[str]]:
    """1,500 lockers as the ingest stores them: every 100th offline, every 250th missing two
    of its four cells, three with alarms of which only one is open (recent, not ended)."""
    now = int(time.time() * 1000)
    ids = [f"B{n:04d}" for n in range(BULK)]
    offline = {lk for n, lk in enumerate(ids) if n % 100 == 7}
    incomplete = {lk for n, lk in enumerate(ids) if n % 250 == 3}
    db = open_database(url)
    with db.transaction() as s:
        s.add_all(Locker(id=lk, online=lk not in offline, version="2.0", boot_id="b",
                         started_at=now, last_status_at=now - 90_000, declared_cells=[1, 2, 3, 4],
                         last_heard_at=now - 90_000) for lk in ids)
        s.add_all(Cell(locker=lk, cell=c, state="free", door="closed", size="M", since=now,
                       updated_at=now)
                  for lk in ids for c in ((1, 2) if lk in incomplete else (1, 2, 3, 4)))
        s.add_all([
            Alarm(locker="B0010", kind="seq_gap", data={}, at=now - 1000, received_at=now),
            Alarm(locker="B0011", kind="flood", data={}, at=now - 1000, received_at=now,
                  ended_at=now),
            Alarm(locker="B0012", kind="seq_gap", data={}, at=now - 2 * 86_400_000,
                  received_at=now),
        ])
    db.dispose()
    return {"all": set(ids), "offline": offline, "incomplete": incomplete, "alarms": {"B0010"}}


async def _wait(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait for `check()` (run in a thread: it may block) to be truthy; the ingest runs on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def test_status_is_complete_beyond_the_broker_with_paging_filters_and_freshness(
    ingest: Ingest, fresh_url: str, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    bulk = await asyncio.to_thread(_bulk, fresh_url)
    live = [SimLocker(mqtt_broker, fresh_url) for _ in range(2)]
    try:
        now = int(time.time() * 1000)
        for lk in live:
            lk.client.publish(TOPICS.status(lk.id), json.dumps({
                "online": True, "version": "3.0", "boot_id": "b", "started_at": now,
                "cells": [1, 2], "outbox": {"depth": 3, "oldest_at": now - 150_000}}),
                qos=1, retain=True)
            lk.cell(1)
            lk.cell(2)
            lk.event(1)
        await _wait("the live lockers' freshness written by the heartbeat", lambda: db_query(
            fresh_url, lambda c: c.scalar(select(Locker.id).where(
                Locker.id == live[1].id, Locker.stored_seq == 1,
                Locker.last_heard_at.is_not(None)))))
        config = _config(tmp_path, mqtt_broker, fresh_url)
        ours = bulk["all"] | {lk.id for lk in live}
        # The session's broker may hold other tests' retained statuses: the ingest stores those
        # lockers too, and a complete listing has them.
        everyone = set(db_query(fresh_url, lambda c: c.scalars(select(Locker.id)).all()))
        assert ours <= everyone
        n = len(everyone)

        # Complete, page by page (keyset), nothing missed or doubled; totals the fleet's.
        seen: list[str] = []
        after: list[str] = []
        while True:
            page = await _json(config, "--limit", "400", *after)
            seen += [e["id"] for e in page["lockers"]]
            assert page["totals"]["lockers"] == len(everyone)
            if page["page"]["next_after"] is None:
                break
            after = ["--after", page["page"]["next_after"]]
        assert len(seen) == len(set(seen)) and set(seen) == everyone
        totals = page["totals"]
        assert totals["lockers"] == n and totals["online"] + totals["offline"] + \
            totals["unknown"] == n
        # --json lists all (the real process); --page K counts pages of --limit.
        full = json.loads((await _status(config, "--json")).stdout)
        assert len(full["lockers"]) == len(everyone) and full["source"] == "database"
        page3 = (await _json(config, "--limit", "100", "--page", "3"))["lockers"]
        assert [e["id"] for e in page3] == sorted(everyone)[200:300]

        # Filters select the page, never the totals; each total is what its filter lists.
        for flag, key, total in (("--offline", "offline", None),
                                 ("--incomplete", "incomplete", "incomplete"),
                                 ("--alarms", "alarms", "with_alarms")):
            data = await _json(config, flag)
            listed = {e["id"] for e in data["lockers"]}
            assert listed & ours == bulk[key], flag
            assert data["totals"] == totals
            if total:
                assert totals[total] == len(listed), flag
            else:
                assert totals["offline"] + totals["unknown"] == len(listed)
        inc = (await _json(config, "--incomplete", "--locker", "B0003"))["lockers"]
        assert [(e["cells_known"], e["cells_declared"], e["missing_cells"]) for e in inc] == [
            (2, 4, [3, 4])]

        # Text: header, one page of 50, freshness, the outbox, how to get the next page.
        text = (await _status(config)).stdout.splitlines()
        assert text[0].startswith(f"fleet: {n} lockers, {totals['online']} online, "
                                  f"{totals['offline']} offline"), text[0]
        assert re.match(rf"ingest {ingest.settings.client_id} \(.* pid \d+\): heartbeat \d+ s "
                        r"ago, inbox \d+, ", text[1]), text[1]
        lockers = [ln for ln in text if ln.startswith("B")]
        assert len(lockers) == 50 and text[-1] == f"page: lockers 1-50 of {n}; next page: " \
            "--after B0049"
        assert "heard 1 min ago  status 1 min ago  cells 4/4" in lockers[0], lockers[0]
        [mine] = (await _status(config, "--locker", live[0].id)).stdout.splitlines()[2:3]
        assert re.search(r"heard \d+ s ago  status \d+ s ago  cells 2/2  outbox 3 \(oldest "
                         r"2 min ago\)", mine), mine
    finally:
        for lk in live:
            lk.clear_retained((1, 2))
            lk.close()


async def test_an_ingest_held_back_raises_one_lag_alarm_until_it_catches_up(
    ingest: Ingest, fresh_url: str, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    lk = SimLocker(mqtt_broker, fresh_url)
    config = _config(tmp_path, mqtt_broker, fresh_url)
    seq = 0

    def send(age_ms: int) -> None:
        nonlocal seq
        seq += 1
        lk.client.publish(TOPICS.events(lk.id), json.dumps({
            "seq": seq, "id": str(uuid.uuid4()), "at": int(time.time() * 1000) - age_ms,
            "type": "door_opened", "data": {}}), qos=1)

    def lag_alarms(c: Any) -> list[Any]:
        return list(c.execute(select(Alarm.id, Alarm.ended_at, Alarm.data)
                              .where(Alarm.kind == "ingest_lag")).all())

    async def sending(age_ms: int, until: Callable[[list[Any]], bool]) -> list[Any]:
        def step() -> Any:
            send(age_ms)
            found = db_query(fresh_url, lag_alarms)
            return found if until(found) else None
        return list(await _wait("the lag alarm's change", step))

    try:
        # Events ten minutes old (a console far behind): one alarm, after lag_alarm_for_s.
        [raised] = await sending(600_000, lambda a: bool(a))
        assert raised.ended_at is None and raised.data["replica"] == ingest.settings.client_id
        assert raised.data["lag_p50_ms"] >= 600_000
        row = db_query(fresh_url, lambda c: c.execute(select(
            IngestReplica.lag_alarm_id, IngestReplica.lagging_since)).one())
        assert row.lag_alarm_id == raised.id and row.lagging_since is not None

        async def behind() -> None:  # still behind: the episode goes on, no second alarm
            while True:
                send(600_000)
                await asyncio.sleep(0.05)

        keep = asyncio.create_task(behind())
        try:
            text = (await _status(config)).stdout
        finally:
            keep.cancel()
        assert "alarm ingest_lag since" in text and "BEHIND since" in text, text
        await asyncio.to_thread(lk.wait_ack, seq)
        assert len(db_query(fresh_url, lag_alarms)) == 1
        # Fresh events again: the same alarm ends; still one.
        [ended] = await sending(0, lambda a: all(x.ended_at is not None for x in a))
        assert ended.id == raised.id
        assert "alarm ingest_lag" not in (await _status(config)).stdout
        listed = await asyncio.to_thread(subprocess.run, [
            CONSOLE, "--config", str(config), "alarms"], capture_output=True, text=True,
            timeout=30, stdin=subprocess.DEVNULL)
        [line] = [ln for ln in listed.stdout.splitlines() if "ingest_lag" in ln]
        assert "(console)  ingest_lag" in line and "(ended " in line, line

        # A hole filled late never moves the locker's stored seq or newest event backwards.
        def fresh() -> Any:
            return db_query(fresh_url, lambda c: c.execute(select(
                Locker.stored_seq, Locker.last_event_at, Locker.last_heard_at)
                .where(Locker.id == lk.id)).one())

        top = seq + 2
        seq += 1  # skipped: sent after the next one
        send(0)  # seq + 2
        newest = (await _wait("the newest seq stored", lambda: (f := fresh()).stored_seq == top
                              and f)).last_event_at
        late = top - 1
        lk.client.publish(TOPICS.events(lk.id), json.dumps({
            "seq": late, "id": str(uuid.uuid4()), "at": newest - 5000, "type": "door_opened",
            "data": {}}), qos=1)
        await asyncio.to_thread(lk.wait_ack, top)
        heard = fresh().last_heard_at
        after = await _wait("a heartbeat after the late event", lambda: (f := fresh())
                            .last_heard_at > heard and f)
        assert (after.stored_seq, after.last_event_at) == (top, newest)
    finally:
        lk.close()
    # An ingest that died (no clean stop) shows STALE after three intervals (0.6 s here).
    task = ingest._task
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    ingest._task = None
    def stale() -> Any:
        o = subprocess.run([CONSOLE, "--config", str(config), "status"], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        return o if "STALE" in o.stdout else None
    out = await _wait("STALE in status", stale)
    assert f"ingest {ingest.settings.client_id} " in out.stdout
    assert "has not written its heartbeat" in out.stderr


async def test_an_ingest_stopped_cleanly_shows_stopped_not_stale(
    ingest: Ingest, fresh_url: str, mqtt_broker: MqttBroker, tmp_path: Path
) -> None:
    config = _config(tmp_path, mqtt_broker, fresh_url)
    db = open_database(fresh_url)
    with db.transaction() as s:  # a fleet of one, so that status reads the database
        s.add(Locker(id="L1", online=True))
    db.dispose()
    await _wait("the first heartbeat", lambda: db_query(
        fresh_url, lambda c: c.scalar(select(IngestReplica.client_id))))
    await ingest.stop()
    await asyncio.sleep(0.7)  # past three heartbeat intervals: it would be STALE had it died
    out = await _status(config)
    assert re.search(rf"ingest {ingest.settings.client_id} \(.*\): stopped \d+ s ago", out.stdout)
    assert "STALE" not in out.stdout and "heartbeat" not in out.stderr
