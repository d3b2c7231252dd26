"""Receipts: one document model, pure renderers (plain text, ESC/POS) and thin printer adapters.

A receipt is produced for every payment. The document carries what a fiscal printer needs (tax
system, VAT rate per item, payment method, sale or refund) so a fiscal driver can be fed from the
same object; the renderers here turn it into text for a screen or log and into ESC/POS bytes for a
thermal printer. Rendering is pure (time and numbers are passed in); printing only moves bytes.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import serial

from contract.money import Money, check_currency

WIDTHS = (32, 42, 48)
#: Decimal and thousands separators of amounts, per receipt language.
_NUMBER_STYLE = {"en": (".", ""), "ru": (",", " ")}


class TaxSystem(StrEnum):
    """Taxation system of the seller, as fiscal printers code it (Russian 54-FZ names)."""

    OSN = "osn"
    USN_INCOME = "usn_income"
    USN_INCOME_OUTCOME = "usn_income_outcome"
    ESN = "esn"
    PATENT = "patent"


class VatRate(StrEnum):
    """VAT rate code of an item; the amount is included in the price."""

    NONE = "none"
    VAT0 = "vat0"
    VAT5 = "vat5"
    VAT7 = "vat7"
    VAT10 = "vat10"
    VAT20 = "vat20"

    @property
    def percent(self) -> int | None:
        return None if self is VatRate.NONE else int(self.value[3:])


class PaymentMethod(StrEnum):
    CARD = "card"
    CASH = "cash"


class OperationType(StrEnum):
    """Sale, or refund of a sale (fiscal "приход" / "возврат прихода")."""

    SALE = "sale"
    REFUND = "refund"


TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "sale": "RECEIPT",
        "refund": "REFUND RECEIPT",
        "locker": "Locker",
        "number": "Receipt No.",
        "date": "Date",
        "total": "TOTAL",
        "vat": "incl. VAT {percent}%",
        "no_vat": "VAT not applicable",
        "card": "Paid by card",
        "cash": "Paid in cash",
        "card_refund": "Refunded to card",
        "nothing_charged": "Nothing was charged",
        "cash_refund": "Refunded in cash",
        "transaction": "Transaction",
        "tax_system": "Tax system",
        "pin": "PIN",
        "pin_hint": "Enter this PIN on the locker screen to open your cell. Keep it secret.",
        "thanks": "Thank you!",
    },
    "ru": {
        "sale": "КВИТАНЦИЯ",
        "refund": "КВИТАНЦИЯ ВОЗВРАТА",
        "locker": "Камера",
        "number": "Квитанция №",
        "date": "Дата",
        "total": "ИТОГ",
        "vat": "в т.ч. НДС {percent}%",
        "no_vat": "Без НДС",
        "card": "Оплата картой",
        "cash": "Оплата наличными",
        "card_refund": "Возврат на карту",
        "nothing_charged": "Ничего не списано",
        "cash_refund": "Возврат наличными",
        "transaction": "Транзакция",
        "tax_system": "СНО",
        "pin": "PIN",
        "pin_hint": "Введите этот PIN на экране камеры, чтобы открыть ячейку. Не сообщайте его.",
        "thanks": "Спасибо!",
    },
}
_DATE_FORMATS = {"en": "%Y-%m-%d %H:%M", "ru": "%d.%m.%Y %H:%M"}


def format_amount(amount: int, currency: str, language: str = "en") -> str:
    """Minor units as the receipt language writes them, without the code ("1 265,00" in ru)."""
    decimal_sep, thousands_sep = _NUMBER_STYLE.get(language, (".", ""))
    return Money(amount, currency).format(
        decimal_sep=decimal_sep, thousands_sep=thousands_sep, code=False
    )


def vat_included(amount: int, rate: VatRate) -> int:
    """VAT contained in a VAT-inclusive amount, rounded half up to a minor unit."""
    percent = rate.percent
    if not percent:
        return 0
    return (amount * percent * 2 + (100 + percent)) // (2 * (100 + percent))


@dataclass(frozen=True)
class ReceiptItem:
    """One line of a receipt; ``amount`` is quantity times unit price, VAT included."""

    name: str
    quantity: int
    unit_price: int
    vat: VatRate = VatRate.NONE

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a receipt item needs a name")
        if self.quantity <= 0:
            raise ValueError(f"item {self.name!r}: quantity must be positive, got {self.quantity}")
        if self.unit_price < 0:
            raise ValueError(f"item {self.name!r}: unit price must not be negative")

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price

    @property
    def vat_amount(self) -> int:
        return vat_included(self.amount, self.vat)


@dataclass(frozen=True)
class Receipt:
    """A payment's receipt; ``pin`` is printed only where the scenario hands the PIN on paper."""

    locker_id: str
    number: int
    issued_at: datetime
    items: tuple[ReceiptItem, ...]
    currency: str
    payment_method: PaymentMethod = PaymentMethod.CARD
    operation: OperationType = OperationType.SALE
    tax_system: TaxSystem = TaxSystem.OSN
    transaction_id: str | None = None
    pin: str | None = None
    language: str = "en"
    header: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("a receipt needs at least one item")
        check_currency(self.currency)
        if self.language not in TEXTS:
            raise ValueError(
                f"no receipt texts for language {self.language!r}; have {sorted(TEXTS)}"
            )

    @property
    def total(self) -> int:
        return sum(item.amount for item in self.items)

    def vat_totals(self) -> dict[VatRate, int]:
        """VAT per rate, computed on each rate's sum as fiscal totals are (not summed per item)."""
        sums: dict[VatRate, int] = {}
        for item in self.items:
            sums[item.vat] = sums.get(item.vat, 0) + item.amount
        return {rate: vat_included(amount, rate) for rate, amount in sums.items()}


