"""Receipts of the storage business: numbered, printed, e-mailed, announced by an event.

One receipt per payment (sale or refund); the PIN is printed where the scenario hands it on paper.
The number grows by one across restarts (it is committed with the `receipt_issued` event).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from daemon.fsm import Event
from daemon.io.receipts.model import TEXTS as RECEIPT_TEXTS
from daemon.io.receipts.model import OperationType, Receipt, ReceiptItem, TaxSystem, VatRate
from daemon.io.receipts.printers import ReceiptPrinter
from daemon.io.receipts.render import render_escpos, render_text
from daemon.storage.settings import PrinterSettings
from daemon.storage.texts import FALLBACK, item_name, text

#: Key, in a tenancy's secret part, of the facts of its rent receipt (it may carry the PIN).
RECEIPT_NOTE = "receipt"

if TYPE_CHECKING:
    from daemon.core import LockerCore
    from daemon.io.notifier import Notifier


class ReceiptDesk:
    def __init__(
        self,
        core: LockerCore,
        settings: PrinterSettings,
        printer: ReceiptPrinter | None,
        notifier: Notifier | None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.printer = printer
        self.notifier = notifier

    def receipt(
        self, kind: str, cell: int, amount: int, currency: str, txn: str | None, language: str,
        *, number: int, issued_at_ms: int, pin: str | None = None,
    ) -> Receipt:
        """The document of one payment (pure: the same facts give the same receipt)."""
        lang = language if language in RECEIPT_TEXTS else FALLBACK
        item = "slip" if kind == "rent" and amount == 0 else ("rent" if kind == "refund" else kind)
        p = self.settings
        return Receipt(
            locker_id=self.core.config.locker_id,
            number=number,
            issued_at=datetime.fromtimestamp(issued_at_ms / 1000, UTC),
            items=(ReceiptItem(item_name(lang, item, cell), 1, amount, VatRate(p.vat)),),
            currency=currency,
            operation=OperationType.REFUND if kind == "refund" else OperationType.SALE,
            tax_system=TaxSystem(p.tax_system),
            transaction_id=txn,
            pin=pin,
            language=lang,
            header=tuple(p.header),
        )

    def kept_text(self, cell: int, tenancy: dict) -> str | None:
        """The text of a rental's receipt again, from the facts kept on its tenancy (a restart
        forgets the screen's copy; the screen polling `GET /rentals/{id}` still gets it)."""
        kept = (tenancy.get("secret") or {}).get(RECEIPT_NOTE)
        if not kept:
            return None
        receipt = self.receipt(
            "rent", cell, int(kept["amount"]), str(tenancy.get("currency")), kept.get("txn"),
            str(tenancy.get("language", FALLBACK)), number=int(kept["number"]),
            issued_at_ms=int(kept["issued_at"]), pin=kept.get("pin"),
        )
        return render_text(receipt, self.settings.width)

    async def issue(
        self, kind: str, cell: int, amount: int, currency: str, txn: str | None, language: str,
        *, pin: str | None = None, email: str | None = None, op_id: str | None = None,
        tenancy_id: str | None = None,
    ) -> str:
        """Number, render, print and (if asked) e-mail the receipt of one payment; its text.

        With `tenancy_id`, its facts are kept on that tenancy in the same commit (kept_text).
        """
        number = int(self.core.store.meta("receipt_no", 0)) + 1
        issued_at = self.core.clock()
        receipt = self.receipt(kind, cell, amount, currency, txn, language, number=number,
                               issued_at_ms=issued_at, pin=pin)
        p = self.settings
        rendered = render_text(receipt, p.width)
        printed = False
        if self.printer is not None:
            try:
                await self.printer.print(render_escpos(receipt, p.width))
                printed = True
            except Exception as exc:  # no paper must not stop a pickup; the event tells
                self.core.journal.line("printer_failed", level="warning", error=repr(exc))
        emailed = None
        if email and self.notifier is not None:
            subject = text(language, "receipt_subject", {"locker": self.core.config.locker_id})
            emailed = (await self.notifier.send_email(email, subject, rendered)).ok
        if tenancy_id is not None:
            self.core.machine.note_secret(
                cell, tenancy_id, RECEIPT_NOTE,
                {"number": number, "issued_at": issued_at, "amount": amount, "txn": txn,
                 "pin": pin},
            )
        self.core.apply(
            [Event("receipt_issued", cell,
                   {"number": number, "operation": receipt.operation.value, "payment_for": kind,
                    "total": amount, "currency": currency, "transaction_id": txn,
                    "op_id": op_id, "printed": printed, "emailed": emailed}, False)],
            meta={"receipt_no": number},
        )
        return rendered
