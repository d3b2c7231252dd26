"""Builds the storage business's adapters from the locker's configuration.

The only place that knows which terminal, printer and notifier classes exist: the service sees
ports (PaymentTerminal, ReceiptPrinter, Notifier) and nothing else. Each adapter's module is
imported only when the configuration asks for it: a locker carries no code (and no memory) for
a terminal, printer or gateway it does not have.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from daemon.io.notifier import CombinedNotifier, LogNotifier, MqttRelayNotifier
from daemon.storage.service import StorageService
from fleet_io.delivery import DeliveryResult, Retrying, RetryPolicy

if TYPE_CHECKING:
    from daemon.config import LockerConfig
    from daemon.core import LockerCore
    from daemon.io.payment.simulator import SimulatedTerminal
    from daemon.io.receipts.printers import ReceiptPrinter
    from daemon.storage.settings import NotifierSettings, PrinterSettings


class _Nowhere:
    """A channel that is switched off: every message fails plainly."""

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return DeliveryResult(False, "sms", "no SMS channel is configured")

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        return DeliveryResult(False, "email", "no e-mail channel is configured")


def build_printer(settings: PrinterSettings) -> ReceiptPrinter | None:
    if settings.kind == "none":
        return None
    from daemon.io.receipts.printers import (
        DevicePrinter,
        FilePrinter,
        NetworkPrinter,
        SerialPrinter,
    )

    if settings.kind == "serial":
        assert settings.path
        return SerialPrinter(settings.path, settings.baudrate)
    if settings.kind == "usb":
        assert settings.path
        return DevicePrinter(settings.path)
    if settings.kind == "network":
        assert settings.host
        return NetworkPrinter(settings.host, settings.tcp_port)
    if settings.kind == "file":
        assert settings.path
        return FilePrinter(settings.path)
    return None


def build_notifier(settings: NotifierSettings, core: LockerCore) -> CombinedNotifier:
    def adapter(kind: str) -> Any:
        if kind == "http" and settings.http is not None:
            from fleet_io.sms_gateway import HttpSmsGateway

            return Retrying(HttpSmsGateway.of(settings.http), RetryPolicy.of(settings))
        if kind == "smtp" and settings.smtp is not None:
            from fleet_io.smtp_email import SmtpEmail

            return Retrying(SmtpEmail.of(settings.smtp), RetryPolicy.of(settings))
        if kind == "mqtt":
            return MqttRelayNotifier(core.relay_notification)
        if kind == "log":
            return LogNotifier(lambda line: core.journal.line("notify_log", text=line))
        return _Nowhere()

    return CombinedNotifier(adapter(settings.sms), adapter(settings.email))


def build_terminal(config: LockerConfig) -> SimulatedTerminal | None:
    if config.payment.adapter == "simulator":
        from daemon.io.payment.simulator import SimulatedTerminal

        journal = config.payment.journal or config.data_dir / "payment-sim.json"
        return SimulatedTerminal(journal)
    return None


def build_storage(core: LockerCore) -> StorageService:
    config = core.config
    return StorageService(
        core,
        config.kiosk,
        config.printer,
        build_terminal(config),
        build_notifier(config.notifier, core),
        build_printer(config.printer),
        recheck_s=config.payment.recheck_s,
    )


async def simulator_control(terminal: SimulatedTerminal, request: dict[str, Any]) -> dict:
    """Switches of the simulated terminal, for tests and demos (one JSON object a request).

    {"op": "next", "outcomes": ["decline", "timeout"]}, {"op": "offline", "on": true},
    {"op": "delay", "s": 2}, {"op": "hold_after_approve", "s": 5}, {"op": "operations"}.
    """
    op = request.get("op")
    try:
        if op == "next":
            terminal.set_next(*request.get("outcomes", []))
        elif op == "offline":
            terminal.offline = bool(request.get("on", True))
        elif op == "delay":
            terminal.delay_s = float(request.get("s", 0))
        elif op == "hold_after_approve":
            terminal.hold_after_approve_s = float(request.get("s", 0))
        elif op != "operations":
            return {"ok": False, "error": "unknown_command",
                    "message": f"{op!r}: use next, offline, delay, hold_after_approve, operations"}
    except ValueError as exc:
        return {"ok": False, "error": "malformed", "message": str(exc)}
    await asyncio.sleep(0)
    return {"ok": True, "outcomes": [o.value for o in terminal.next_outcomes],
            "offline": terminal.offline, "operations": terminal.operations()}


__all__ = ["build_storage", "simulator_control"]
