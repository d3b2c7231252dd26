"""The console's notifier: sends the SMS and e-mail that lockers relay on `lockers/{id}/notify`.

A locker without a provider of its own hands each client message (confirmation code, PIN,
receipt) to the console as a `contract.messages.Notification`. The texts hold secrets: nothing
here logs or returns a text, and recipients appear only masked (`mask_recipient`). Failures are
results (`Delivery`), never exceptions. The HTTP gateway and SMTP adapters, and which of their
failures may pass, are the locker's own (`fleet_io`); the ingest tries a transient failure again
as the shared `fleet_io.delivery.RetryPolicy` says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from contract.messages import Notification
from fleet_console.config import Notifier
from fleet_io.delivery import DeliveryResult, RetryPolicy, Sender
from fleet_io.sms_gateway import HttpSmsGateway
from fleet_io.smtp_email import SmtpEmail

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


class LogOnly:
    """Demos: a line in the ingest's log; unlike the locker's log adapter, never the text."""

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return self._log("sms", "SMS", phone, text)

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return self._log("email", "e-mail", to, text)

    def _log(self, channel: Literal["sms", "email"], name: str, to: str,
             text: str) -> DeliveryResult:
        log.info("%s to %s (%d characters, text withheld)", name, mask_recipient(to), len(text))
        return DeliveryResult(True, channel, "logged (demo channel: not delivered)")


class ConsoleNotifier:
    """Routes a Notification to the SMS or e-mail channel of the `[notifier]` configuration."""

    def __init__(self, cfg: Notifier | None = None) -> None:
        cfg = cfg or Notifier()
        #: Tries of a transient failure, and the wait before the second (doubling after).
        self.policy = RetryPolicy.of(cfg)
        self.attempts, self.retry_s = self.policy.attempts, self.policy.retry_s
        self.sms: Sender | None = (
            HttpSmsGateway.of(cfg.http) if cfg.sms == "http" and cfg.http
            else LogOnly() if cfg.sms == "log" else None
        )
        self.email: Sender | None = (
            SmtpEmail.of(cfg.smtp) if cfg.email == "smtp" and cfg.smtp
            else LogOnly() if cfg.email == "log" else None
        )

    async def deliver(self, n: Notification) -> Delivery:
        """One try; the ingest tries a transient failure again (`attempts`, `retry_s`)."""
        sender = self.sms if n.channel == "sms" else self.email
        if sender is None:
            return Delivery("no_channel", f"no {n.channel} channel configured ([notifier])")
        try:
            if n.channel == "sms":
                result = await sender.send_sms(n.to, n.text, ref=n.id)
            else:
                result = await sender.send_email(n.to, n.subject or "", n.text, ref=n.id)
            ok, detail, transient = result.ok, result.detail, result.transient
        except Exception as exc:  # an adapter's bug must not stop the ingest or leak the text
            ok, detail, transient = False, f"{n.channel} adapter error: {type(exc).__name__}", False
        return Delivery("sent" if ok else "failed", _scrub(detail, n), transient and not ok)


def _scrub(detail: str, n: Notification) -> str:
    """A server's reply may echo what it was sent: drop the text, mask the recipient."""
    detail = detail.replace(n.text, "[text]").replace(n.to, mask_recipient(n.to))
    return detail[:_DETAIL_MAX]
