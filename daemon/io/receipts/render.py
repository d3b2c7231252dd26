"""Pure renderers of a receipt: plain text for a screen, a log or an e-mail, and ESC/POS bytes
for a thermal printer. Time and numbers are passed in; both share one layout.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from daemon.io.receipts.model import TEXTS, OperationType, Receipt, format_amount

#: Paper widths, in columns, that the layout knows.
WIDTHS = (32, 42, 48)
_DATE_FORMATS = {"en": "%Y-%m-%d %H:%M", "ru": "%d.%m.%Y %H:%M"}

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
