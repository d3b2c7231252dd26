"""`locker-broker` on a running broker (issue 10, item 8): one data directory that `config`,
`run` and `reload` agree on, and a locker added to a running Mosquitto logs in within 2 s.

A real `locker-broker run` (it becomes Mosquitto) on free ports; the login is checked with a real
MQTT CONNECT (broker.runner.probe_login).
"""

from __future__ import annotations

import time
from pathlib import Path

from broker.runner import probe_login
from tests.fixtures.broker_cli import RunningBroker, broker_cli


def password_from(output: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith("password = "))
    return line.split('"')[1]


def test_a_locker_added_to_a_running_broker_logs_in_within_2_s(
    running_locker_broker: RunningBroker,
) -> None:
    env, port, proc = running_locker_broker
    added = broker_cli("add-locker", "L-new", env=env)
    assert added.returncode == 0, added.stderr
    assert "locker-broker reload" in added.stdout, added.stdout
    password = password_from(added.stdout)
    assert probe_login("127.0.0.1", port, "L-new", password) in (4, 5)  # not yet

    started = time.monotonic()
    reloaded = broker_cli("reload", env=env)
    assert reloaded.returncode == 0, reloaded.stderr
    assert f"pid {proc.pid}" in reloaded.stdout, reloaded.stdout
    deadline = started + 2.0
    while probe_login("127.0.0.1", port, "L-new", password) != 0:
        assert time.monotonic() < deadline, "the new locker cannot log in 2 s after reload"
        time.sleep(0.05)
    print(f"add-locker + reload: the new locker logs in {time.monotonic() - started:.2f} s "
          "after `locker-broker reload` started")

    removed = broker_cli("remove", "L-new", env=env)
    assert removed.returncode == 0 and "locker-broker reload" in removed.stdout
    assert broker_cli("reload", env=env).returncode == 0
    deadline = time.monotonic() + 2.0
    while probe_login("127.0.0.1", port, "L-new", password) == 0:
        assert time.monotonic() < deadline, "a removed locker still logs in 2 s after reload"
        time.sleep(0.05)


def test_config_and_run_use_one_data_directory(tmp_path: Path) -> None:
    """`config` without --out writes where `run` reads: the data directory."""
    env = {"LOCKER_BROKER_REGISTRY": str(tmp_path / "registry.json")}
    data = tmp_path / "broker"
    done = broker_cli("config", "--data-dir", str(data), env=env)
    assert done.returncode == 0, done.stderr
    conf = data / "mosquitto.conf"
    assert conf.is_file() and str(conf) in done.stdout
    assert f"pid_file {data / 'mosquitto.pid'}" in conf.read_text()
    # The default data directory is the same for both, relative to where they run.
    defaults = broker_cli("config", env=env, cwd=tmp_path)
    assert defaults.returncode == 0, defaults.stderr
    assert (tmp_path / "var" / "broker" / "mosquitto.conf").is_file()


def test_reload_without_a_running_broker_says_so(tmp_path: Path) -> None:
    env = {"LOCKER_BROKER_REGISTRY": str(tmp_path / "registry.json"),
           "LOCKER_BROKER_DATA_DIR": str(tmp_path / "broker")}
    missing = broker_cli("reload", env=env)
    assert missing.returncode == 2 and "locker-broker config" in missing.stderr, missing.stderr
    assert broker_cli("config", env=env).returncode == 0
    (tmp_path / "broker" / "mosquitto.pid").write_text("999999\n")  # stale: no such process
    stale = broker_cli("reload", env=env)
    assert stale.returncode == 1, stale.stderr
    assert "no running Mosquitto" in stale.stderr and "next start" in stale.stderr
