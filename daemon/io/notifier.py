"""The notifier port (SMS and e-mail to clients) and the locker's own adapters.

Messages carry confirmation codes and PINs, so no adapter logs a message's text, and failures are
results, not exceptions: the daemon decides whether to fall back or tell the client.

The HTTP SMS gateway and the SMTP server are the console's too: they live in `fleet_io`, with the
one retry rule (`fleet_io.delivery.Retrying`). Here: ``MqttRelayNotifier`` (hands the message to
the fleet link so the console sends it) and ``LogNotifier`` (demos only); ``CombinedNotifier``
routes SMS and e-mail to two different adapters.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fleet_io.delivery import Channel, DeliveryResult, EmailSender, Sender, SmsSender


class Notifier(Sender, Protocol):
    """Both channels; what the daemon's scenarios are given."""


class CombinedNotifier:
    """A ``Notifier`` built from one SMS adapter and one e-mail adapter."""

    def __init__(self, sms: SmsSender, email: EmailSender) -> None:
        self.sms = sms
        self.email = email

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return await self.sms.send_sms(phone, text, ref=ref)

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return await self.email.send_email(to, subject, text, ref=ref)


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

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return await self._relay({"channel": "sms", "to": phone, "text": text}, ref)

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return await self._relay({"channel": "email", "to": to, "subject": subject,
                                  "text": text}, ref)

    async def _relay(self, message: dict[str, Any], ref: str | None) -> DeliveryResult:
        channel: Channel = message["channel"]
        # The reference is the id: the console sends an id it has seen once only.
        message = {"id": ref or self.new_id(), **message}  # contract.messages.Notification
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

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        self.log(f"SMS to {phone}: {text}")
        return DeliveryResult(True, "sms", "logged")

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        self.log(f"E-mail to {to}: {subject}\n{text}")
        return DeliveryResult(True, "email", "logged")
