"""The receipt document: what a fiscal printer needs (tax system, VAT per item, payment method,
sale or refund), so that a fiscal driver can be fed from the same object. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contract.money import Money, check_currency

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
