"""The `[notifier.http]` and `[notifier.smtp]` sections, the same on the locker and the console.

A locker sends its clients' SMS and e-mail itself, or relays them to the console, which sends
them with the same kind of provider: one definition keeps the two files' keys, and the way a
gateway's `body_template` is filled, from drifting.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.config_file import StrictSection

BodyEscape = Literal["json", "form", "none"]


def _escape(value: str, how: BodyEscape) -> str:
    if how == "json":
        return json.dumps(value, ensure_ascii=False)[1:-1]
    if how == "form":
        return urllib.parse.quote_plus(value)
    return value


def fill_template(template: str, values: Mapping[str, str], escape: BodyEscape) -> str:
    """Replace `{name}` placeholders only (a JSON body's own braces stay as they are)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", _escape(value, escape))
    return template


class HttpSmsSettings(StrictSection):
    """An SMS provider's HTTP API; any 2xx reply means accepted."""

    #: May hold {phone} and {text} (URL-encoded), as GET gateways want.
    url: str
    method: Literal["GET", "POST"] = "POST"
    #: The POST body; {phone} and {text} are escaped as body_escape says.
    body_template: str = ""
    body_escape: BodyEscape = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10, gt=0)
    #: The header that carries a message's own reference (its idempotency key), so a message
    #: sent again after a crash is not delivered twice; "" sends none. The reference is also
    #: {ref} in url and body_template, for a gateway that wants it there (a client id field).
    ref_header: str = "Idempotency-Key"
    #: The gateway's answer to a reference it accepted before: counted as accepted (the message
    #: went out the first time). None: the gateway has no such answer.
    duplicate_status: int | None = Field(409, ge=200, le=599)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("notifier.http.url: must start with http:// or https://")
        return url


class SmtpSettings(StrictSection):
    """An SMTP server: STARTTLS on 587 or implicit TLS on 465."""

    host: str
    sender: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    use_tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(15, gt=0)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.starttls and self.use_tls:
            raise ValueError("notifier.smtp: set starttls or use_tls, not both")
        return self


class NotifierSections(StrictSection):
    """The provider sections; each side adds its own `sms` and `email` channel choices."""

    sms: str = "none"
    email: str = "none"
    http: HttpSmsSettings | None = None
    smtp: SmtpSettings | None = None
    #: Tries of one message whose failure may pass (gateway 5xx, 408 or 429, unreachable, SMTP
    #: 4xx); the wait before the second try is `retry_s`, doubling after. The same rule on the
    #: locker (its own http and smtp channels) and on the console.
    attempts: int = Field(3, ge=1, le=10)
    retry_s: float = Field(2.0, gt=0, le=300)

    @model_validator(mode="after")
    def _adapters_configured(self) -> NotifierSections:
        if self.sms == "http" and self.http is None:
            raise ValueError('notifier.http: sms = "http" needs a [notifier.http] url')
        if self.email == "smtp" and self.smtp is None:
            raise ValueError('notifier.smtp: email = "smtp" needs a [notifier.smtp] section')
        return self
