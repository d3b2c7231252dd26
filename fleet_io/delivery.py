"""What became of one SMS or e-mail, which failures may pass, and one rule for trying again.

The locker (sending its clients' codes, PINs and receipts itself) and the console (sending what
lockers relay to it) use the same senders, so a provider's answer means the same on both: a
gateway's 5xx, 408 or 429, an unreachable server and an SMTP 4xx may pass (`transient`); any
other refusal is final. `RetryPolicy` is the one rule for trying a transient failure again:
`attempts` tries, waiting `retry_s` before the second and doubling after (the `[notifier]` keys
of both configurations).

`ref`: a sender may be given the message's own stable reference (the parcel outbox gives one per
notice and channel). A message sent again with the same `ref` is the same message: the SMS
gateway sends it as its idempotency key and takes "already accepted" as accepted, the SMTP
server gets it as the Message-ID, the console relay as the notification's id (the console sends
an id once). Without one, every call is a new message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from contract.notifier_settings import NotifierSections

Channel = Literal["sms", "email"]


@dataclass(frozen=True)
class DeliveryResult:
    """Whether the provider accepted the message; ``status`` is the HTTP/SMTP code when known.

    ``transient``: a failure another try may mend. ``detail`` never holds the message's text.
    """

    ok: bool
    channel: Channel
    detail: str = ""
    status: int | None = None
    transient: bool = False


class SmsSender(Protocol):
    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult: ...


class EmailSender(Protocol):
    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult: ...


class Sender(SmsSender, EmailSender, Protocol):
    """Both channels; a sender answers the channel it lacks with a plain failure."""


def http_status_may_pass(status: int) -> bool:
    """A gateway's error that another try may mend: server trouble, a timeout, too many requests."""
    return status >= 500 or status in (408, 429)


def smtp_code_may_pass(code: int) -> bool:
    """SMTP's own rule: 4xx is "try again later", 5xx is final."""
    return code < 500


@dataclass(frozen=True)
class RetryPolicy:
    """Tries of a transient failure, and the wait before the second (doubling after)."""

    attempts: int = 3
    retry_s: float = 2.0

    @classmethod
    def of(cls, settings: NotifierSections) -> RetryPolicy:
        return cls(settings.attempts, settings.retry_s)

    def wait_after(self, attempt: int, result: DeliveryResult) -> float | None:
        """Seconds to wait before another try after try `attempt` (1-based); None: that was it."""
        if result.ok or not result.transient or attempt >= self.attempts:
            return None
        return self.retry_s * 2 ** (attempt - 1)

    async def run(
        self,
        try_once: Callable[[], Awaitable[DeliveryResult]],
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> DeliveryResult:
        """Try until accepted, final or out of tries; the detail of a retried one says which try."""
        attempt = 1
        while True:
            result = await try_once()
            wait = self.wait_after(attempt, result)
            if wait is None:
                break
            await sleep(wait)
            attempt += 1
        if attempt > 1:
            result = replace(result, detail=f"{result.detail} (try {attempt} of {self.attempts})")
        return result


class Retrying:
    """A sender whose transient failures are tried again as `policy` says."""

    def __init__(self, sender: Sender, policy: RetryPolicy) -> None:
        self.sender = sender
        self.policy = policy

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return await self.policy.run(lambda: self.sender.send_sms(phone, text, ref=ref))

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return await self.policy.run(lambda: self.sender.send_email(to, subject, text, ref=ref))
