"""The console's notifier: sends the SMS and e-mail that lockers relay on `lockers/{id}/notify`.

A locker without a provider of its own hands each client message (confirmation code, PIN,
receipt) to the console as a `contract.messages.Notification`. The texts hold secrets: nothing
here logs or returns a text, and recipients appear only masked (`mask_recipient`). Failures are
results (`Delivery`), never exceptions. The HTTP gateway and SMTP adapters follow the locker's
(`daemon/io/notifier.py`, which the console may not import) key for key.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, NamedTuple

import aiosmtplib

from contract.messages import Notification
from contract.notifier_settings import HttpSmsSettings, SmtpSettings, fill_template
from fleet_console.config import Notifier

log = logging.getLogger("fleet_console.notify")

Status = Literal["sent", "failed", "no_channel"]
_DETAIL_MAX = 300


@dataclass(frozen=True)
class Delivery:
    """What became of one notification; `detail` never holds its text or its full recipient."""

    status: Status
    detail: str
    #: A failure another try may mend (gateway 5xx or 429, timeout, SMTP 4xx, unreachable).
    transient: bool = False


class Attempt(NamedTuple):
    """One try of one sender."""

    ok: bool
    detail: str
    transient: bool = False


def mask_recipient(to: str) -> str:
    """`+79001234567` -> `+7900***4567`, `client@example.org` -> `c***@example.org`."""
    to = to.strip()
    local, at, domain = to.rpartition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    if len(to) >= 10:
        return f"{to[:5]}***{to[-4:]}"
    if len(to) >= 6:
        return f"{to[:2]}***{to[-2:]}"
    return "***"


class HttpSmsGateway:
    """An SMS provider's HTTP API; any 2xx reply means accepted. Blocking urllib in a thread."""

    def __init__(self, cfg: HttpSmsSettings) -> None:
        self.cfg = cfg
        self.host = urllib.parse.urlsplit(cfg.url).netloc  # never the query: it may hold a key

    async def send(self, to: str, subject: str, text: str) -> Attempt:
        return await asyncio.to_thread(self._send, to, text)

    def _send(self, phone: str, text: str) -> Attempt:
        values = {"phone": phone, "text": text}
        url = fill_template(self.cfg.url, values, "form")
        body = None
        if self.cfg.method == "POST":
            body = fill_template(self.cfg.body_template, values, self.cfg.body_escape).encode()
        request = urllib.request.Request(
            url, data=body, method=self.cfg.method, headers=self.cfg.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Attempt(False, f"gateway {self.host} unreachable: {reason}", transient=True)
        if not 200 <= status < 300:
            transient = status >= 500 or status in (408, 429)
            return Attempt(False, f"gateway {self.host} answered {status}", transient)
        return Attempt(True, f"accepted by {self.host} ({status})")


class SmtpEmail:
    """E-mail through an SMTP server (aiosmtplib): STARTTLS on 587 or implicit TLS on 465."""

    def __init__(self, cfg: SmtpSettings) -> None:
        self.cfg = cfg

    async def send(self, to: str, subject: str, text: str) -> Attempt:
        c = self.cfg
        message = EmailMessage()
        message["From"] = c.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=c.sender.rpartition("@")[2] or None)
        message.set_content(text, charset="utf-8")
        try:
            errors, reply = await aiosmtplib.send(
                message, hostname=c.host, port=c.port, username=c.username, password=c.password,
                start_tls=c.starttls, use_tls=c.use_tls, timeout=c.timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: for good
            return Attempt(False, f"SMTP {c.host}: {exc.code} {exc.message}", exc.code < 500)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Attempt(False, f"SMTP {c.host}: {exc}", transient=True)
        if to in errors:
            code = errors[to].code
            return Attempt(False, f"SMTP {c.host} refused the recipient: {code}", code < 500)
        return Attempt(True, f"SMTP {c.host}: {reply}")


class LogOnly:
    """Demos: a line in the ingest's log; unlike the locker's log adapter, never the text."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, to: str, subject: str, text: str) -> Attempt:
        log.info("%s to %s (%d characters, text withheld)", self.channel, mask_recipient(to),
                 len(text))
        return Attempt(True, "logged (demo channel: not delivered)")


class ConsoleNotifier:
    """Routes a Notification to the SMS or e-mail channel of the `[notifier]` configuration."""

    def __init__(self, cfg: Notifier | None = None) -> None:
        cfg = cfg or Notifier()
        #: Tries of a transient failure, and the wait before the second (doubling after).
        self.attempts, self.retry_s = cfg.attempts, cfg.retry_s
        self.sms = (
            HttpSmsGateway(cfg.http) if cfg.sms == "http" and cfg.http
            else LogOnly("SMS") if cfg.sms == "log" else None
        )
        self.email = (
            SmtpEmail(cfg.smtp) if cfg.email == "smtp" and cfg.smtp
            else LogOnly("e-mail") if cfg.email == "log" else None
        )

    async def deliver(self, n: Notification) -> Delivery:
        """One try; the ingest tries a transient failure again (`attempts`, `retry_s`)."""
        sender = self.sms if n.channel == "sms" else self.email
        if sender is None:
            return Delivery("no_channel", f"no {n.channel} channel configured ([notifier])")
        try:
            ok, detail, transient = await sender.send(n.to, n.subject or "", n.text)
        except Exception as exc:  # an adapter's bug must not stop the ingest or leak the text
            ok, detail, transient = False, f"{n.channel} adapter error: {type(exc).__name__}", False
        return Delivery("sent" if ok else "failed", _scrub(detail, n), transient and not ok)


def _scrub(detail: str, n: Notification) -> str:
    """A server's reply may echo what it was sent: drop the text, mask the recipient."""
    detail = detail.replace(n.text, "[text]").replace(n.to, mask_recipient(n.to))
    return detail[:_DETAIL_MAX]
