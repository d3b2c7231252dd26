"""Issue 12 follow-up: the event outbox stays bounded, and what it drops is never dropped silently.

A locker without a console (`[mqtt] enabled = false`) never gets an ack, so before this every
event stayed in the outbox (in memory: tinydb holds the whole store) for ever; a networked
locker offline for weeks grew the same way. Now the oldest events beyond
`outbox_max_events_without_console` / `outbox_max_events` are dropped with a journal line naming
the range, and a console that asks for that range (`events/resend`) gets `events/gone`, so its
ingest raises `seq_gap_permanent` with the range and moves on.

All real: lockerd as a process on a pty board, Mosquitto with the `broker/` configuration and
the console's `Ingest` on SQLite with a short gap timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.io.store import LockerStore
from fleet_console.config import ConsoleMqtt
from tests.fixtures.console_ingest import IngestRunner, alarms, seqs
from tests.fixtures.lockerd import LockerdProcess
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 4)]


def _board(board_sim: Callable[..., Any]) -> dict[str, Any]:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    return {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}


def _events(d: LockerdProcess, pairs: int) -> None:
    """Two events per pair: a block and an unblock of cell 3, through the operator socket."""
    for _ in range(pairs):
        assert d.ctl("block", 3, reason="retention test")["ok"]
        assert d.ctl("unblock", 3)["ok"]


def test_a_locker_without_console_keeps_only_the_newest_events(
    board_sim: Callable[..., Any], lockerd: Callable[..., LockerdProcess]
) -> None:
    d = lockerd([_board(board_sim)], CELLS,
                extra="[mqtt]\nenabled = false\noutbox_max_events_without_console = 5\n")
    mark = d.mark
    _events(d, 6)
    dropped = d.wait_line(lambda r: r.get("kind") == "outbox_dropped", since=mark)
    assert dropped["level"] == "warning" and dropped["limit"] == 5
    assert dropped["from_seq"] <= dropped["to_seq"]
    events = d.ctl("cells")["events"]
    assert events["unacknowledged"] <= 5 < events["last_seq"]
    assert d.terminate() == 0
    store = LockerStore(d.socket.parent)
    try:
        held = [e["seq"] for e in store.outbox()]
        last = store.last_seq
    finally:
        store.close()
    assert held == list(range(last - len(held) + 1, last + 1)) and 0 < len(held) <= 5
    # every drop was said, and together they cover everything before what is held
    said = [r for r in d.lines if r.get("kind") == "outbox_dropped"]
    covered = {s for r in said for s in range(r["from_seq"], r["to_seq"] + 1)}
    assert covered == set(range(1, held[0]))


async def test_a_networked_locker_drops_the_oldest_and_the_console_learns_it_as_gone(
    board_sim: Callable[..., Any], lockerd: Callable[..., LockerdProcess],
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
    console_mqtt: ConsoleMqtt, tmp_path: Path,
) -> None:
    creds = locker_credentials
    url = f"sqlite:///{tmp_path}/var/console.db"
    ingest = IngestRunner(console_mqtt, url, gap_timeout_s=0.6)
    await ingest.start()
    extra = "\n".join([
        "[mqtt]", f'host = "{mqtt_broker.host}"', f"port = {mqtt_broker.port}",
        f'username = "{creds.username}"', f'password = "{creds.password}"',
        "resend_after_s = 1", "reconnect_spread_s = 0", "outbox_max_events = 6", ""])
    d = await asyncio.to_thread(lockerd, [_board(board_sim)], CELLS,
                                locker_id=creds.locker_id, extra=extra)
    lid = creds.locker_id
    try:
        await asyncio.to_thread(d.wait_line, lambda r: r.get("kind") == "mqtt_connected")
        await asyncio.to_thread(_events, d, 1)
        first = await asyncio.to_thread(lambda: d.ctl("cells")["events"]["last_seq"])
        await _until(lambda: seqs(url, lid)[-1:] == [first], "the console stored the first")
        await _until(lambda: d.ctl("cells")["events"]["unacknowledged"] == 0,
                     "the locker dropped what the console acked")
        # The console goes away (its session too: what is published meanwhile is lost)
        await ingest.stop()
        await ingest.forget_session()
        mark = d.mark
        await asyncio.to_thread(_events, d, 8)
        dropped = await asyncio.to_thread(
            d.wait_line, lambda r: r.get("kind") == "outbox_dropped", 10.0, mark)
        assert dropped["from_seq"] == first + 1 and dropped["limit"] == 6
        said = [r for r in d.lines[mark:] if r.get("kind") == "outbox_dropped"]
        lost = (said[0]["from_seq"], said[-1]["to_seq"])
        last = await asyncio.to_thread(lambda: d.ctl("cells")["events"]["last_seq"])
        # It comes back: the locker sends what it holds, says gone for the rest
        await ingest.start()
        await _until(lambda: ("seq_gap_permanent",
                              {"missing_from": lost[0], "missing_to": lost[1]})
                     in alarms(url, lid), "the permanent gap alarm")
        await _until(lambda: seqs(url, lid)[-1:] == [last], "the held events stored")
        stored = seqs(url, lid)
        assert not set(range(lost[0], lost[1] + 1)) & set(stored)
        assert set(range(lost[1] + 1, last + 1)) <= set(stored)
        await _until(lambda: d.ctl("cells")["events"]["unacknowledged"] == 0,
                     "the console acked past the gone range")
    finally:
        await asyncio.to_thread(d.terminate)
        await ingest.stop()
        await ingest.forget_session()


async def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
