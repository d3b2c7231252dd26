"""Notifications relayed by lockers (`lockers/{id}/notify`), sent by `locker-console ingest`.

Real parts only: the session's Mosquitto, the ingest as a CLI process, an HTTP SMS gateway
(http.server in a thread), an SMTP server (aiosmtpd) and the console's SQLite file. Lockers are
plain MQTT clients logged in with their own broker accounts. Every test also checks that the
ingest's log never shows a message's text or a full recipient.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from contract.messages import Notification
from contract.topics import Topics
from fleet_console.config import ConfigError, Notifier, load_console_config
from fleet_console.db.engine import make_engine
from fleet_console.db.models import NotificationRow
from fleet_console.notify import ConsoleNotifier, mask_recipient
from tests.fixtures.messaging import GatewayRecorder, SmtpCollector, free_port
from tests.fixtures.mqtt_broker import MqttBroker, MqttTestClient, unique_id

CONSOLE = str(Path(sys.executable).with_name("locker-console"))
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "console.example.toml"
TOPICS = Topics()
PHONE = "+79001234567"
MAIL = "client@example.org"
#: Quotes, a newline, an ampersand and Cyrillic: escaping must hold in the URL and the body.
SMS_TEXT = 'Код 918273: "никому" не сообщайте & PIN 4455\nячейка 3'
MAIL_TEXT = "Чек 42: ячейка 3, 2 ч, 190,00 ₽. PIN 665544"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


# -- the ingest process and a locker ----------------------------------------------------------
class IngestProcess:
    """`locker-console ingest` with its stderr (the log) collected line by line."""

    def __init__(self, config: Path, client_id: str) -> None:
        self.client_id = client_id
        self.proc = subprocess.Popen(
            [CONSOLE, "--config", str(config), "ingest", "--client-id", client_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._subscribed = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 20
        while not self._subscribed.wait(0.05):
            assert self.proc.poll() is None, f"ingest exited {self.proc.returncode}: {self.log}"
            assert time.monotonic() < deadline, f"ingest never subscribed: {self.log}"

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "subscribed" in line:
                self._subscribed.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


@dataclass
class Console:
    ingest: IngestProcess
    url: str

    def rows(self, locker: str) -> list[dict[str, Any]]:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                table = NotificationRow.__table__
                return [dict(r._mapping) for r in conn.execute(
                    select(table).where(table.c.locker == locker).order_by(table.c.id))]
        finally:
            engine.dispose()

    def dump(self) -> str:
        """Everything the (SQLite) database holds, as SQL text."""
        with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
            return "\n".join(conn.iterdump())


@pytest.fixture
def start_console(mqtt_broker: MqttBroker, tmp_path: Path) -> Iterator[Callable[..., Console]]:
    """Start an ingest whose configuration ends with the given `[notifier]` TOML."""
    started: list[IngestProcess] = []

    def start(notifier_toml: str, url: str | None = None, client_id: str | None = None) -> Console:
        mqtt_broker.ensure_running()
        user, password = mqtt_broker.console_credentials
        url = url or f"sqlite:///{tmp_path}/console-{len(started)}.db"
        config = tmp_path / f"console-{len(started)}.toml"
        config.write_text(
            f'[mqtt]\nhost = "{mqtt_broker.host}"\nport = {mqtt_broker.console_port}\n'
            f'username = "{user}"\npassword = "{password}"\n'
            f'[database]\nurl = "{url}"\n{notifier_toml}'
        )
        started.append(IngestProcess(config, client_id or unique_id("ingest")))
        return Console(started[-1], url)

    yield start
    for ingest in started:
        ingest.stop()
        # Drop the persistent session, so the broker stops queueing for it.
        with mqtt_broker.console_client(client_id=ingest.client_id, clean_session=True):
            pass


@pytest.fixture
def locker(mqtt_broker: MqttBroker) -> Iterator[tuple[str, MqttTestClient]]:
    locker_id = unique_id()
    creds = mqtt_broker.add_locker(locker_id)
    with mqtt_broker.client(*creds) as client:
        yield locker_id, client


def relay(client: MqttTestClient, locker_id: str, payload: Notification | bytes) -> None:
    data = payload.to_payload() if isinstance(payload, Notification) else payload
    client.publish(TOPICS.notify(locker_id), data, qos=1)


def sms(text: str = SMS_TEXT, id: str | None = None, to: str = PHONE) -> Notification:
    return Notification(id=id or uuid.uuid4().hex, channel="sms", to=to, text=text)


def notifier_toml(gateway_url: str, smtp_port: int) -> str:
    return (
        '[notifier]\nsms = "http"\nemail = "smtp"\nretry_s = 0.05\n'
        f'[notifier.http]\nurl = "{gateway_url}/send?key=API-KEY"\n'
        """body_template = '{"to": "{phone}", "text": "{text}"}'\n"""
        'headers = { "Content-Type" = "application/json" }\ntimeout_s = 5\n'
        f'[notifier.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        'sender = "lockers@example.net"\nstarttls = false\ntimeout_s = 5\n'
    )


def assert_no_secrets(console: Console, *secrets: str) -> None:
    dump, log = console.dump(), console.ingest.log
    for secret in (PHONE, MAIL, *secrets):
        assert secret not in dump, f"{secret!r} stored in the database"
        assert secret not in log, f"{secret!r} written to the ingest's log"


# -- through the ingest -----------------------------------------------------------------------
def test_sms_and_email_are_sent_and_recorded_without_text(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    text_sms = sms()
    receipt = Notification(id="r-42", channel="email", to=MAIL, subject="Чек 42", text=MAIL_TEXT)
    relay(client, locker_id, text_sms)
    relay(client, locker_id, receipt)

    [seen] = wait_until(lambda: gateway.requests, "the SMS at the gateway")
    assert (seen.method, seen.query) == ("POST", {"key": ["API-KEY"]})
    assert json.loads(seen.body) == {"to": PHONE, "text": SMS_TEXT}
    [(sender, rcpts, raw)] = wait_until(lambda: smtp_server.messages,
                                        "the e-mail at the SMTP server")
    assert (sender, rcpts) == ("lockers@example.net", [MAIL])
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert (message["To"], message["Subject"]) == (MAIL, "Чек 42")
    assert message.get_content().strip() == MAIL_TEXT

    rows = wait_until(lambda: len(console.rows(locker_id)) == 2 and console.rows(locker_id),
                      "both rows in the database")
    by_id = {r["notification_id"]: r for r in rows}
    assert {k: by_id[text_sms.id][k] for k in ("channel", "recipient", "status")} == {
        "channel": "sms", "recipient": "+7900***4567", "status": "sent"}
    assert {k: by_id["r-42"][k] for k in ("channel", "recipient", "status")} == {
        "channel": "email", "recipient": "c***@example.org", "status": "sent"}
    assert all(r["at"] > 0 and r["detail"] for r in rows)
    assert "API-KEY" not in by_id[text_sms.id]["detail"]  # the query may hold a key
    assert set(rows[0]) == {"id", "locker", "notification_id", "channel", "recipient", "status",
                            "detail", "at"}  # no column for the text
    assert_no_secrets(console, SMS_TEXT, MAIL_TEXT, "918273", "665544")


def test_a_repeated_id_is_sent_once(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
    mqtt_broker: MqttBroker,
) -> None:
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    first = sms(id="dup-1")
    relay(client, locker_id, first)  # two deliveries back to back: in flight together
    relay(client, locker_id, first)
    wait_until(lambda: console.ingest.count("seen before") == 1, "the duplicate dropped")
    relay(client, locker_id, first)  # and once more after it was recorded
    wait_until(lambda: console.ingest.count("seen before") == 2, "the late duplicate dropped")
    # The same id from another locker is another message.
    other_id = unique_id()
    with mqtt_broker.client(*mqtt_broker.add_locker(other_id)) as other:
        relay(other, other_id, sms(id="dup-1", to="+79009876543"))
        wait_until(lambda: console.rows(other_id), "the other locker's row")
    assert [json.loads(s.body)["to"] for s in gateway.requests] == [PHONE, "+79009876543"]
    assert [r["notification_id"] for r in console.rows(locker_id)] == ["dup-1"]
    assert [r["status"] for r in console.rows(other_id)] == ["sent"]
    assert_no_secrets(console, SMS_TEXT, "+79009876543")


def test_malformed_payloads_are_dropped_and_the_ingest_goes_on(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    good = {"id": "n-1", "channel": "sms", "to": PHONE, "text": SMS_TEXT}
    bad = [
        b"not json",
        b"\xff\xfe",
        json.dumps({**good, "channel": "fax"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "text"}).encode(),
        json.dumps({**good, "text": 918273645}).encode(),  # a code sent as a number
        json.dumps({**good, "pin": "PIN-77331"}).encode(),  # an unknown field with a secret
        json.dumps({**good, "to": ""}).encode(),
    ]
    for payload in bad:
        relay(client, locker_id, payload)
    relay(client, locker_id, sms(id="after"))

    wait_until(lambda: gateway.requests, "the good SMS after the bad ones")
    wait_until(lambda: console.rows(locker_id), "its row")
    assert console.ingest.proc.poll() is None
    skipped = [ln for ln in console.ingest.lines if "malformed" in ln and locker_id in ln]
    assert len(skipped) == len(bad), skipped
    assert any("channel" in ln for ln in skipped) and any("text" in ln for ln in skipped)
    assert any("not JSON" in ln for ln in skipped)
    assert [r["notification_id"] for r in console.rows(locker_id)] == ["after"]
    assert len(gateway.requests) == 1
    assert_no_secrets(console, SMS_TEXT, "918273645", "PIN-77331")


def test_without_a_channel_the_row_says_no_channel(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder,
) -> None:
    console = start_console("")  # no [notifier] at all
    locker_id, client = locker
    relay(client, locker_id, sms(id="s-1"))
    relay(client, locker_id, Notification(id="e-1", channel="email", to=MAIL, text=MAIL_TEXT))
    rows = wait_until(lambda: len(console.rows(locker_id)) == 2 and console.rows(locker_id),
                      "two rows")
    assert [(r["notification_id"], r["status"], r["recipient"]) for r in rows] == [
        ("s-1", "no_channel", "+7900***4567"), ("e-1", "no_channel", "c***@example.org")]
    assert all("[notifier]" in r["detail"] for r in rows)
    assert not gateway.requests
    assert_no_secrets(console, SMS_TEXT, MAIL_TEXT)


def test_a_gateway_failure_is_recorded_as_failed_after_its_tries(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    gateway.status = 503
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    relay(client, locker_id, sms(id="f-1"))
    [row] = wait_until(lambda: console.rows(locker_id), "the row")
    assert row["status"] == "failed" and row["detail"].endswith("answered 503 (try 3 of 3)")
    assert len(gateway.requests) == 3  # [notifier] attempts = 3 by default
    assert console.ingest.count("try 2 of 3 failed") == 1
    assert_no_secrets(console, SMS_TEXT)


def test_a_passing_gateway_failure_is_tried_again_until_sent(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    gateway.statuses = [503, 429]  # down, then busy, then it takes the message
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    relay(client, locker_id, sms(id="p-1"))
    [row] = wait_until(lambda: console.rows(locker_id), "the row")
    assert row["status"] == "sent" and row["detail"].endswith("(try 3 of 3)")
    assert [json.loads(r.body) for r in gateway.requests] == [{"to": PHONE, "text": SMS_TEXT}] * 3


def test_a_stop_while_waiting_to_try_again_leaves_the_message_to_the_next_run(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    gateway.statuses = [503]
    toml = notifier_toml(gateway.url, smtp_server.port).replace("retry_s = 0.05", "retry_s = 60")
    console = start_console(toml)
    locker_id, client = locker
    relay(client, locker_id, sms(id="s-1"))
    wait_until(lambda: console.ingest.count("try 1 of 3 failed"), "the first try failed")
    began = time.monotonic()
    console.ingest.stop()
    assert time.monotonic() - began < 10  # neither the 60 s wait nor the drain's 15 s
    assert console.rows(locker_id) == []  # not recorded, so not acknowledged either

    again = start_console(toml, console.url, client_id=console.ingest.client_id)
    [row] = wait_until(lambda: again.rows(locker_id), "the row after the restart")
    assert row["status"] == "sent" and len(gateway.requests) == 2


def test_an_smtp_server_saying_try_later_gets_the_mail_again_and_a_refusal_does_not(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    smtp_server.replies = ["451 4.3.0 try again later", "554 5.7.1 rejected for policy"]
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    relay(client, locker_id, Notification(id="m-1", channel="email", to=MAIL, text=MAIL_TEXT))
    [row] = wait_until(lambda: console.rows(locker_id), "the row")
    # 451 is tried again; the 554 that answers the second try is final.
    assert row["status"] == "failed" and "554" in row["detail"] and "(try 2 of 3)" in row["detail"]
    assert smtp_server.refused == 2 and smtp_server.messages == []

    relay(client, locker_id, Notification(id="m-2", channel="email", to=MAIL, text=MAIL_TEXT))
    rows = wait_until(lambda: console.rows(locker_id)[1:], "the second row")
    assert rows[0]["status"] == "sent" and len(smtp_server.messages) == 1
    assert_no_secrets(console, MAIL_TEXT)


def test_a_refused_message_is_not_tried_again(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
) -> None:
    gateway.status = 400  # the provider will never take this one: trying again only spends
    console = start_console(notifier_toml(gateway.url, smtp_server.port))
    locker_id, client = locker
    relay(client, locker_id, sms(id="r-1"))
    [row] = wait_until(lambda: console.rows(locker_id), "the row")
    host = gateway.url.removeprefix("http://")
    assert (row["status"], row["detail"]) == ("failed", f"gateway {host} answered 400")
    assert len(gateway.requests) == 1


def test_postgresql_records_and_dedupes_too(
    start_console: Callable[..., Console], locker: tuple[str, MqttTestClient],
    gateway: GatewayRecorder, smtp_server: SmtpCollector,
    postgres_url: str,
) -> None:
    console = start_console(notifier_toml(gateway.url, smtp_server.port), postgres_url)
    locker_id, client = locker
    long_id = "x" * 300  # ids have no length limit in the contract: no VARCHAR to overflow
    for note in (sms(id=long_id), sms(id=long_id)):
        relay(client, locker_id, note)
    wait_until(lambda: console.ingest.count("seen before") == 1, "the duplicate dropped")
    [row] = console.rows(locker_id)
    assert (row["notification_id"], row["status"], row["recipient"]) == (
        long_id, "sent", "+7900***4567")
    assert len(gateway.requests) == 1
    assert not any(SMS_TEXT in str(v) or PHONE in str(v) for v in row.values())


# -- the adapters and the configuration -------------------------------------------------------
@pytest.mark.parametrize(
    ("to", "masked"),
    [(PHONE, "+7900***4567"), ("+4915112345678", "+4915***5678"), ("12345678", "12***78"),
     ("112", "***"), (MAIL, "c***@example.org"), ("a.b@c@example.org", "a***@example.org")],
)
def test_mask_recipient(to: str, masked: str) -> None:
    assert mask_recipient(to) == masked


async def test_gateway_get_and_form_bodies(gateway: GatewayRecorder) -> None:
    url = gateway.url
    get = ConsoleNotifier(Notifier.model_validate({
        "sms": "http", "http": {"url": f"{url}/s?to={{phone}}&msg={{text}}", "method": "GET"}}))
    assert (await get.deliver(sms())).status == "sent"
    form = ConsoleNotifier(Notifier.model_validate({
        "sms": "http", "http": {"url": f"{url}/f", "body_template": "to={phone}&msg={text}",
                                "body_escape": "form"}}))
    assert (await form.deliver(sms())).status == "sent"
    got, posted = gateway.requests
    assert got.method == "GET" and got.query == {"to": [PHONE], "msg": [SMS_TEXT]}
    assert urllib.parse.parse_qs(posted.body.decode()) == {"to": [PHONE], "msg": [SMS_TEXT]}


async def test_unreachable_servers_are_failures_not_exceptions() -> None:
    port = free_port()
    notifier = ConsoleNotifier(Notifier.model_validate({
        "sms": "http", "email": "smtp",
        "http": {"url": f"http://127.0.0.1:{port}/", "timeout_s": 2},
        "smtp": {"host": "127.0.0.1", "port": port, "sender": "a@b.c", "starttls": False,
                 "timeout_s": 2}}))
    for note in (sms(), Notification(id="e", channel="email", to=MAIL, text=MAIL_TEXT)):
        delivery = await notifier.deliver(note)
        assert delivery.status == "failed" and "127.0.0.1" in delivery.detail
        assert note.text not in delivery.detail and note.to not in delivery.detail


def test_example_notifier_keys_parse_when_uncommented(tmp_path: Path) -> None:
    assert load_console_config(EXAMPLE).notifier == Notifier()
    key = re.compile(r"^# (\[notifier\.\w+\]|[a-z_]+ = )")
    text = "\n".join(line[2:] if key.match(line) else line
                     for line in EXAMPLE.read_text().splitlines())
    text = text.replace('sms = "none"', 'sms = "http"').replace('email = "none"', 'email = "smtp"')
    path = tmp_path / "console.toml"
    path.write_text(text)
    cfg = load_console_config(path).notifier
    assert (cfg.sms, cfg.email) == ("http", "smtp")
    assert cfg.http is not None and cfg.http.body_escape == "json" and cfg.http.headers
    assert cfg.smtp is not None and (cfg.smtp.port, cfg.smtp.starttls) == (587, True)
    assert (cfg.attempts, cfg.retry_s) == (3, 2.0)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[notifier]\nsms = "http"\n', 'notifier.http: sms = "http" needs a [notifier.http] url'),
        ('[notifier]\nemail = "smtp"\n', "notifier.smtp: email = \"smtp\" needs"),
        ('[notifier]\nsms = "mqtt"\n', "notifier.sms:"),
        ('[notifier.http]\nurl = "ftp://x/"\n', "notifier.http.url: must start with http"),
        ('[notifier.smtp]\nhost = "h"\nsender = "s"\nuse_tls = true\n',
         "set starttls or use_tls, not both"),
        ('[notifier.http]\nurl = "http://x/"\nmethd = "GET"\n', "notifier.http.methd: unknown"),
        ('[notifier]\nattempts = 0\n', "notifier.attempts:"),
    ],
)
def test_bad_notifier_configuration_names_the_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "console.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_console_config(path)
    assert expected in str(info.value)
    out = subprocess.run([CONSOLE, "--config", str(path), "ingest"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and expected in out.stderr
