"""The console's TOML configuration (`locker-console --config FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.config_file import ConfigError, load_toml_model

__all__ = ["ConfigError", "ConsoleConfig", "load_console_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleMqtt(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    prefix: str = "lockers"
    keepalive: int = Field(30, ge=5)
    tls: bool = False
    #: MQTT version: "5" (default) or "3.1.1" for brokers without MQTT 5 (the embedded one).
    protocol: Literal["5", "3.1.1"] = "5"


class Signing(_Strict):
    #: PEM private key written by `locker-console keygen`.
    key_file: Path
    #: The name lockers know this key by (their `[trust] keys` table).
    key_id: str = Field(min_length=1)
    #: Lifetime of a remote command; a locker rejects it after that (DESIGN.md: 30 s).
    command_ttl_s: float = Field(30, gt=0, le=3600)


class Database(_Strict):
    url: str = "sqlite:///var/console/console.db"


class ConsoleConfig(_Strict):
    mqtt: ConsoleMqtt = Field(default_factory=ConsoleMqtt)
    signing: Signing | None = None
    database: Database = Field(default_factory=Database)


def load_console_config(path: str | Path) -> ConsoleConfig:
    return load_toml_model(path, ConsoleConfig)
