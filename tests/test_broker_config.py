"""The fleet registry, generated Mosquitto files, the `locker-broker` CLI, the embedded broker."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker import files as files_mod
from broker.embedded import EMBEDDED_NOTICE, EmbeddedBroker, access_allowed, filter_within
from broker.fleet import FleetBroker
from broker.mosquitto_conf import BrokerSettings, write_config
from broker.passwords import hash_password, parse_hash, verify_password
from broker.registry import (
    AccountExistsError,
    InvalidNameError,
    Registry,
    RegistryError,
    UnknownAccountError,
)
from broker.runner import MosquittoProcess, find_mosquitto, free_port, probe_login, wait_for_port
from tests.fixtures.mqtt_broker import MqttRefusedError, MqttTestClient

LOCKER_BROKER = str(Path(sys.executable).with_name("locker-broker"))

# Made by `mosquitto_passwd -b -c passwd alice secret` (Mosquitto 2.0.11).
KNOWN_LINE = (
    "alice:$7$101$SttQt2b/aYpERzPP$Nr3HwYZiIdGILj7OujwZPbBxFhlOuoZe3kbJlXOfDyOVEoNqMXyHWWWa3X1m"
    "GtTDRpLFlGl8E4HcRmtSx8TkRQ=="
)


# -- password hashes ----------------------------------------------------------------------------


def test_hash_reproduces_a_mosquitto_passwd_hash() -> None:
    stored = KNOWN_LINE.split(":", 1)[1]
    _, salt, _ = parse_hash(stored)
    assert hash_password("secret", salt=salt, iterations=101) == stored
    assert verify_password("secret", stored)
    assert not verify_password("Secret", stored)


def test_hash_format_and_fresh_salt() -> None:
    h1, h2 = hash_password("pw"), hash_password("pw")
    assert h1 != h2  # salted
    parts = h1.split("$")
    assert parts[:3] == ["", "7", "101"]
    assert len(base64.b64decode(parts[3])) == 12
    assert len(base64.b64decode(parts[4])) == 64
    assert verify_password("pw", h1) and verify_password("pw", h2)


@pytest.mark.parametrize("bad", ["", "pw", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!$AAAA"])
def test_malformed_hashes_never_match(bad: str) -> None:
    assert not verify_password("pw", bad)
    with pytest.raises(ValueError):
        parse_hash(bad)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd absent")
def test_our_verify_accepts_mosquitto_passwd_output(tmp_path: Path) -> None:
    pw_file = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pw_file), "bob", "correct horse"], check=True
    )
    stored = pw_file.read_text().strip().split(":", 1)[1]
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)


# -- registry -----------------------------------------------------------------------------------


def test_add_duplicate_rotate_and_remove(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.json")
    pw = reg.add_locker("L-001")
    assert reg.verify("L-001", pw)
    with pytest.raises(AccountExistsError, match="--rotate"):
        reg.add_locker("L-001")
    created = reg.accounts["L-001"].created_at

    pw2 = reg.add_locker("L-001", rotate=True)
    assert pw2 != pw
    assert reg.verify("L-001", pw2) and not reg.verify("L-001", pw)
    assert reg.accounts["L-001"].created_at == created

    with pytest.raises(AccountExistsError, match="already a locker"):
        reg.add_console("L-001", rotate=True)
    reg.add_console("ops")
    assert [a.username for a in reg.lockers()] == ["L-001"]
    assert [a.username for a in reg.consoles()] == ["ops"]
    reg.remove("ops")
    with pytest.raises(UnknownAccountError):
        reg.remove("ops")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "lock\u00e9", "x" * 65, "a\nb"])
def test_invalid_names_rejected(tmp_path: Path, bad: str) -> None:
    reg = Registry(tmp_path / "registry.json")
    with pytest.raises(InvalidNameError):
        reg.add_locker(bad)
    assert reg.accounts == {}


def test_saved_registry_round_trips_without_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "var" / "registry.json"
    reg = Registry(path)
    pw_locker, pw_console = reg.add_locker("L.1_a-b"), reg.add_console("ops")
    reg.save()
    text = path.read_text()
    assert pw_locker not in text and pw_console not in text
    assert path.stat().st_mode & 0o777 == 0o600

    again = Registry.load(path)
    assert again.accounts == reg.accounts
    assert again.verify("L.1_a-b", pw_locker) and again.verify("ops", pw_console)

    out = write_config(again, BrokerSettings(data_dir=tmp_path / "data"), tmp_path / "conf")
    for generated in (out.conf, out.passwd, out.console_passwd, out.acl):
        content = generated.read_text()
        assert pw_locker not in content and pw_console not in content
    assert out.passwd.stat().st_mode & 0o777 == 0o600
    assert out.console_passwd.stat().st_mode & 0o777 == 0o600
    # One password file per listener: lockers' and consoles' accounts never share one.
    users = dict(line.split(":", 1) for line in out.passwd.read_text().splitlines())
    consoles = dict(line.split(":", 1) for line in out.console_passwd.read_text().splitlines())
    assert set(users) == {"L.1_a-b"} and set(consoles) == {"ops"}
    assert verify_password(pw_locker, users["L.1_a-b"])
    assert verify_password(pw_console, consoles["ops"])


def test_missing_registry_is_empty_and_broken_one_is_a_clear_error(tmp_path: Path) -> None:
    assert Registry.load(tmp_path / "none.json").accounts == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        Registry.load(bad)
    bad.write_text('{"format": 1, "accounts": {"L1": {"role": "locker", "password_hash": "x"}}}')
    with pytest.raises(RegistryError, match=r"accounts\.L1\.password_hash"):
        Registry.load(bad)
    bad.write_text('{"format": 1, "accounts": {"a/b": {"role": "locker"}}}')
    with pytest.raises(RegistryError, match="invalid username"):
        Registry.load(bad)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.json"
    reg = Registry(path)
    reg.add_locker("L1")
    reg.save()
    before = path.read_bytes()

    reg.add_locker("L2")

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(files_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        reg.save()
    assert path.read_bytes() == before  # the old registry, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.json"]  # no temp left


def test_edit_saves_on_success_only(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    with Registry.edit(path) as reg:
        reg.add_locker("L1")
    with pytest.raises(AccountExistsError), Registry.edit(path) as reg:
        reg.add_locker("L2")
        reg.add_locker("L1")
    assert set(Registry.load(path).accounts) == {"L1"}


def test_mosquitto_conf_has_the_required_settings(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.json")
    settings = BrokerSettings(port=18830, bind="0.0.0.0", data_dir=tmp_path / "data")
    conf = write_config(reg, settings, tmp_path / "conf").conf.read_text().splitlines()
    for line in ("listener 18830 0.0.0.0", "allow_anonymous false", "persistence true",
                 "set_tcp_nodelay true", "per_listener_settings true", "autosave_interval 5",
                 "listener 18831 0.0.0.0", "use_username_as_clientid true",
                 "max_packet_size 524288",
                 f"persistence_location {(tmp_path / 'data').resolve()}/"):
        assert line in conf
    assert any(line.startswith("max_queued_messages ") for line in conf)


def test_acl_lets_a_locker_write_only_its_own_subtree(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.json")
    reg.add_locker("L1")
    reg.add_console("ops")
    acl = write_config(reg, BrokerSettings(data_dir=tmp_path / "data"), tmp_path / "conf").acl
    lines = acl.read_text().splitlines()
    writes = {ln for ln in lines if ln.startswith("pattern write ")}
    assert writes == {
        f"pattern write lockers/%u/{t}"
        for t in ("status", "cells/+", "events", "cmd/result", "config/applied", "notify",
                  "events/gone")
    }
    reads = {ln for ln in lines if ln.startswith("pattern read ")}
    assert reads == {
        f"pattern read lockers/%u/{t}" for t in ("cmd", "config", "events/ack", "delivered",
                                                 "events/resend", "resync")
    }
    assert "topic readwrite lockers/#" in lines


# -- the CLI ------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOCKER_BROKER, *args], capture_output=True, text=True, timeout=30,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def password_from(output: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith("password = "))
    return line.split('"')[1]


def test_cli_add_locker_duplicate_rotate_and_list(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    first = run_cli("--registry", str(reg), "add-locker", "L-7")
    assert first.returncode == 0, first.stderr
    assert "[mqtt]" in first.stdout and 'username = "L-7"' in first.stdout
    pw = password_from(first.stdout)
    assert pw not in reg.read_text()
    assert Registry.load(reg).verify("L-7", pw)

    dup = run_cli("--registry", str(reg), "add-locker", "L-7")
    assert dup.returncode == 2
    assert "already exists" in dup.stderr and "--rotate" in dup.stderr
    assert Registry.load(reg).verify("L-7", pw)  # unchanged

    rot = run_cli("add-locker", "L-7", "--rotate", env={"LOCKER_BROKER_REGISTRY": str(reg)})
    assert rot.returncode == 0, rot.stderr
    assert Registry.load(reg).verify("L-7", password_from(rot.stdout))

    bad = run_cli("--registry", str(reg), "add-locker", "no/slash")
    assert bad.returncode == 2 and "invalid locker id" in bad.stderr

    assert run_cli("--registry", str(reg), "add-console", "ops").returncode == 0
    listing = run_cli("list", "--registry", str(reg))
    assert listing.returncode == 0
    assert "L-7" in listing.stdout and "ops" in listing.stdout and pw not in listing.stdout


def test_cli_default_registry_path(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOCKER_BROKER_REGISTRY"}
    done = subprocess.run([LOCKER_BROKER, "add-locker", "L1"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "broker" / "registry.json").is_file()


def test_cli_config_is_accepted_by_real_mosquitto(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.fail("Mosquitto is not installed: run `make test`, which installs it")
    reg = tmp_path / "registry.json"
    pw = password_from(run_cli("--registry", str(reg), "add-locker", "L-9").stdout)
    port = free_port()
    out = tmp_path / "conf"
    done = run_cli("--registry", str(reg), "config", "--out", str(out), "--port", str(port),
                   "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    with MosquittoProcess(out / "mosquitto.conf", port=port) as mosq:
        assert probe_login("127.0.0.1", port, "L-9", pw) == 0
        assert probe_login("127.0.0.1", port, "L-9", pw + "x") in (4, 5)
        assert mosq.running
    assert (tmp_path / "data" / "mosquitto.db").is_file()  # persistence saved on stop


def test_cli_config_sizes_the_queues_for_the_fleet(tmp_path: Path) -> None:
    """Every locker's connect burst (18 retained + 100 events) fits the ingest's queue at once;
    without --fleet-size the registry's lockers count, and today's limits are the floor."""
    reg = tmp_path / "registry.json"
    run_cli("--registry", str(reg), "add-locker", "L-1")

    def limits(*extra: str) -> dict[str, int]:
        done = run_cli("--registry", str(reg), "config", "--out", str(tmp_path / "conf"),
                       "--data-dir", str(tmp_path / "data"), *extra)
        assert done.returncode == 0, done.stderr
        conf = (tmp_path / "conf" / "mosquitto.conf").read_text().splitlines()
        return {ln.split()[0]: int(ln.split()[1]) for ln in conf
                if ln.startswith(("max_queued_messages ", "max_queued_bytes "))}

    assert limits() == {"max_queued_messages": 500_000, "max_queued_bytes": 64 * 1024 * 1024}
    assert limits("--fleet-size", "10000") == {"max_queued_messages": 1_180_000,
                                               "max_queued_bytes": 1_180_000 * 256}
    assert limits("--fleet-size", "10000", "--max-queued-messages", "2000000")[
        "max_queued_messages"] == 2_000_000


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; got {''.join(seen)!r}")


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "mosquitto"])
def test_cli_run_serves_and_stops_on_sigterm(tmp_path: Path, embedded: bool) -> None:
    if not embedded and find_mosquitto() is None:
        pytest.fail("Mosquitto is not installed: run `make test`, which installs it")
    reg = tmp_path / "registry.json"
    pw = password_from(run_cli("--registry", str(reg), "add-locker", "L-3").stdout)
    port = free_port()
    args = [LOCKER_BROKER, "--registry", str(reg), "run", "--port", str(port),
            "--data-dir", str(tmp_path / "data")] + (["--embedded"] if embedded else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _wait_line(proc, "listening" if embedded else "Starting Mosquitto")
        if embedded:
            assert "running the embedded amqtt broker — for demos only" in out
        assert wait_for_port("127.0.0.1", port, 10)
        assert probe_login("127.0.0.1", port, "L-3", pw) == 0
        assert probe_login("127.0.0.1", port, "L-3", "wrong") in (4, 5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- the embedded broker ------------------------------------------------------------------------


def test_filter_rules() -> None:
    assert filter_within("lockers/A/cmd", "lockers/A/cmd")
    assert filter_within("lockers/A/cells/3", "lockers/A/cells/#")
    assert filter_within("lockers/A/cells", "lockers/A/cells/#")
    assert not filter_within("lockers/A/cmd/result", "lockers/A/cmd")
    assert not filter_within("lockers/+/cmd", "lockers/A/cmd")
    assert not filter_within("lockers/#", "lockers/A/#")
    assert filter_within("lockers/+/cmd", "lockers/#")
    assert access_allowed("locker", "A", "lockers/A/cmd", write=False)
    assert not access_allowed("locker", "A", "lockers/A/cmd", write=True)
    assert not access_allowed("locker", "A", "lockers/B/cmd", write=False)
    assert access_allowed("locker", "A", "lockers/A/events", write=True)
    assert access_allowed("locker", "A", "lockers/A/notify", write=True)
    assert not access_allowed("locker", "A", "lockers/B/notify", write=True)
    assert not access_allowed("locker", "A", "lockers/A/notify", write=False)
    assert access_allowed("console", "ops", "lockers/+/notify", write=False)
    assert access_allowed("console", "ops", "lockers/B/cmd", write=True)
    assert not access_allowed("console", "ops", "other/x", write=True)
    assert not access_allowed(None, None, "lockers/A/cmd", write=False)


def test_embedded_broker_round_trip_with_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.json")
    pw_a, pw_b, pw_ops = reg.add_locker("A"), reg.add_locker("B"), reg.add_console("ops")
    reg.save()
    port = free_port()
    with EmbeddedBroker(port=port, registry_path=reg.path) as broker:
        assert broker.enforces_access and broker.notice == EMBEDDED_NOTICE
        with pytest.raises(MqttRefusedError):
            MqttTestClient("127.0.0.1", port, "A", pw_b)
        with (
            MqttTestClient("127.0.0.1", port, "A", pw_a) as a,
            MqttTestClient("127.0.0.1", port, "B", pw_b) as b,
            MqttTestClient("127.0.0.1", port, "ops", pw_ops) as ops,
        ):
            a.subscribe("lockers/B/cmd")
            b.subscribe("lockers/B/cmd")
            ops.subscribe("lockers/+/events")
            ops.publish("lockers/B/cmd", b"open")
            assert b.expect().payload == b"open"
            a.publish("lockers/B/events", b"forged")
            a.publish("lockers/A/events", b"genuine")
            assert ops.expect().payload == b"genuine"
            a.assert_silent(0.3)
            ops.assert_silent(0.1)

        # Accounts added while it runs can log in (the registry is reread).
        with Registry.edit(reg.path) as live:
            pw_c = live.add_locker("C")
        assert probe_login("127.0.0.1", port, "C", pw_c) == 0


def test_open_embedded_broker_round_trip() -> None:
    port = free_port()
    with (
        EmbeddedBroker(port=port) as broker,
        MqttTestClient("127.0.0.1", port, None, None) as sub,
        MqttTestClient("127.0.0.1", port, None, None) as pub,
    ):
        assert not broker.enforces_access and "no passwords or ACLs" in broker.notice
        assert broker.notice.startswith("Mosquitto is not installed: running the embedded")
        sub.subscribe("lockers/x/status")
        pub.publish("lockers/x/status", b"up")
        assert sub.expect().payload == b"up"
    assert wait_for_port("127.0.0.1", port, 0.2) is False  # stopped


def test_fleet_broker_embedded_fallback_adds_accounts_live_and_restarts(tmp_path: Path) -> None:
    fleet = FleetBroker(tmp_path / "registry.json", tmp_path / "data", embedded=True)
    assert fleet.kind == "embedded" and fleet.notice is not None
    with fleet:
        pw = fleet.add_locker("L1")
        assert probe_login(fleet.host, fleet.port, "L1", pw) == 0
        assert probe_login(fleet.host, fleet.port, "L1", "nope") in (4, 5)
        fleet.restart()
        assert fleet.running
        assert probe_login(fleet.host, fleet.port, "L1", pw) == 0
    assert not fleet.running
