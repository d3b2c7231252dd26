"""`locker-console recipients` and `couriers` (issue 12) as real processes, against a real
Mosquitto and a real SQLite database.

A scripted locker verifies each signed configuration with the console's public key and
confirms it (config/applied with the hash of the body, inflated when it came as `body_z`);
the tests read back what was published: the retained signed configuration.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from sqlalchemy import select

from contract.messages import SignedConfig
from contract.pin_hash import verify_pin
from contract.signing import config_hash, verify_config
from fleet_console.cli import main
from fleet_console.db.engine import make_engine
from fleet_console.db.models import RecipientRow, StaffRow
from tests.fixtures.console_cli import CONSOLE, KEY_ID, TOPICS, config, signing_key
from tests.fixtures.mqtt_broker import LockerCredentials, MqttBroker

__all__ = ["config", "signing_key"]

BASE = {"profile": "storage", "tariff": {"steps": [[60, 100]]}}
CSV = ("id;ФИО;Отдел;Номер;Телефон;Почта\n"
       "r1;Иванов Иван;Бухгалтерия;101;+7 900 123-45-67;\n"
       "r2;John Smith;IT;7;;john@example.com\n")


def console(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`locker-console --config CONFIG ARGS` in this process (a process start costs seconds
    on a loaded machine); test_import_runs_as_a_process runs the real executable once."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(config), *args])
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


class Locker:
    """Applies every authentic configuration, as lockerd would, and keeps what it got."""

    def __init__(self, broker: MqttBroker, creds: LockerCredentials, public_key: str) -> None:
        self.locker = creds.locker_id
        self.keys = {KEY_ID: public_key}
        self.got: list[SignedConfig] = []
        self.client = broker.client(creds.username, creds.password)
        self.client.paho.on_message = self._on_message
        self.client.subscribe(TOPICS.config(self.locker))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if not msg.payload or verify_config(msg.payload, trusted_keys=self.keys,
                                            locker_id=self.locker) is not None:
            return
        cfg = SignedConfig.from_payload(msg.payload)
        self.got.append(cfg)
        applied = {"version": cfg.version, "hash": config_hash(cfg.content)}
        client.publish(TOPICS.config_applied(self.locker), json.dumps(applied), qos=1,
                       retain=True)

    def retained(self, broker: MqttBroker) -> tuple[dict[str, Any], SignedConfig]:
        """The signed configuration the broker keeps for the locker, verified."""
        with broker.console_client() as c:
            c.subscribe(TOPICS.config(self.locker))
            msg = c.expect(TOPICS.config(self.locker))
        assert verify_config(msg.payload, trusted_keys=self.keys, locker_id=self.locker) is None
        return json.loads(msg.payload), SignedConfig.from_payload(msg.payload)

    def close(self, broker: MqttBroker) -> None:
        self.client.close()
        with broker.console_client() as c:
            for topic in (TOPICS.config(self.locker), TOPICS.config_applied(self.locker)):
                c.publish(topic, b"", retain=True)


@pytest.fixture
def locker(mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
           signing_key: tuple[Path, str]) -> Any:
    made = Locker(mqtt_broker, locker_credentials, signing_key[1])
    yield made
    made.close(mqtt_broker)


def _base(config: Path, locker: Locker, tmp_path: Path) -> None:
    body = tmp_path / "profile.json"
    body.write_text(json.dumps(BASE))
    out = console(config, "publish-config", "--locker", locker.locker, str(body),
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout


def _rows(tmp_path: Path, model: type) -> list[Any]:
    engine = make_engine(f"sqlite:///{tmp_path}/console.db")
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(model)).all())
    finally:
        engine.dispose()


def test_import_publishes_the_list_and_keeps_the_other_sections(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    _base(config, locker, tmp_path)
    file = tmp_path / "list.csv"
    file.write_bytes(b"\xef\xbb\xbf" + CSV.encode())
    out = console(config, "recipients", "import", "--locker", locker.locker, str(file),
                  "--timeout", "5", "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout)
    assert report["applied"] and report["recipients"] == 2
    assert report["published"]["status"] == "applied" and report["published"]["version"] == 2
    raw, signed = locker.retained(mqtt_broker)
    assert "body" in raw  # small: plain JSON, as every lockerd reads
    assert signed.content["storage"] == BASE
    assert signed.content["parcels"] == {"staff": [], "recipients": [
        {"id": "r1", "name": "Иванов Иван", "department": "Бухгалтерия", "number": "101",
         "phone": "+79001234567"},
        {"id": "r2", "name": "John Smith", "department": "IT", "number": "7",
         "email": "john@example.com"}]}
    listed = console(config, "recipients", "list", "--locker", locker.locker)
    assert "+79*****4567" in listed.stdout and "+79001234567" not in listed.stdout
    assert "2 recipients" in listed.stdout


def test_a_file_with_bad_rows_changes_nothing_and_names_each_line(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    _base(config, locker, tmp_path)
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    assert console(config, "recipients", "import", "--locker", locker.locker, str(good),
                   "--timeout", "5").returncode == 0
    before = locker.retained(mqtt_broker)[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,phone\nr1,Иванов,+79001234567\nr2,Петров,8-900\nr2,Сидоров,"
                   "+79001234568\n")
    out = console(config, "recipients", "import", "--locker", locker.locker, str(bad))
    assert out.returncode == 1, out.stderr + out.stdout
    assert "nothing applied" in out.stdout
    assert "line 3, column phone:" in out.stdout and "line 4, column id: duplicate" in out.stdout
    as_json = console(config, "recipients", "import", "--locker", locker.locker, str(bad),
                      "--json")
    assert as_json.returncode == 1
    assert [(e["line"], e["column"]) for e in json.loads(as_json.stdout)["errors"]] == [
        (3, "phone"), (4, "id")]
    assert sorted(r.id for r in _rows(tmp_path, RecipientRow)) == ["r1", "r2"]
    assert {r.name for r in _rows(tmp_path, RecipientRow)} == {"Иванов Иван", "John Smith"}
    assert locker.retained(mqtt_broker)[0] == before  # nothing published


def test_dry_run_and_merge(config: Path, locker: Locker, tmp_path: Path,
                           mqtt_broker: MqttBroker) -> None:
    _base(config, locker, tmp_path)
    file = tmp_path / "list.csv"
    file.write_text(CSV)
    out = console(config, "recipients", "import", "--locker", locker.locker, str(file),
                  "--dry-run")
    assert out.returncode == 0 and "2 recipients, all valid" in out.stdout
    assert not (tmp_path / "console.db").exists() or not _rows(tmp_path, RecipientRow)
    assert console(config, "recipients", "import", "--locker", locker.locker, str(file),
                   "--timeout", "5").returncode == 0
    more = tmp_path / "more.csv"
    more.write_text("id,name,email\nr3,Анна,anna@example.com\nr1,Иванов И. И.,i@example.com\n")
    out = console(config, "recipients", "import", "--locker", locker.locker, str(more),
                  "--merge", "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    names = {r["id"]: r["name"] for r in
             locker.retained(mqtt_broker)[1].content["parcels"]["recipients"]}
    assert names == {"r1": "Иванов И. И.", "r2": "John Smith", "r3": "Анна"}


def test_a_locker_without_a_published_configuration_is_refused_plainly(
    config: Path, locker: Locker, tmp_path: Path
) -> None:
    file = tmp_path / "list.csv"
    file.write_text(CSV)
    out = console(config, "recipients", "import", "--locker", locker.locker, str(file))
    assert out.returncode == 2, out.stderr + out.stdout
    assert "publish its storage profile first" in out.stderr
    assert locker.got == []


def test_a_large_list_travels_compressed_under_the_packet_limit(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    _base(config, locker, tmp_path)
    lines = ["id,name,department,number,phone"] + [
        f"r{i},Фамилия{i} Имя,Отдел {i % 40},{1000 + i},+7900{i:07d}" for i in range(2000)]
    file = tmp_path / "big.csv"
    file.write_text("\n".join(lines))
    out = console(config, "recipients", "import", "--locker", locker.locker, str(file),
                  "--timeout", "10")
    assert out.returncode == 0, out.stderr + out.stdout
    raw, signed = locker.retained(mqtt_broker)
    assert "body_z" in raw and len(json.dumps(raw)) < 64 * 1024
    assert len(json.dumps(signed.content)) > 64 * 1024
    assert len(signed.content["parcels"]["recipients"]) == 2000
    assert signed.content["storage"] == BASE


def test_ten_thousand_recipients_and_500_logins_pass_the_brokers_generated_limit(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    """The directory the issue sizes (10,000 recipients, 500 staff logins: 307 KiB signed and
    compressed) through the session's Mosquitto, configured by locker-broker's defaults."""
    import base64
    import secrets

    from bench.recipient_names import recipients
    from fleet_console.db import directory
    from fleet_console.db.engine import open_database

    _base(config, locker, tmp_path)
    db = open_database(f"sqlite:///{tmp_path}/console.db")
    try:
        with db.transaction() as s:
            for i in range(500):  # random salts and hashes, as scrypt's: they do not compress
                salt, digest = (base64.urlsafe_b64encode(secrets.token_bytes(n)).rstrip(b"=")
                                .decode() for n in (16, 32))
                directory.add_staff(s, locker.locker, staff_id=f"s{i}", name=f"Courier {i}",
                                    role="courier", code=str(100_000 + i),
                                    pin_hash=f"scrypt$16384$8$1${salt}${digest}", now_ms=0)
    finally:
        db.engine.dispose()
    people = recipients(10_000)
    lines = ["id,name,department,number,phone,email,language"] + [
        ",".join(v or "" for v in (r.id, r.name, r.department, r.number, r.phone, r.email,
                                   r.language)) for r in people]
    file = tmp_path / "ten-thousand.csv"
    file.write_text("\n".join(lines))
    out = console(config, "recipients", "import", "--locker", locker.locker, str(file),
                  "--timeout", "20")
    assert out.returncode == 0, out.stderr + out.stdout
    raw, signed = locker.retained(mqtt_broker)
    size = len(json.dumps(raw))
    assert "body_z" in raw and 300 * 1024 < size < 512 * 1024, size
    assert len(signed.content["parcels"]["recipients"]) == 10_000
    assert len(signed.content["parcels"]["staff"]) == 500
    assert locker.got[-1].version == signed.version  # the locker had it, whole


def _add(config: Path, locker: str, *args: str, pin: str = "4821\n"
         ) -> subprocess.CompletedProcess[str]:
    return console(config, "couriers", "add", "--locker", locker, "--pin-stdin", "--timeout",
                   "5", *args, stdin=pin)


def test_couriers_add_list_disable_store_only_pin_hashes(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    _base(config, locker, tmp_path)
    out = _add(config, locker.locker, "--id", "c1", "--name", "Курьер Один", "--code", "123456")
    assert out.returncode == 0, out.stderr + out.stdout
    out = _add(config, locker.locker, "--id", "op1", "--name", "Оператор", "--role",
               "operator", "--code", "777777", pin="90210\n")
    assert out.returncode == 0, out.stderr + out.stdout
    taken = _add(config, locker.locker, "--id", "c2", "--name", "Другой", "--code", "123456")
    assert taken.returncode == 2 and "login code 123456 is taken" in taken.stderr
    assert _add(config, locker.locker, "--id", "c3", "--name", "X", "--code", "1234",
                pin="12\n").returncode == 2  # a PIN is 4 to 8 digits
    rows = {r.id: r for r in _rows(tmp_path, StaffRow)}
    assert set(rows) == {"c1", "op1"}
    assert verify_pin("4821", rows["c1"].pin_hash) and not verify_pin("4822", rows["c1"].pin_hash)
    assert b"4821" not in (tmp_path / "console.db").read_bytes().replace(
        rows["c1"].pin_hash.encode(), b"")

    out = console(config, "couriers", "disable", "--locker", locker.locker, "--id", "c1",
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    listed = json.loads(console(config, "couriers", "list", "--json").stdout)
    assert [(r["id"], r["role"], r["disabled"]) for r in listed] == [
        ("c1", "courier", True), ("op1", "operator", False)]
    assert "pin_hash" not in listed[0]
    staff = locker.retained(mqtt_broker)[1].content["parcels"]["staff"]
    assert [(s["id"], s["code"], s["disabled"]) for s in staff] == [
        ("c1", "123456", True), ("op1", "777777", False)]
    assert verify_pin("90210", staff[1]["pin_hash"])
    assert console(config, "couriers", "disable", "--locker", locker.locker, "--id", "nobody",
                   "--no-publish").returncode == 2


def test_import_runs_as_a_process_and_the_pin_is_read_from_stdin(
    config: Path, locker: Locker, tmp_path: Path
) -> None:
    _base(config, locker, tmp_path)
    file = tmp_path / "list.csv"
    file.write_text(CSV)
    out = subprocess.run([CONSOLE, "--config", str(config), "recipients", "import", "--locker",
                          locker.locker, str(file), "--timeout", "5"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "stored: " in out.stdout and "applied: " in out.stdout
    out = subprocess.run([CONSOLE, "--config", str(config), "couriers", "add", "--locker",
                          locker.locker, "--id", "c9", "--name", "Курьер", "--code", "5555",
                          "--pin-stdin", "--no-publish"],
                         input="2468\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "2468" not in out.stdout + out.stderr


def test_publish_config_without_parcels_warns_and_recipients_publish_restores(
    config: Path, locker: Locker, tmp_path: Path, mqtt_broker: MqttBroker
) -> None:
    _base(config, locker, tmp_path)
    file = tmp_path / "list.csv"
    file.write_text(CSV)
    assert console(config, "recipients", "import", "--locker", locker.locker, str(file),
                   "--timeout", "5").returncode == 0
    profile = tmp_path / "profile2.json"
    profile.write_text(json.dumps({**BASE, "tariff": {"steps": [[60, 90]]}}))
    out = console(config, "publish-config", "--locker", locker.locker, str(profile),
                  "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "drops its 2 recipients and 0 staff logins" in out.stderr
    assert "parcels" not in locker.retained(mqtt_broker)[1].content
    out = console(config, "recipients", "publish", "--locker", locker.locker, "--timeout", "5")
    assert out.returncode == 0, out.stderr + out.stdout
    content = locker.retained(mqtt_broker)[1].content
    assert content["storage"]["tariff"] == {"steps": [[60, 90]]}  # the new profile kept
    assert len(content["parcels"]["recipients"]) == 2
