"""`lockerd payment-sim`: the simulated terminal's switches without `nc`, against a real lockerd
process and its simulator's control socket."""

from __future__ import annotations

import subprocess

from tests.fixtures.lockerd import LOCKERD
from tests.test_storage_crash import _start


def _sim(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LOCKERD, "payment-sim", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=15)


def test_payment_sim_switches_the_terminal_of_a_running_lockerd(board_sim, lockerd, tmp_path):
    _, d, http, _, _, _, _ = _start(board_sim, lockerd, tmp_path)
    queued = _sim(d.config_path, "next", "decline", "cancel")
    assert queued.returncode == 0, queued.stderr
    assert "decline cancel" in queued.stdout
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    start = f"/api/v1/rentals/{rental['rental_id']}/start"
    assert http.post(start).json()["error"]["code"] == "payment_declined"
    assert http.post(start).json()["error"]["code"] == "payment_cancelled"
    assert _sim(d.config_path, "offline", "on").returncode == 0
    assert http.post(start).json()["error"]["code"] == "terminal_offline"
    assert _sim(d.config_path, "offline", "off").returncode == 0
    assert http.post(start).status_code == 200
    ops = _sim(d.config_path, "operations")
    assert ops.returncode == 0 and "approved" in ops.stdout and "charges 1" in ops.stdout
    assert _sim(d.config_path, "next", "bogus").returncode == 2  # argparse: not an outcome


def test_payment_sim_without_a_simulator_says_what_to_configure(tmp_path):
    config = tmp_path / "l.toml"
    config.write_text(f'locker_id = "L1"\ndata_dir = "{tmp_path}"\n[mqtt]\nenabled = false\n'
                      '[[boards]]\nname = "b0"\nprotocol = "kerong-cu16"\nport = "/dev/null"\n'
                      '[[cells]]\nid = 1\nboard = "b0"\nlock = 1\nsize = "S"\n')
    out = _sim(config, "operations")
    assert out.returncode == 2 and "control_socket" in out.stderr, out
