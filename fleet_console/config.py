"""The console's TOML configuration (`locker-console --config FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from contract.config_file import BrokerConnection, ConfigError, StrictSection, load_toml_model
from contract.notifier_settings import NotifierSections

__all__ = ["ConfigError", "ConsoleConfig", "ReplicaName", "load_console_config"]


class ConsoleMqtt(BrokerConnection):
    #: MQTT version: "5" (default) or "3.1.1" for brokers without MQTT 5 (the embedded one).
    protocol: Literal["5", "3.1.1"] = "5"


class Signing(StrictSection):
    #: PEM private key written by `locker-console keygen`.
    key_file: Path
    #: The name lockers know this key by (their `[trust] keys` table).
    key_id: str = Field(min_length=1)
    #: Lifetime of a remote command; a locker rejects it after that (docs/architecture.md: 30 s).
    command_ttl_s: float = Field(30, gt=0, le=3600)


class Database(StrictSection):
    #: SQLAlchemy URL. Three slashes are a path relative to the working directory (this default
    #: is ./var/console/console.db); four an absolute one: sqlite:////var/lib/console/console.db.
    url: str = "sqlite:///var/console/console.db"


class Notifier(NotifierSections):
    """How the console sends the SMS and e-mail lockers relay on `lockers/{id}/notify`."""

    #: http: the gateway of [notifier.http]; log: a line in the ingest's log (masked recipient,
    #: never the text; demos); none: not sent, recorded as no_channel.
    sms: Literal["none", "http", "log"] = "none"
    email: Literal["none", "smtp", "log"] = "none"


class ReplicaName:
    """An ingest replica's name: it goes into a client id (`ingest-NAME`) and the logs."""

    pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class IngestLimits(StrictSection):
    """What the ingest accepts from one locker (a hostile or broken one included)."""

    #: A larger payload is quarantined unread.
    max_payload_bytes: int = Field(65_536, ge=1024, le=16 * 1024 * 1024)
    #: Cells kept for a locker whose status declares none (an older lockerd).
    max_undeclared_cells: int = Field(512, ge=1, le=9999)
    #: Quarantine rows kept per locker and reason per minute; more are only counted.
    quarantine_keep_per_min: int = Field(100, ge=1, le=100_000)
    #: A locker above this many messages per second, on average over flood_window_s, raises
    #: a `flood` alarm.
    flood_rate_per_s: float = Field(50.0, gt=0)
    flood_window_s: float = Field(10.0, gt=0, le=3600)
    #: Lockers whose retained state the database lacks are asked on `resync`: checked every
    #: resync_check_s (0: never), at most resync_rate_per_s requests a second, a locker once
    #: it looked incomplete for resync_grace_s, and again every resync_retry_s while it stays so.
    resync_check_s: float = Field(5.0, ge=0, le=3600)
    resync_rate_per_s: float = Field(50.0, gt=0, le=100_000)
    resync_grace_s: float = Field(10.0, ge=0, le=3600)
    resync_retry_s: float = Field(30.0, gt=0, le=86_400)
    #: This ingest's name among several sharing one database (docs/architecture.md,
    #: "Ingest replicas"); unset: the only ingest. Each replica has its own name, client id
    #: (`ingest-NAME` unless --client-id) and broker account ([mqtt] username).
    replica: str | None = Field(None, pattern=ReplicaName.pattern)
    #: The replicas' shared subscription group ($share/GROUP/...), the same for all. On
    #: Mosquitto, make it a secret (docs/broker.md, "Ingest replicas").
    share_group: str = Field("ingest", pattern=ReplicaName.pattern)
    #: The ingest's heartbeat (its `ingest_replicas` row, the lockers' freshness) every this
    #: many seconds; an `ingest_lag` alarm when the stored events' p50 age stays above
    #: lag_alarm_s for lag_alarm_for_s (fleet_console/lag.py).
    beat_interval_s: float = Field(5.0, ge=0.05, le=300)
    lag_alarm_s: float = Field(60.0, gt=0)
    lag_alarm_for_s: float = Field(60.0, ge=0)


class ConsoleConfig(StrictSection):
    mqtt: ConsoleMqtt = Field(default_factory=ConsoleMqtt)
    signing: Signing | None = None
    database: Database = Field(default_factory=Database)
    notifier: Notifier = Field(default_factory=Notifier)
    ingest: IngestLimits = Field(default_factory=IngestLimits)


def load_console_config(path: str | Path) -> ConsoleConfig:
    return load_toml_model(path, ConsoleConfig)
