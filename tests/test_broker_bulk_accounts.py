"""`locker-broker add-lockers` (issue 16, item 7): accounts in bulk, all or nothing, and a
running Mosquitto lets them in without a restart.

A real `locker-broker run` (it becomes Mosquitto) on free ports; logins are real MQTT CONNECTs
(broker.runner.probe_login) with the passwords the command printed.
"""

from __future__ import annotations

import csv
import io
import stat
import time
from pathlib import Path

import pytest

from broker.passwords import DEFAULT_ITERATIONS, parse_hash
from broker.registry import Registry
from broker.runner import probe_login
from tests.fixtures.broker_cli import RunningBroker, broker_cli


def read_credentials(text: str) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["locker_id", "password"], rows[:1]
    return {locker: password for locker, password in rows[1:]}


def test_200_lockers_in_bulk_log_in_to_the_running_broker_within_2_s(
        running_locker_broker: RunningBroker, tmp_path: Path) -> None:
    env, port, _ = running_locker_broker
    out = tmp_path / "credentials.csv"
    started = time.monotonic()
    done = broker_cli("add-lockers", "--count", "200", "--prefix", "B", "--out", str(out),
                      "--reload", env=env)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    creds = read_credentials(out.read_text())
    assert sorted(creds) == sorted(f"B{n}" for n in range(1, 201))
    assert len(set(creds.values())) == 200

    # The registry holds them with Mosquitto's own hash parameters, not weaker ones.
    registry = Registry.load(Path(env["LOCKER_BROKER_REGISTRY"]))
    assert len(registry.lockers()) == 200
    assert {parse_hash(a.password_hash)[0] for a in registry.lockers()} == {DEFAULT_ITERATIONS}
    assert all(registry.verify(lk, pw) for lk, pw in creds.items())

    deadline = time.monotonic() + 2.0
    for locker in ("B1", "B77", "B200"):
        while probe_login("127.0.0.1", port, locker, creds[locker]) != 0:
            assert time.monotonic() < deadline, f"{locker} cannot log in 2 s after add-lockers"
            time.sleep(0.05)
    assert probe_login("127.0.0.1", port, "B7", creds["B1"]) in (4, 5)  # passwords are per account
    print(f"add-lockers 200 + reload: {took:.2f} s, logins {time.monotonic() - started:.2f} s "
          "after it started")


def test_a_file_of_ids_on_stdin_prints_csv_and_the_reload_hint(broker_env: dict[str, str]) -> None:
    ids = "# new site\nS-1\n\n  S-2  \nS-3\n"
    done = broker_cli("add-lockers", "--file", "-", env=broker_env, stdin=ids)
    assert done.returncode == 0, done.stderr
    creds = read_credentials(done.stdout)
    assert sorted(creds) == ["S-1", "S-2", "S-3"]
    assert "locker-broker reload" in done.stderr
    registry = Registry.load(Path(broker_env["LOCKER_BROKER_REGISTRY"]))
    assert all(registry.verify(lk, pw) for lk, pw in creds.items())


@pytest.mark.parametrize(("line", "why"), [
    ("bad id", "invalid locker id"),
    ("F-3", "repeats line 3"),
    ("OLD", "already exists"),
    ("console-x", "client ids"),
])
def test_one_bad_id_refuses_the_whole_batch(broker_env: dict[str, str], tmp_path: Path,
                                            line: str, why: str) -> None:
    assert broker_cli("add-locker", "OLD", env=broker_env).returncode == 0
    registry_path = Path(broker_env["LOCKER_BROKER_REGISTRY"])
    before = registry_path.read_bytes()
    ids = [f"F-{n}" for n in range(1, 60)]
    ids[36] = line  # line 37
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "credentials.csv"

    done = broker_cli("add-lockers", "--file", str(ids_file), "--out", str(out), env=broker_env)
    assert done.returncode == 2, done.stderr
    assert "line 37" in done.stderr and why in done.stderr, done.stderr
    assert registry_path.read_bytes() == before
    assert not out.exists()
    assert done.stdout == ""


def test_an_existing_credentials_file_is_never_overwritten(broker_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "credentials.csv"
    out.write_text("locker_id,password\nA,secret\n")
    done = broker_cli("add-lockers", "--count", "3", "--prefix", "A", "--out", str(out),
                      env=broker_env)
    assert done.returncode == 2 and "exists" in done.stderr, done.stderr
    assert out.read_text() == "locker_id,password\nA,secret\n"
    assert not Path(broker_env["LOCKER_BROKER_REGISTRY"]).exists()


def test_rotate_reissues_existing_passwords_in_the_batch(broker_env: dict[str, str]) -> None:
    first = read_credentials(broker_cli("add-lockers", "--count", "2", "--prefix", "R",
                                        env=broker_env).stdout)
    again = broker_cli("add-lockers", "--count", "3", "--prefix", "R", "--rotate", env=broker_env)
    assert again.returncode == 0, again.stderr
    second = read_credentials(again.stdout)
    registry = Registry.load(Path(broker_env["LOCKER_BROKER_REGISTRY"]))
    assert sorted(second) == ["R1", "R2", "R3"]
    assert not registry.verify("R1", first["R1"]) and registry.verify("R1", second["R1"])
    assert "new passwords for 2 existing ones" in again.stderr
