"""The notifier port (SMS and e-mail to clients) and its adapters.

Messages carry confirmation codes and PINs, so no adapter logs a message's text, and failures are
results, not exceptions: the daemon decides whether to retry, fall back or tell the client.

Adapters: ``HttpSmsGateway`` (any HTTP SMS provider, configured by URL, method and body
template), ``SmtpEmail`` (aiosmtplib), ``MqttRelayNotifier`` (hands the message to the fleet link
so the console sends it) and ``LogNotifier`` (demos only). ``CombinedNotifier`` routes SMS and
e-mail to two different adapters.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal, Protocol

import aiosmtplib

from contract.notifier_settings import BodyEscape, fill_template

Channel = Literal["sms", "email"]


@dataclass(frozen=True)
class DeliveryResult:
    """Whether the provider accepted the message; ``status`` is the HTTP/SMTP code when known."""

    ok: bool
    channel: Channel
    detail: str = ""
    status: int | None = None


class SmsSender(Protocol):
    async def send_sms(self, phone: str, text: str) -> DeliveryResult: ...


class EmailSender(Protocol):
    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult: ...


class Notifier(SmsSender, EmailSender, Protocol):
    """Both channels; what the daemon's scenarios are given."""


class CombinedNotifier:
    """A ``Notifier`` built from one SMS adapter and one e-mail adapter."""

    def __init__(self, sms: SmsSender, email: EmailSender) -> None:
        self.sms = sms
        self.email = email

    async def send_sms(self, phone: str, text: str) -> DeliveryResult:
        return await self.sms.send_sms(phone, text)

    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult:
        return await self.email.send_email(to, subject, text)


# -- HTTP SMS gateway -------------------------------------------------------------------------


class HttpSmsGateway:
    """An SMS provider's HTTP API: any 2xx reply means accepted, anything else is a failure.

    ``url`` may hold ``{phone}`` and ``{text}`` (URL-encoded on substitution), as GET gateways
    want; ``body_template`` holds them for POST, escaped as ``body_escape`` says ("json" inside a
    JSON string, "form" for application/x-www-form-urlencoded, "none" as is).
    """

    def __init__(
        self,
        url: str,
        *,
        method: Literal["GET", "POST"] = "POST",
        body_template: str = "",
        body_escape: BodyEscape = "json",
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if method not in ("GET", "POST"):
            raise ValueError(f"SMS gateway method must be GET or POST, got {method!r}")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"SMS gateway URL must start with http:// or https://: {url!r}")
        self.url = url
        self.method = method
        self.body_template = body_template
        self.body_escape = body_escape
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s

    async def send_sms(self, phone: str, text: str) -> DeliveryResult:
        return await asyncio.to_thread(self._send, phone, text)

    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult:
        return DeliveryResult(False, "email", "an SMS gateway does not send e-mail")

    def _send(self, phone: str, text: str) -> DeliveryResult:
        values = {"phone": phone, "text": text}
        url = fill_template(self.url, values, "form")
        body = None
        if self.method == "POST":
            body = fill_template(self.body_template, values, self.body_escape).encode()
        request = urllib.request.Request(url, data=body, method=self.method, headers=self.headers)
        host = urllib.parse.urlsplit(self.url).netloc  # never the query: it may hold an API key
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            return DeliveryResult(False, "sms", f"gateway {host} answered {exc.code}", exc.code)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return DeliveryResult(False, "sms", f"gateway {host} unreachable: {reason}")
        if not 200 <= status < 300:
            return DeliveryResult(False, "sms", f"gateway {host} answered {status}", status)
        return DeliveryResult(True, "sms", f"accepted by {host}", status)


# -- SMTP e-mail ------------------------------------------------------------------------------


class SmtpEmail:
    """E-mail through an SMTP server (aiosmtplib): STARTTLS on 587 or implicit TLS on 465."""

    def __init__(
        self,
        host: str,
        sender: str,
        *,
        port: int = 587,
        starttls: bool = True,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
        validate_certs: bool = True,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose STARTTLS or implicit TLS for SMTP, not both")
        self.host = host
        self.sender = sender
        self.port = port
        self.starttls = starttls
        self.use_tls = use_tls
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.validate_certs = validate_certs

    async def send_sms(self, phone: str, text: str) -> DeliveryResult:
        return DeliveryResult(False, "sms", "an SMTP server does not send SMS")

    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(text, charset="utf-8")
        try:
            errors, reply = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                use_tls=self.use_tls,
                timeout=self.timeout_s,
                validate_certs=self.validate_certs,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return DeliveryResult(False, "email", f"SMTP {self.host}: {exc.message}", exc.code)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return DeliveryResult(False, "email", f"SMTP {self.host}: {exc}")
        if to in errors:
            refused = errors[to]
            return DeliveryResult(False, "email", f"refused: {refused.message}", refused.code)
        return DeliveryResult(True, "email", reply)


# -- relay to the console over MQTT -----------------------------------------------------------

Publish = Callable[[dict[str, Any]], "Awaitable[None] | None"]


class MqttRelayNotifier:
    """Hands each message to ``publish`` (wired by the daemon to its fleet link's outbox).

    The console then sends it with its own gateway; useful when the locker has no SMS provider of
    its own. ``ok`` means queued for the console, not delivered. The dict carries the text, codes
    included, so it must only travel on the locker's own authenticated, TLS-protected link.
    """

    def __init__(self, publish: Publish, new_id: Callable[[], str] | None = None) -> None:
        self.publish = publish
        self.new_id = new_id or (lambda: uuid.uuid4().hex)

    async def send_sms(self, phone: str, text: str) -> DeliveryResult:
        return await self._relay({"channel": "sms", "to": phone, "text": text})

    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult:
        return await self._relay({"channel": "email", "to": to, "subject": subject, "text": text})

    async def _relay(self, message: dict[str, Any]) -> DeliveryResult:
        channel: Channel = message["channel"]
        message = {"id": self.new_id(), **message}  # contract.messages.Notification
        try:
            pending = self.publish(message)
            if pending is not None:
                await pending
        except Exception as exc:  # the link's failure is this delivery's failure, not a crash
            return DeliveryResult(False, channel, f"relay failed: {exc!r}")
        return DeliveryResult(True, channel, f"relayed as {message['id']}")


# -- log (demos only) ---------------------------------------------------------------------------


class LogNotifier:
    """Writes each message, text included, to ``log``: for demos and the simulator only.

    The text holds confirmation codes and PINs. Never configure this adapter in production, and
    never wire ``log`` to the system journal, a shared log file or anything shipped off the
    machine: whoever reads that log could open the client's cell.
    """

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    async def send_sms(self, phone: str, text: str) -> DeliveryResult:
        self.log(f"SMS to {phone}: {text}")
        return DeliveryResult(True, "sms", "logged")

    async def send_email(self, to: str, subject: str, text: str) -> DeliveryResult:
        self.log(f"E-mail to {to}: {subject}\n{text}")
        return DeliveryResult(True, "email", "logged")
