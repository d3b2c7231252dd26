"""Every line lockerd writes to stderr is a JSON line: log shippers parse them, technicians grep.

A real lockerd with its kiosk (uvicorn) over a simulated board that goes silent (the board
drivers' warnings), then a clean stop: no plain-text line may appear among the JSON ones.
"""

from __future__ import annotations

import json

from tests.fixtures.messaging import free_port
from tests.fixtures.storage_locker import profile_toml

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 4)]


def test_every_stderr_line_is_json(board_sim, lockerd, tmp_path) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30,
             "timeout_ms": 50}
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_toml())
    port = free_port()
    d = lockerd([board], CELLS, extra=f'profile = "{profile}"\n'
                f'[kiosk]\nenabled = true\nport = {port}\n[payment]\nadapter = "simulator"')
    d.wait_line(lambda r: r.get("kind") == "kiosk_listening")
    sim.set_silent(True)  # the driver warns about every failed poll
    d.wait_event("board_offline")
    sim.set_silent(False)
    d.wait_event("board_online")
    assert d.terminate() == 0

    texts = [r["text"] for r in d.lines if r.get("kind") == "text"]
    assert texts == [], texts[:5]
    logged = [r for r in d.lines if r.get("kind") == "log"]
    assert any("poll failed" in r["message"] and r["level"] == "warning"
               and r["logger"] == "daemon.io.boards.driver" for r in logged), logged[:5]
    for record in d.lines:
        assert {"ts", "level", "locker", "kind"} <= set(record), record
        json.dumps(record)