# -- layout shared by both renderers ----------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    text: str
    center: bool = False
    bold: bool = False
    title: bool = False


def _pair(left: str, right: str, width: int) -> list[_Line]:
    """Left text and right-aligned value on one line, or the left text wrapped above it."""
    if len(left) + 1 + len(right) <= width:
        return [_Line(left + " " * (width - len(left) - len(right)) + right)]
    lines = [_Line(part) for part in textwrap.wrap(left, width)]
    return [*lines, _Line(right.rjust(width))]


def _layout(receipt: Receipt, width: int) -> list[_Line]:
    if width not in WIDTHS:
        raise ValueError(f"receipt width must be one of {WIDTHS} columns, got {width}")
    t = TEXTS[receipt.language]
    lang = receipt.language

    def money(amount: int) -> str:
        return format_amount(amount, receipt.currency, lang)

    rule = _Line("-" * width)
    lines = [_Line(h, center=True) for h in receipt.header]
    lines.append(_Line(t[receipt.operation.value], center=True, bold=True, title=True))
    lines += _pair(t["locker"], receipt.locker_id, width)
    lines += _pair(t["number"], str(receipt.number), width)
    lines += _pair(t["date"], receipt.issued_at.strftime(_DATE_FORMATS[receipt.language]), width)
    lines.append(rule)
    for item in receipt.items:
        lines += [_Line(part) for part in textwrap.wrap(item.name, width)]
        qty = f"  {item.quantity} x {money(item.unit_price)}"
        lines += _pair(qty, money(item.amount), width)
    lines.append(rule)
    total = _pair(t["total"], f"{money(receipt.total)} {receipt.currency}", width)
    lines += [_Line(line.text, bold=True) for line in total]
    for rate, vat in receipt.vat_totals().items():
        if rate.percent is None:
            lines.append(_Line(t["no_vat"]))
        else:
            lines += _pair(t["vat"].format(percent=rate.percent), money(vat), width)
    method = receipt.payment_method.value
    if receipt.operation is OperationType.REFUND:
        method += "_refund"
    if receipt.total == 0:  # a PIN slip of a postpaid rental: no card paid anything
        lines.append(_Line(t["nothing_charged"]))
    else:
        lines += _pair(t[method], money(receipt.total), width)
    if receipt.transaction_id:
        lines += _pair(t["transaction"], receipt.transaction_id, width)
    lines += _pair(t["tax_system"], receipt.tax_system.value.upper(), width)
    if receipt.pin:
        lines.append(rule)
        lines.append(_Line(f"{t['pin']}: {receipt.pin}", center=True, bold=True, title=True))
        lines += [_Line(part) for part in textwrap.wrap(t["pin_hint"], width)]
    lines.append(rule)
    lines.append(_Line(t["thanks"], center=True))
    return lines


