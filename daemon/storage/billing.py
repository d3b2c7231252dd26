"""What a storage rental owes: pure arithmetic over the tenancy the cell keeps, time passed in.

A rental's tenancy (a plain JSON dict stored with its cell) carries a copy of the tariff it started
with, what was paid and waived, and its times. Every amount a screen, receipt or event shows is
computed here from that dict, so the kiosk, the pickup and the overdue timer cannot disagree.

Rules (README "Storage lockers"):
- The stay is measured from the door closing on the deposit (`started_at`) to now; a waiver
  stops the clock (`billing_stopped_at`): nothing more is owed for that tenancy.
- `prepaid` and `partial` pay a period before the door opens; the paid time ends at
  `started_at + covered_ms(paid)`, after which the cell is overdue and the rest is debt at pickup.
  `postpaid` pays everything at pickup and is overdue only past the storage limit.
- The storage limit (the scenario's or the tariff's maximum period, the shorter) makes a cell
  overdue whatever was paid; the price keeps growing past it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from contract.money import Money
from contract.pricing import RentalTariff

PAYMENT_MODES = ("prepaid", "partial", "postpaid")


def tariff_of(tenancy: Mapping[str, Any]) -> RentalTariff:
    return RentalTariff.model_validate(tenancy["tariff"])


@dataclass(frozen=True)
class Bill:
    """A rental's account at one moment; amounts in minor units of `currency`."""

    currency: str
    elapsed_ms: int
    #: Price of the stay so far (the tariff applied to elapsed_ms).
    price: int
    paid: int
    waived: int
    #: What must be paid now before the cell opens for pickup (never negative).
    due: int
    #: Epoch ms at which the paid time ends (None: postpaid, or paid for ever).
    paid_until: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def money(self, amount: int) -> Money:
        return Money(amount, self.currency)


def elapsed_ms(tenancy: Mapping[str, Any], now_ms: int) -> int:
    """The billed length of the stay; never negative, frozen once billing stopped."""
    end = tenancy.get("billing_stopped_at")
    end = now_ms if end is None else min(end, now_ms)
    return max(0, end - int(tenancy["started_at"]))


def bill(tenancy: Mapping[str, Any], now_ms: int) -> Bill:
    tariff = tariff_of(tenancy)
    elapsed = elapsed_ms(tenancy, now_ms)
    price = tariff.price_for(elapsed).amount
    paid = int(tenancy.get("paid", 0))
    waived = int(tenancy.get("waived", 0))
    return Bill(
        currency=tariff.currency,
        elapsed_ms=elapsed,
        price=price,
        paid=paid,
        waived=waived,
        due=max(0, price - paid - waived),
        paid_until=paid_until(tenancy),
    )


def paid_until(tenancy: Mapping[str, Any]) -> int | None:
    if tenancy.get("mode") == "postpaid" or "started_at" not in tenancy:
        return None
    tariff = tariff_of(tenancy)
    paid = Money(int(tenancy.get("paid", 0)), tariff.currency)
    return tariff.paid_until(int(tenancy["started_at"]), paid)


def due_after_ms(
    tariff: RentalTariff, mode: str, paid: int, limit_ms: int | None
) -> int | None:
    """How long after its start a rental becomes overdue: its paid time, capped by the limit."""
    candidates = [limit_ms] if limit_ms is not None else []
    if mode != "postpaid":
        covered = tariff.covered_ms(Money(paid, tariff.currency))
        if covered is not None:
            candidates.append(covered)
    return min(candidates) if candidates else None


def prepayment(tariff: RentalTariff, mode: str, period_ms: int | None) -> int:
    """What the client pays before the door opens: the chosen period, or nothing (postpaid)."""
    if mode == "postpaid":
        return 0
    if period_ms is None:
        raise ValueError(f"payment mode {mode!r} needs a period to prepay")
    return tariff.price_for_period(period_ms).amount


def extension_quote(tenancy: Mapping[str, Any], period_ms: int, now_ms: int) -> tuple[int, int]:
    """(top-up, new paid length in ms) to pay `period_ms` more than is paid or used now.

    The new length counts from whichever is later, the end of the paid time or now, so an
    overdue rental first pays its debt and then the period.
    """
    tariff = tariff_of(tenancy)
    paid = Money(int(tenancy.get("paid", 0)), tariff.currency)
    covered = tariff.covered_ms(paid) or 0
    target = max(covered, elapsed_ms(tenancy, now_ms)) + period_ms
    return tariff.amount_due(target, paid).amount, target


def due_at_after_payment(tenancy: Mapping[str, Any], paid: int) -> int | None:
    """The tenancy's new due time once `paid` in total has been paid (its limit still holds)."""
    tariff = tariff_of(tenancy)
    after = due_after_ms(tariff, str(tenancy.get("mode")), paid, tenancy.get("limit_ms"))
    return None if after is None else int(tenancy["started_at"]) + after
