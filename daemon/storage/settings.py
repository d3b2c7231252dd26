"""Configuration sections of the storage-locker business: kiosk, payment, printer, notifier.

Part of the locker's TOML file (daemon/config.py embeds them); every key has a default so a
locker without a screen, terminal or printer needs none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from contract.config_file import StrictSection
from contract.notifier_settings import NotifierSections


class KioskSettings(StrictSection):
    """The local HTTP API the touch screen talks to (never exposed beyond the locker)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Digits of a rental's PIN.
    pin_digits: int = Field(6, ge=4, le=10)
    #: Wrong PINs in a row that lock a cell's PIN entry, and for how long.
    pin_attempts: int = Field(5, ge=1)
    pin_lockout_s: float = Field(300, gt=0)
    #: Wrong PINs (any cell) within slow_window_s after which every PIN answer is delayed by
    #: slow_step_ms per further failure, up to slow_max_ms.
    slow_after_failures: int = Field(10, ge=1)
    slow_window_s: float = Field(600, gt=0)
    slow_step_ms: int = Field(1000, ge=0)
    slow_max_ms: int = Field(10_000, ge=0)
    #: An unfinished rental on the screen (no payment yet) is dropped after this.
    draft_ttl_s: float = Field(600, gt=0)
    #: Country code assumed for a phone number typed without "+" (digits, e.g. "7").
    default_country_code: str | None = Field(None, pattern=r"^\d{1,3}$")
    #: A request body larger than this is refused with 413 (the screen sends a few hundred).
    max_body_bytes: int = Field(8192, ge=1024, le=1_048_576)
    #: Kiosk connections open at once; one more is closed as soon as it is accepted. Lowered at
    #: start if the descriptor limit would not leave enough to the boards, store and fleet link.
    max_connections: int = Field(64, ge=1, le=4096)
    #: A request's headers must arrive within this of the connection opening or the request
    #: starting, its body within body_timeout_s; an idle kept-alive connection is closed after
    #: idle_timeout_s.
    header_timeout_s: float = Field(5, gt=0, le=300)
    body_timeout_s: float = Field(10, gt=0, le=300)
    idle_timeout_s: float = Field(5, gt=0, le=300)


class PaymentSettings(StrictSection):
    """The card terminal. `simulator` stands in for a bank's terminal (tests, demos)."""

    adapter: Literal["none", "simulator"] = "none"
    #: Simulator only: its durable record of charges (default <data_dir>/payment-sim.json).
    journal: Path | None = None
    #: Simulator only: a Unix socket taking switches (approve/decline/timeout/offline ...).
    control_socket: Path | None = None
    #: How often an unknown outcome (timeout, crash mid-charge) is asked again.
    recheck_s: float = Field(10, gt=0)


class PrinterSettings(StrictSection):
    """The receipt printer (ESC/POS) and the fiscal fields printed on every receipt."""

    kind: Literal["none", "serial", "usb", "network", "file"] = "none"
    #: serial: device path; usb: /dev/usb/lp0; file: where the bytes are appended.
    path: str | None = None
    baudrate: int = Field(9600, gt=0)
    host: str | None = None
    tcp_port: int = Field(9100, ge=1, le=65535)
    width: Literal[32, 42, 48] = 42
    tax_system: Literal["osn", "usn_income", "usn_income_outcome", "esn", "patent"] = "osn"
    vat: Literal["none", "vat0", "vat5", "vat7", "vat10", "vat20"] = "none"
    #: Lines at the top of every receipt: seller, address, tax number.
    header: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _where(self) -> PrinterSettings:
        if self.kind in ("serial", "usb", "file") and not self.path:
            raise ValueError(f"printer.path: a {self.kind} printer needs a path")
        if self.kind == "network" and not self.host:
            raise ValueError("printer.host: a network printer needs a host")
        return self


class NotifierSettings(NotifierSections):
    """How SMS (codes, PINs) and e-mail (receipts) reach clients."""

    #: http: the SMS gateway below; mqtt: hand it to the console over the fleet link (the
    #: console sends it with its own provider); log: write to the daemon's log (demos only: it
    #: contains codes and PINs); none: no SMS.
    sms: Literal["none", "http", "mqtt", "log"] = "none"
    #: smtp: the server below (receipts by e-mail); mqtt; log; none.
    email: Literal["none", "smtp", "mqtt", "log"] = "none"