def render_text(receipt: Receipt, width: int = 42) -> str:
    """The receipt as fixed-width plain text, one line per printed line."""
    return "".join(
        (line.text.center(width).rstrip() if line.center else line.text) + "\n"
        for line in _layout(receipt, width)
    )


ESC = b"\x1b"
GS = b"\x1d"
INIT = ESC + b"@"
CODEPAGE_CP866 = ESC + b"t\x11"
ALIGN_LEFT = ESC + b"a\x00"
ALIGN_CENTER = ESC + b"a\x01"
STYLE_NORMAL = ESC + b"!\x00"
STYLE_BOLD = ESC + b"!\x08"
STYLE_TITLE = ESC + b"!\x18"  # emphasised + double height (width unchanged: columns still fit)
FEED_AND_PARTIAL_CUT = GS + b"V\x42\x00"


def render_escpos(receipt: Receipt, width: int = 42) -> bytes:
    """The receipt as ESC/POS bytes: init, CP866 (Latin and Cyrillic), styled lines, cut."""
    out = bytearray(INIT + CODEPAGE_CP866)
    for line in _layout(receipt, width):
        out += ALIGN_CENTER if line.center else ALIGN_LEFT
        out += STYLE_TITLE if line.title else STYLE_BOLD if line.bold else STYLE_NORMAL
        out += line.text.encode("cp866", errors="replace") + b"\n"
    out += STYLE_NORMAL + ALIGN_LEFT + b"\n"
    out += FEED_AND_PARTIAL_CUT
    return bytes(out)


# -- printers ---------------------------------------------------------------------------------


class PrinterError(Exception):
    """The printer could not take the bytes; the reason says which printer and why."""


class ReceiptPrinter(Protocol):
    """Anything that takes ready-made printer bytes."""

    async def print(self, data: bytes) -> None: ...


class SerialPrinter:
    """A printer on a serial line (a tty path or a pyserial URL): open, write, close."""

    def __init__(self, port: str, baudrate: int = 9600, timeout_s: float = 5.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            with serial.serial_for_url(
                self.port, baudrate=self.baudrate, write_timeout=self.timeout_s
            ) as line:
                line.write(data)
                line.flush()
        except (serial.SerialException, OSError) as exc:
            raise PrinterError(f"serial printer {self.port}: {exc}") from exc


class DevicePrinter:
    """A printer that is a character device (USB printer class, /dev/usb/lp0): write the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            raise PrinterError(f"printer device {self.path}: {exc}") from exc


class NetworkPrinter:
    """A network printer on its raw port (9100): connect, send, close."""

    def __init__(self, host: str, port: int = 9100, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    async def print(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(data)
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                finally:
                    writer.close()
                    await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise PrinterError(f"network printer {self.host}:{self.port}: {exc!r}") from exc


class FilePrinter:
    """Appends the bytes to a file: a stand-in printer for demos and tests.

    Printed PINs land there, so the file is the locker user's alone (0600), whatever the umask,
    and one left readable by an older version is tightened at the next receipt.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def print(self, data: bytes) -> None:
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(fd, "ab") as f:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                f.write(data)
        except OSError as exc:
            raise PrinterError(f"file printer {self.path}: {exc}") from exc
