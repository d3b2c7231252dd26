"""Step tariffs and charging tariffs: what a stay costs (docs/architecture.md, "Money and tariffs").

Pure and deterministic: durations come in as integer milliseconds, prices are integer minor units,
and nothing here reads a clock. Both the locker (kiosk screens, overdue timer, debt at pickup)
and the console (reports, previews) compute prices with this one module, so they cannot disagree.

Rules, chosen once for every caller:
- A stay costs the sum of the prices of every step *started*: a stay of exactly one step is one
  step, one millisecond more starts the next. After the last listed step, the last one repeats.
- A stay no longer than the grace period is free; a longer one is priced from its start, as if
  there were no grace period (leaving at minute 11 of a 10-minute grace pays the first step).
- The maximum period does not cap the price: past it the price keeps growing by the last step,
  and `exceeds_max` tells the caller the storage limit is passed (the cell becomes overdue and
  the operator may act). Capping would make abandoning things in a cell the cheapest option.
- A rental keeps a copy of the tariff it started with (`model_dump()`; these models are frozen),
  so publishing a new tariff never changes an ongoing rental.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.money import Currency, CurrencyMismatch, Money

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
UNIT_MS: dict[str, int] = {"minutes": MINUTE_MS, "hours": HOUR_MS}

#: Step lengths are counted in whole minutes or whole hours, as the operator thinks of them.
StepUnit = Literal["minutes", "hours"]
#: Ids of tariffs, referenced by profiles and stored with rentals.
TariffId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)]
Price = Annotated[int, Field(ge=0, description="minor units of the tariff's currency")]


def _check_duration(duration_ms: int) -> None:
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int):
        raise TypeError(f"a duration is an int of milliseconds, not {type(duration_ms).__name__}")
    if duration_ms < 0:
        raise ValueError(f"a duration cannot be negative: {duration_ms} ms")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Model(BaseModel):
    """Strict (no "5" for 5, no floats), closed and immutable, like the wire messages."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Period(_Model):
    """A length of time in whole minutes or hours."""

    length: int = Field(ge=1)
    unit: StepUnit

    @property
    def duration_ms(self) -> int:
        return self.length * UNIT_MS[self.unit]


class Step(Period):
    """One step of a step tariff: `length` `unit`s for `price` minor units."""

    price: Price


class StepTariff(_Model):
    """Ordered steps; the last repeats; optional free grace period and maximum period."""

    id: TariffId
    name: str = Field(min_length=1)
    currency: Currency
    steps: list[Step]
    #: A stay this long or shorter is free.
    grace_s: int = Field(0, ge=0)
    #: Storage limit of this tariff; past it the price keeps growing and `exceeds_max` is true.
    max_period_s: int | None = Field(None, ge=1)

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, steps: list[Step]) -> list[Step]:
        if not steps:
            raise ValueError("a tariff needs at least one step (length, unit, price)")
        return steps

    @model_validator(mode="after")
    def _grace_within_max(self) -> StepTariff:
        if self.max_period_s is not None and self.grace_s >= self.max_period_s:
            raise ValueError(
                f"grace_s: the grace period ({self.grace_s} s) must be shorter than "
                f"max_period_s ({self.max_period_s} s)"
            )
        return self

    @property
    def grace_ms(self) -> int:
        return self.grace_s * 1000

    @property
    def max_period_ms(self) -> int | None:
        return None if self.max_period_s is None else self.max_period_s * 1000

    def money(self, amount: int) -> Money:
        return Money(amount, self.currency)

    def steps_started(self, duration_ms: int) -> int:
        """How many steps a stay of `duration_ms` has started (grace not applied)."""
        _check_duration(duration_ms)
        count, remaining = 0, duration_ms
        for step in self.steps:
            if remaining <= 0:
                return count
            count += 1
            remaining -= step.duration_ms
        if remaining > 0:
            count += _ceil_div(remaining, self.steps[-1].duration_ms)
        return count

    def price_for(self, duration_ms: int) -> Money:
        """The price of a stay of `duration_ms`: every started step; 0 within the grace period."""
        _check_duration(duration_ms)
        if duration_ms <= self.grace_ms:
            return self.money(0)
        total, remaining = 0, duration_ms
        for step in self.steps:
            if remaining <= 0:
                return self.money(total)
            total += step.price
            remaining -= step.duration_ms
        if remaining > 0:
            last = self.steps[-1]
            total += _ceil_div(remaining, last.duration_ms) * last.price
        return self.money(total)

    def price_for_period(self, period_ms: int) -> Money:
        """What to prepay so that a stay of up to `period_ms` owes nothing more.

        Since the price never falls as time grows, this is the price of a stay of exactly that
        period; `covered_ms` of the result is at least `period_ms` (the end of its last step).
        """
        return self.price_for(period_ms)

    def covered_ms(self, paid: Money) -> int | None:
        """The longest stay that `paid` pays for in full; None if no stay ever costs more.

        This is how far a payment extends a rental: the end of the last step it fully pays for
        (or the grace period, if that is longer). None only when the last step is free and
        everything before it is paid.
        """
        amount = self._amount_of(paid)
        if amount < 0:
            raise ValueError(f"a payment cannot be negative: {paid}")
        cum, boundary = 0, 0
        for step in self.steps:
            if cum + step.price > amount:
                return max(self.grace_ms, boundary)
            cum += step.price
            boundary += step.duration_ms
        last = self.steps[-1]
        if last.price == 0:
            return None
        extra = (amount - cum) // last.price
        return max(self.grace_ms, boundary + extra * last.duration_ms)

    def paid_until(self, start_ms: int, paid: Money) -> int | None:
        """Epoch ms at which a rental started at `start_ms` with `paid` becomes overdue."""
        covered = self.covered_ms(paid)
        return None if covered is None else start_ms + covered

    def amount_due(self, duration_ms: int, paid: Money) -> Money:
        """What is still owed for a stay of `duration_ms` after `paid` (never negative).

        The debt at pickup, and equally the top-up to extend a rental to `duration_ms`.
        """
        price = self.price_for(duration_ms)
        return max(price - paid, self.money(0))

    def exceeds_max(self, duration_ms: int) -> bool:
        """True once a stay is longer than the tariff's maximum period (storage limit passed)."""
        _check_duration(duration_ms)
        limit = self.max_period_ms
        return limit is not None and duration_ms > limit

    def _amount_of(self, paid: Money) -> int:
        if paid.currency != self.currency:
            raise CurrencyMismatch(
                f"a payment of {paid} does not fit tariff {self.id!r} in {self.currency}"
            )
        return paid.amount


