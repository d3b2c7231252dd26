"""Money as integer minor units plus an ISO 4217 currency (docs/architecture.md, "Money and
tariffs").

Floats never hold money: a price is an `int` of minor units (kopecks, cents), so sums are exact
and the canonical JSON of a signed configuration never carries a float. Amounts of different
currencies are never added or compared: that is always a configuration mistake, and it fails
loudly (`CurrencyMismatch`) instead of producing a wrong receipt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

#: Digits after the decimal point of the currencies we know (ISO 4217 "minor unit").
#: Only formatting and parsing need it; any other well-formed code is accepted with the default.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "RUB": 2, "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "KZT": 2, "UAH": 2, "BYN": 2,
    "CNY": 2, "INR": 2, "TRY": 2, "AED": 2, "PLN": 2, "CZK": 2, "SEK": 2, "NOK": 2,
    "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UZS": 2,
    "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}  # fmt: skip
DEFAULT_EXPONENT = 2

_CODE_RE = re.compile(r"^[A-Z]{3}$")
_AMOUNT_RE = re.compile(r"^(-?)(\d+)(?:\.(\d+))?$")


class CurrencyMismatch(ValueError):
    """Two amounts of different currencies were added, subtracted or compared."""


def check_currency(code: str) -> str:
    """`code` itself if it is shaped like an ISO 4217 code (three capital letters)."""
    if not isinstance(code, str) or not _CODE_RE.match(code):
        raise ValueError(
            f"not an ISO 4217 currency code (three capital letters such as RUB): {code!r}"
        )
    return code


def minor_unit_exponent(currency: str) -> int:
    """How many decimal digits the minor unit has (RUB 2, JPY 0, KWD 3; unknown codes 2)."""
    return MINOR_UNIT_EXPONENTS.get(check_currency(currency), DEFAULT_EXPONENT)


#: A currency field of a pydantic model.
Currency = Annotated[str, AfterValidator(check_currency)]


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: `amount` minor units of `currency`. May be negative (change, refunds).

    Equality is plain field equality (1.00 RUB != 1.00 USD, so Money works in sets and dicts);
    ordering and arithmetic across currencies raise CurrencyMismatch.
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(
                f"amount must be an int of minor units, not {type(self.amount).__name__}"
            )
        check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Exact decimal text in major units ("190", "190.5", "-1.25") to Money; no floats."""
        exp = minor_unit_exponent(currency)
        match = _AMOUNT_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not an amount: {text!r} (expected digits like 190.50)")
        sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
        if len(frac) > exp:
            raise ValueError(f"{text!r}: {currency} has {exp} digits after the decimal point")
        amount = int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0")
        return cls(-amount if sign else amount, currency)

    @classmethod
    def from_dict(cls, obj: Any) -> Money:
        """Inverse of to_dict; ValueError/TypeError on anything else."""
        if not isinstance(obj, dict) or set(obj) != {"amount", "currency"}:
            raise ValueError(f"money must be {{'amount': int, 'currency': str}}, got {obj!r}")
        return cls(obj["amount"], obj["currency"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in events and receipts: integers and strings only."""
        return {"amount": self.amount, "currency": self.currency}

    # -- arithmetic (same currency only) --------------------------------------------------
    def _same(self, other: Money, verb: str) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(f"cannot {verb} {self} and {other}: different currencies")

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "add")
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "subtract")
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, times: object) -> Money:
        """Scale by a whole number (a price times a count of steps)."""
        if isinstance(times, bool) or not isinstance(times, int):
            return NotImplemented
        return Money(self.amount * times, self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount < other.amount

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount <= other.amount

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount > other.amount

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other, "compare")
        return self.amount >= other.amount

    # -- display ----------------------------------------------------------------------------
    def format(self, *, decimal_sep: str = ".", thousands_sep: str = "", code: bool = True) -> str:
        """For receipts and screens: `1 234,50 RUB` with decimal_sep="," and thousands_sep=" "."""
        exp = minor_unit_exponent(self.currency)
        whole, frac = divmod(abs(self.amount), 10**exp)
        text = f"{whole:,}".replace(",", thousands_sep)
        if exp:
            text += f"{decimal_sep}{frac:0{exp}d}"
        if self.amount < 0:
            text = "-" + text
        return f"{text} {self.currency}" if code else text

    def __str__(self) -> str:
        return self.format()
