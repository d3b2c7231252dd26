"""The console's TOML configuration (`locker-console --config FILE`)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.config_file import BrokerConnection, ConfigError, StrictSection, load_toml_model

__all__ = ["ConfigError", "ConsoleConfig", "load_console_config"]


class ConsoleMqtt(BrokerConnection):
    #: MQTT version: "5" (default) or "3.1.1" for brokers without MQTT 5 (the embedded one).
    protocol: Literal["5", "3.1.1"] = "5"


class Signing(StrictSection):
    #: PEM private key written by `locker-console keygen`.
    key_file: Path
    #: The name lockers know this key by (their `[trust] keys` table).
    key_id: str = Field(min_length=1)
    #: Lifetime of a remote command; a locker rejects it after that (DESIGN.md: 30 s).
    command_ttl_s: float = Field(30, gt=0, le=3600)


class Database(StrictSection):
    url: str = "sqlite:///var/console/console.db"


class HttpSms(StrictSection):
    """An SMS provider's HTTP API (the same keys as the locker's [notifier.http])."""

    #: May hold {phone} and {text} (URL-encoded), as GET gateways want.
    url: str
    method: Literal["GET", "POST"] = "POST"
    #: The POST body; {phone} and {text} are escaped as body_escape says.
    body_template: str = ""
    body_escape: Literal["json", "form", "none"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("notifier.http.url: must start with http:// or https://")
        return url


class Smtp(StrictSection):
    """An SMTP server (the same keys as the locker's [notifier.smtp])."""

    host: str
    sender: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    use_tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(15, gt=0)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Smtp:
        if self.starttls and self.use_tls:
            raise ValueError("notifier.smtp: set starttls or use_tls, not both")
        return self


class Notifier(StrictSection):
    """How the console sends the SMS and e-mail lockers relay on `lockers/{id}/notify`."""

    #: http: the gateway of [notifier.http]; log: a line in the ingest's log (masked recipient,
    #: never the text; demos); none: not sent, recorded as no_channel.
    sms: Literal["none", "http", "log"] = "none"
    email: Literal["none", "smtp", "log"] = "none"
    http: HttpSms | None = None
    smtp: Smtp | None = None

    @model_validator(mode="after")
    def _adapters_configured(self) -> Notifier:
        if self.sms == "http" and self.http is None:
            raise ValueError('notifier.http: sms = "http" needs a [notifier.http] url')
        if self.email == "smtp" and self.smtp is None:
            raise ValueError('notifier.smtp: email = "smtp" needs a [notifier.smtp] section')
        return self


class ConsoleConfig(StrictSection):
    mqtt: ConsoleMqtt = Field(default_factory=ConsoleMqtt)
    signing: Signing | None = None
    database: Database = Field(default_factory=Database)
    notifier: Notifier = Field(default_factory=Notifier)


def load_console_config(path: str | Path) -> ConsoleConfig:
    return load_toml_model(path, ConsoleConfig)
