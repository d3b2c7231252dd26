"""An SMS provider's HTTP API, as the locker and the console both send through it.

Any 2xx reply means accepted. Failures are results, never exceptions, and a result's detail names
the gateway's host only: never the text (it holds codes and PINs) and never the query (it may hold
an API key).

urllib's HTTP client is imported with the first message (about 1 MB a locker need not carry
until it sends).

A message's own reference (`ref`, stable across resends) goes out as the `ref_header` header
(an idempotency key) and as `{ref}` in the URL or body; the gateway's answer to a reference it
accepted before (`duplicate_status`, 409 by default) means "already accepted": the message went
out the first time, so it counts as accepted and is not sent twice.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping
from typing import Literal

from contract.notifier_settings import BodyEscape, HttpSmsSettings, fill_template
from fleet_io.delivery import DeliveryResult, http_status_may_pass


class HttpSmsGateway:
    """Blocking urllib in a thread, one request a message.

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
        ref_header: str = "Idempotency-Key",
        duplicate_status: int | None = 409,
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
        self.ref_header = ref_header
        self.duplicate_status = duplicate_status
        self.host = urllib.parse.urlsplit(url).netloc  # never the query: it may hold an API key

    @classmethod
    def of(cls, settings: HttpSmsSettings) -> HttpSmsGateway:
        """The gateway of a `[notifier.http]` section."""
        return cls(settings.url, method=settings.method, body_template=settings.body_template,
                   body_escape=settings.body_escape, headers=settings.headers,
                   timeout_s=settings.timeout_s, ref_header=settings.ref_header,
                   duplicate_status=settings.duplicate_status)

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return await asyncio.to_thread(self._send, phone, text, ref)

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return DeliveryResult(False, "email", "an SMS gateway does not send e-mail")

    def _send(self, phone: str, text: str, ref: str | None = None) -> DeliveryResult:
        import urllib.error
        import urllib.request

        values = {"phone": phone, "text": text, "ref": ref or ""}
        url = fill_template(self.url, values, "form")
        body = None
        if self.method == "POST":
            body = fill_template(self.body_template, values, self.body_escape).encode()
        headers = dict(self.headers)
        if ref and self.ref_header:
            headers[self.ref_header] = ref
        request = urllib.request.Request(url, data=body, method=self.method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return DeliveryResult(False, "sms", f"gateway {self.host} unreachable: {reason}",
                                  transient=True)
        if ref and status == self.duplicate_status:
            return DeliveryResult(True, "sms", f"already accepted by {self.host} ({status})",
                                  status)
        if not 200 <= status < 300:
            return DeliveryResult(False, "sms", f"gateway {self.host} answered {status}", status,
                                  transient=http_status_may_pass(status))
        return DeliveryResult(True, "sms", f"accepted by {self.host} ({status})", status)
