"""lockerd stops whatever instant the stop lands on (issue 12 follow-up).

A stop cancels every task of the daemon once. On Python 3.11 `asyncio.wait_for` returns its
result and drops a cancellation that arrives together with it; a task that waited with it went
on, and lockerd never finished stopping (1 clean stop in 5 right after start in
tests/test_store_full.py; the fleet link's side is in tests/test_fleet_link.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.app import LockerDaemon
from daemon.config import LockerConfig
from daemon.journal import Journal

CELLS = [{"id": 1, "board": "b0", "lock": 1, "size": "S"},
         {"id": 2, "board": "b0", "lock": 2, "size": "M"}]


class _StopAt:
    """The daemon's journal: the line of `kind` asks the daemon to stop as it is written."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.daemon: LockerDaemon | None = None
        self.lines: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        for raw in text.splitlines():
            line = json.loads(raw)
            self.lines.append(line)
            if line.get("kind") == self.kind and self.daemon is not None:
                self.daemon.stop()
        return len(text)

    def flush(self) -> None:
        pass


async def test_a_stop_at_the_instant_the_locker_becomes_ready_ends_lockerd(
    board_sim: Callable[..., Any], tmp_path: Path
) -> None:
    """The stop comes in the step that sets `ready`: the storage business's wait for ready got
    its answer and the cancellation at once. Before: it went on into its payment rounds and
    lockerd's stop waited for it for ever."""
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    config = LockerConfig.model_validate({
        "locker_id": "L1", "data_dir": str(tmp_path / "data"), "mqtt": {"enabled": False},
        "boards": [{"name": "b0", "protocol": "kerong-cu16", "port": sim.path,
                    "poll_interval_ms": 25}],
        "cells": CELLS,
    })
    journal = _StopAt("ready")
    daemon = journal.daemon = LockerDaemon(
        config, Journal("L1", stream=journal))  # type: ignore[arg-type]
    await daemon.open_boards()
    run = asyncio.create_task(daemon.run())
    done, _ = await asyncio.wait({run}, timeout=5)
    if not done:  # leave nothing running on a failure
        daemon._stopping.set()
        for task in list(daemon._tasks):
            task.cancel()
        await asyncio.wait({run}, timeout=5)
    assert done, f"lockerd did not stop: {[line['kind'] for line in journal.lines]}"
    run.result()
    assert journal.lines[-1]["kind"] == "stopped", journal.lines[-3:]
