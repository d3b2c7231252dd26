"""The shared SMS and e-mail senders (fleet_io) against real servers: aiosmtpd for e-mail,
http.server for the SMS gateway; the locker and the console both send through them."""

from __future__ import annotations

import email
import email.policy
import json
import urllib.parse
from email.message import EmailMessage

import pytest

from contract.notifier_settings import fill_template
from fleet_io.sms_gateway import HttpSmsGateway
from fleet_io.smtp_email import SmtpEmail
from tests.fixtures.messaging import GatewayRecorder, SmtpCollector, free_port

TEXT_RU = "Код подтверждения: 123456. Никому не сообщайте."


# -- SMTP ---------------------------------------------------------------------------------------


async def test_smtp_email_reaches_a_real_server(smtp_server: SmtpCollector) -> None:
    mailer = SmtpEmail(
        "127.0.0.1", "locker@example.org", port=smtp_server.port, starttls=False, timeout_s=5
    )
    result = await mailer.send_email("client@example.com", "Ваш PIN для ячейки 12", TEXT_RU)
    assert result.ok and result.channel == "email", result
    [(sender, recipients, raw)] = smtp_server.messages
    assert sender == "locker@example.org" and recipients == ["client@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "client@example.com"
    assert message["Subject"] == "Ваш PIN для ячейки 12"
    assert message.get_content().strip() == TEXT_RU
    assert message.get_content_charset() == "utf-8"


async def test_smtp_server_down_is_a_failure_result() -> None:
    mailer = SmtpEmail(
        "127.0.0.1", "locker@example.org", port=free_port(), starttls=False, timeout_s=2
    )
    result = await mailer.send_email("client@example.com", "s", "t")
    assert not result.ok and "127.0.0.1" in result.detail
    assert not (await mailer.send_sms("+79001234567", "t")).ok


def test_smtp_refuses_both_tls_modes() -> None:
    with pytest.raises(ValueError, match="not both"):
        SmtpEmail("h", "a@b", starttls=True, use_tls=True)


# -- HTTP SMS gateway -------------------------------------------------------------------------


async def test_sms_gateway_get(gateway: GatewayRecorder) -> None:
    sms = HttpSmsGateway(f"{gateway.url}/send?key=secret&to={{phone}}&msg={{text}}", method="GET")
    result = await sms.send_sms("+79001234567", TEXT_RU)
    assert result.ok and result.status == 200
    assert "secret" not in result.detail  # the query may hold an API key
    [seen] = gateway.requests
    assert seen.method == "GET"
    assert seen.query == {"key": ["secret"], "to": ["+79001234567"], "msg": [TEXT_RU]}


async def test_sms_gateway_post_json_template(gateway: GatewayRecorder) -> None:
    sms = HttpSmsGateway(
        f"{gateway.url}/api/sms",
        method="POST",
        body_template='{"to": "{phone}", "message": "{text}", "sender": "LOCKER"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer t0ken"},
    )
    text = 'Code "42"\nline two'
    result = await sms.send_sms("+79001234567", text)
    assert result.ok
    [seen] = gateway.requests
    assert (seen.method, seen.path) == ("POST", "/api/sms")
    assert seen.headers["Authorization"] == "Bearer t0ken"
    assert json.loads(seen.body) == {"to": "+79001234567", "message": text, "sender": "LOCKER"}


async def test_sms_gateway_post_form_template(gateway: GatewayRecorder) -> None:
    sms = HttpSmsGateway(
        f"{gateway.url}/form",
        body_template="phone={phone}&text={text}",
        body_escape="form",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (await sms.send_sms("+79001234567", TEXT_RU)).ok
    form = urllib.parse.parse_qs(gateway.requests[0].body.decode())
    assert form == {"phone": ["+79001234567"], "text": [TEXT_RU]}


async def test_sms_gateway_500_is_a_failure(gateway: GatewayRecorder) -> None:
    gateway.status = 500
    result = await HttpSmsGateway(f"{gateway.url}/x", body_template="{text}").send_sms("+7900", "t")
    assert not result.ok and result.status == 500 and "500" in result.detail


async def test_sms_gateway_unreachable_and_bad_config() -> None:
    result = await HttpSmsGateway(f"http://127.0.0.1:{free_port()}/", timeout_s=2).send_sms(
        "+79001234567", "t"
    )
    assert not result.ok and result.status is None and "unreachable" in result.detail
    with pytest.raises(ValueError, match="GET or POST"):
        HttpSmsGateway("http://x/", method="PUT")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http"):
        HttpSmsGateway("ftp://x/")


def test_template_keeps_json_braces() -> None:
    assert fill_template('{"a": "{text}"}', {"text": 'x"y'}, "json") == '{"a": "x\\"y"}'


# -- a message's own reference (sent again after a crash) -----------------------------------------


async def test_a_reference_makes_a_resent_sms_one_message(gateway: GatewayRecorder) -> None:
    sms = HttpSmsGateway(f"{gateway.url}/send", body_template='{"ref": "{ref}", "text": "{text}"}')
    first = await sms.send_sms("+79001234567", "code 1", ref="parcel-abc")
    again = await sms.send_sms("+79001234567", "code 1", ref="parcel-abc")
    assert first.ok and again.ok and "already accepted" in again.detail, again
    assert [r.ref for r in gateway.requests] == ["parcel-abc", "parcel-abc"]
    assert gateway.requests[0].json()["ref"] == "parcel-abc"
    assert len(gateway.accepted) == 1
    # Without a reference a 409 is a refusal like any other.
    gateway.status = 409
    assert not (await sms.send_sms("+79001234567", "code 2")).ok


async def test_a_reference_is_the_emails_message_id(smtp_server: SmtpCollector) -> None:
    mailer = SmtpEmail("127.0.0.1", "locker@example.org", port=smtp_server.port,
                       starttls=False, timeout_s=5)
    for _ in range(2):
        assert (await mailer.send_email("c@example.com", "s", "t", ref="parcel-abc")).ok
    assert (await mailer.send_email("c@example.com", "s", "t")).ok
    ids = [email.message_from_bytes(m.content, policy=email.policy.default)["Message-ID"]
           for m in smtp_server.messages]
    assert ids[0] == ids[1] == "<parcel-abc@example.org>" and ids[2] != ids[0]
