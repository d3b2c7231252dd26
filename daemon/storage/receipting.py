"""Receipts of the storage business: numbered, printed, e-mailed, announced by an event.

One receipt per payment (sale or refund); the PIN is printed where the scenario hands it on paper.
The number grows by one across restarts (it is committed with the `receipt_issued` event).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from daemon.fsm import Event
from daemon.io.receipts import (
    TEXTS as RECEIPT_TEXTS,
)
from daemon.io.receipts import (
    OperationType,
    Receipt,
    ReceiptItem,
    ReceiptPrinter,
    TaxSystem,
    VatRate,
    render_escpos,
    render_text,
)
from daemon.storage.settings import PrinterSettings
from daemon.storage.texts import FALLBACK, item_name, text

if TYPE_CHECKING:
    from daemon.app import LockerDaemon
    from daemon.io.notifier import Notifier


class ReceiptDesk:
    def __init__(
        self,
        daemon: LockerDaemon,
        settings: PrinterSettings,
        printer: ReceiptPrinter | None,
        notifier: Notifier | None,
    ) -> None:
        self.daemon = daemon
        self.settings = settings
        self.printer = printer
        self.notifier = notifier

    async def issue(
        self, kind: str, cell: int, amount: int, currency: str, txn: str | None, language: str,
        *, pin: str | None = None, email: str | None = None, op_id: str | None = None,
    ) -> str:
        """Number, render, print and (if asked) e-mail the receipt of one payment; its text."""
        lang = language if language in RECEIPT_TEXTS else FALLBACK
        number = int(self.daemon.store.meta("receipt_no", 0)) + 1
        item = "slip" if kind == "rent" and amount == 0 else ("rent" if kind == "refund" else kind)
        p = self.settings
        receipt = Receipt(
            locker_id=self.daemon.config.locker_id,
            number=number,
            issued_at=datetime.fromtimestamp(self.daemon.clock() / 1000, UTC),
            items=(ReceiptItem(item_name(lang, item, cell), 1, amount, VatRate(p.vat)),),
            currency=currency,
            operation=OperationType.REFUND if kind == "refund" else OperationType.SALE,
            tax_system=TaxSystem(p.tax_system),
            transaction_id=txn,
            pin=pin,
            language=lang,
            header=tuple(p.header),
        )
        rendered = render_text(receipt, p.width)
        printed = False
        if self.printer is not None:
            try:
                await self.printer.print(render_escpos(receipt, p.width))
                printed = True
            except Exception as exc:  # no paper must not stop a pickup; the event tells
                self.daemon.journal.line("printer_failed", level="warning", error=repr(exc))
        emailed = None
        if email and self.notifier is not None:
            subject = text(language, "receipt_subject", {"locker": self.daemon.config.locker_id})
            emailed = (await self.notifier.send_email(email, subject, rendered)).ok
        self.daemon.apply(
            [Event("receipt_issued", cell,
                   {"number": number, "operation": receipt.operation.value, "payment_for": kind,
                    "total": amount, "currency": currency, "transaction_id": txn,
                    "op_id": op_id, "printed": printed, "emailed": emailed}, False)],
            meta={"receipt_no": number},
        )
        return rendered