class ChargingTariff(_Model):
    """What powering a cell's socket costs: `flat` once per rental, or `per_period` started.

    Per period, `cap` (if set) is the most one rental pays for charging, so a long stay does not
    make charging dearer than the phone. A rental of zero length costs nothing either way.
    """

    id: TariffId
    name: str = Field(min_length=1)
    currency: Currency
    mode: Literal["flat", "per_period"]
    price: Price
    #: Required with `per_period`, not allowed with `flat`.
    period: Period | None = None
    cap: Price | None = None

    @model_validator(mode="after")
    def _period_fits_mode(self) -> ChargingTariff:
        if self.mode == "per_period" and self.period is None:
            raise ValueError("period: mode 'per_period' needs a period (length and unit)")
        if self.mode == "flat" and self.period is not None:
            raise ValueError("period: mode 'flat' charges once per rental; remove the period")
        if self.mode == "flat" and self.cap is not None:
            raise ValueError("cap: mode 'flat' has nothing to cap; remove the cap")
        return self

    def price_for(self, duration_ms: int) -> Money:
        """Charging price of a rental of `duration_ms`."""
        _check_duration(duration_ms)
        if duration_ms == 0:
            return Money(0, self.currency)
        if self.period is None:  # flat
            return Money(self.price, self.currency)
        total = _ceil_div(duration_ms, self.period.duration_ms) * self.price
        if self.cap is not None:
            total = min(total, self.cap)
        return Money(total, self.currency)

    def saturates_at_ms(self) -> int | None:
        """A duration after which the price never changes again; None if it grows for ever."""
        if self.period is None or self.price == 0:
            return 1
        if self.cap is None:
            return None
        return _ceil_div(self.cap, self.price) * self.period.duration_ms


class RentalTariff(_Model):
    """Everything a rental pays for, frozen when it starts: storage plus optional charging.

    It answers the same questions as a StepTariff for the sum of both prices, so the prepaid,
    partial and postpaid flows need not know whether the cell charges a phone.
    """

    storage: StepTariff
    charging: ChargingTariff | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> RentalTariff:
        if self.charging is not None and self.charging.currency != self.storage.currency:
            raise ValueError(
                f"charging: charging tariff {self.charging.id!r} is in "
                f"{self.charging.currency}, storage tariff {self.storage.id!r} in "
                f"{self.storage.currency}"
            )
        return self

    @property
    def currency(self) -> str:
        return self.storage.currency

    def price_for(self, duration_ms: int) -> Money:
        price = self.storage.price_for(duration_ms)
        if self.charging is not None:
            price = price + self.charging.price_for(duration_ms)
        return price

    def price_for_period(self, period_ms: int) -> Money:
        """What to prepay so that a stay of up to `period_ms` owes nothing more."""
        return self.price_for(period_ms)

    def covered_ms(self, paid: Money) -> int | None:
        """The longest stay `paid` pays for in full; None if no stay ever costs more."""
        if self.charging is None:
            return self.storage.covered_ms(paid)
        amount = self.storage._amount_of(paid)
        if amount < 0:
            raise ValueError(f"a payment cannot be negative: {paid}")

        def affordable(duration_ms: int) -> bool:
            return self.price_for(duration_ms).amount <= amount

        hi = self._saturates_at_ms()
        if hi is not None:
            if affordable(hi):
                return None
        else:  # grows without bound: double until unaffordable
            hi = HOUR_MS
            while affordable(hi):
                hi *= 2
        lo = 0  # price_for(0) is 0, always affordable; invariant: lo affordable, hi not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if affordable(mid):
                lo = mid
            else:
                hi = mid
        return lo

    def paid_until(self, start_ms: int, paid: Money) -> int | None:
        covered = self.covered_ms(paid)
        return None if covered is None else start_ms + covered

    def amount_due(self, duration_ms: int, paid: Money) -> Money:
        return max(self.price_for(duration_ms) - paid, Money(0, self.currency))

    def exceeds_max(self, duration_ms: int) -> bool:
        return self.storage.exceeds_max(duration_ms)

    def _saturates_at_ms(self) -> int | None:
        """A duration past which the total never changes; None if it grows for ever."""
        storage = self.storage
        if storage.steps[-1].price > 0:
            return None
        assert self.charging is not None
        charging = self.charging.saturates_at_ms()
        if charging is None:
            return None
        listed = sum(step.duration_ms for step in storage.steps)
        return max(storage.grace_ms, listed, charging) + 1
