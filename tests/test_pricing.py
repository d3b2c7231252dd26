"""Step and charging tariffs: the seed's table, grace, limits, prepaid helpers, and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from contract.money import CurrencyMismatch, Money
from contract.pricing import (
    HOUR_MS,
    MINUTE_MS,
    ChargingTariff,
    Period,
    RentalTariff,
    StepTariff,
)
from tests.strategies import charging_tariff_st, step_tariff_st
from tests.strategies import step_tariff as tariff

MIN = MINUTE_MS
HOUR = HOUR_MS


def rub(roubles: int) -> Money:
    return Money(roubles * 100, "RUB")


#: The seed: first hour 100 roubles, second 90, third 75, then 75 for every further hour.
SEED = tariff([(1, "hours", 10000), (1, "hours", 9000), (1, "hours", 7500)])


# -- the seed's table -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("duration_ms", "roubles"),
    [
        (0, 0),
        (1, 100),
        (1 * MIN, 100),
        (60 * MIN, 100),
        (60 * MIN + 1, 190),
        (61 * MIN, 190),
        (120 * MIN, 190),
        (121 * MIN, 265),
        (180 * MIN, 265),
        (181 * MIN, 340),
        (240 * MIN, 340),
        (241 * MIN, 415),
        (24 * HOUR, 265 + 21 * 75),
        (24 * HOUR + 1, 265 + 22 * 75),
    ],
)
def test_seed_table(duration_ms: int, roubles: int) -> None:
    assert SEED.price_for(duration_ms) == rub(roubles)


def test_seed_steps_started() -> None:
    assert [SEED.steps_started(m * MIN) for m in (0, 1, 60, 61, 120, 121, 181)] == [
        0, 1, 1, 2, 2, 3, 4,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("duration_ms", "roubles"),
    [
        (0, 0),
        (10 * MIN, 0),  # within grace
        (15 * MIN, 0),  # exactly the grace period: still free
        (15 * MIN + 1, 100),  # past grace: priced from the start
        (60 * MIN, 100),
        (61 * MIN, 190),
    ],
)
def test_grace_period(duration_ms: int, roubles: int) -> None:
    graced = tariff([(1, "hours", 10000), (1, "hours", 9000), (1, "hours", 7500)], grace_s=900)
    assert graced.price_for(duration_ms) == rub(roubles)


@pytest.mark.parametrize(
    ("minutes", "roubles"),
    [(0, 0), (1, 30), (15, 30), (16, 50), (30, 50), (31, 60), (45, 60), (46, 70), (60, 70)],
)
def test_minute_steps(minutes: int, roubles: int) -> None:
    """15 minutes for 30, the next 15 for 20, then 10 per started 15 minutes."""
    quarter = tariff([(15, "minutes", 3000), (15, "minutes", 2000), (15, "minutes", 1000)])
    assert quarter.price_for(minutes * MIN) == rub(roubles)


def test_mixed_units() -> None:
    """30 minutes for 100, then 150 per started hour."""
    mixed = tariff([(30, "minutes", 10000), (1, "hours", 15000)])
    assert mixed.price_for(30 * MIN) == rub(100)
    assert mixed.price_for(31 * MIN) == rub(250)
    assert mixed.price_for(90 * MIN) == rub(250)
    assert mixed.price_for(91 * MIN) == rub(400)


def test_negative_or_fractional_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SEED.price_for(-1)
    with pytest.raises(TypeError, match="milliseconds"):
        SEED.price_for(1.5)  # type: ignore[arg-type]


# -- maximum period -----------------------------------------------------------------------------
def test_past_max_period_price_keeps_growing_and_is_flagged() -> None:
    capped = tariff([(1, "hours", 10000)], max_period_s=3 * 3600)
    assert not capped.exceeds_max(3 * HOUR)
    assert capped.exceeds_max(3 * HOUR + 1)
    assert capped.price_for(3 * HOUR) == rub(300)
    assert capped.price_for(5 * HOUR) == rub(500)
    assert not SEED.exceeds_max(10**12)


# -- prepaid and partial helpers ------------------------------------------------------------
def test_prepay_for_three_hours_covers_three_hours() -> None:
    price = SEED.price_for_period(3 * HOUR)
    assert price == rub(265)
    assert SEED.covered_ms(price) == 3 * HOUR
    assert SEED.paid_until(1_000, price) == 1_000 + 3 * HOUR


def test_covered_by_partial_payments() -> None:
    assert SEED.covered_ms(rub(0)) == 0
    assert SEED.covered_ms(rub(99)) == 0
    assert SEED.covered_ms(rub(100)) == HOUR
    assert SEED.covered_ms(rub(189)) == HOUR
    assert SEED.covered_ms(rub(190)) == 2 * HOUR
    assert SEED.covered_ms(rub(340)) == 4 * HOUR
    assert SEED.covered_ms(rub(414)) == 4 * HOUR


def test_grace_counts_as_covered() -> None:
    graced = tariff([(1, "hours", 10000)], grace_s=600)
    assert graced.covered_ms(rub(0)) == 10 * MIN
    assert graced.covered_ms(rub(100)) == HOUR


def test_debt_at_pickup_and_extension() -> None:
    paid = SEED.price_for_period(HOUR)  # prepaid one hour
    assert SEED.amount_due(50 * MIN, paid) == rub(0)
    assert SEED.amount_due(61 * MIN, paid) == rub(90)  # debt at pickup
    assert SEED.amount_due(181 * MIN, paid) == rub(240)
    assert SEED.amount_due(3 * HOUR, paid) == rub(165)  # top-up to extend to 3 hours
    assert SEED.amount_due(HOUR, rub(500)) == rub(0)  # never negative


def test_free_last_step_covers_for_ever() -> None:
    """First hour 100, then free: 100 paid covers any stay."""
    free_after = tariff([(1, "hours", 10000), (1, "hours", 0)])
    assert free_after.covered_ms(rub(100)) is None
    assert free_after.paid_until(5, rub(100)) is None
    assert free_after.covered_ms(rub(99)) == 0


def test_payment_in_another_currency_is_refused() -> None:
    with pytest.raises(CurrencyMismatch, match="RUB"):
        SEED.covered_ms(Money(100, "USD"))
    with pytest.raises(CurrencyMismatch):
        SEED.amount_due(HOUR, Money(100, "USD"))
    with pytest.raises(ValueError, match="negative"):
        SEED.covered_ms(rub(-1))


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": []}, "at least one step"),
        ({"steps": [{"length": 1, "unit": "hours", "price": -1}]}, "greater than or equal to 0"),
        ({"steps": [{"length": 0, "unit": "hours", "price": 1}]}, "greater than or equal to 1"),
        ({"steps": [{"length": 1, "unit": "days", "price": 1}]}, "'minutes' or 'hours'"),
        ({"steps": [{"length": 1, "unit": "hours", "price": 1.5}]}, "valid integer"),
        ({"currency": "rub"}, "ISO 4217"),
        ({"grace_s": 3600, "max_period_s": 3600}, "shorter than max_period_s"),
        ({"id": "a b"}, "pattern"),
    ],
)
def test_invalid_tariffs(data: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "id": "t",
        "name": "n",
        "currency": "RUB",
        "steps": [{"length": 1, "unit": "hours", "price": 1}],
    }
    with pytest.raises(ValidationError, match=message):
        StepTariff.model_validate({**base, **data})


def test_a_tariff_is_frozen_and_round_trips() -> None:
    """A rental keeps a copy: the dump rebuilds an equal tariff, and it cannot be mutated."""
    assert StepTariff.model_validate(SEED.model_dump(mode="json")) == SEED
    with pytest.raises(ValidationError):
        SEED.grace_s = 10  # type: ignore[misc]


# -- charging -----------------------------------------------------------------------------------
PER_HOUR = ChargingTariff(
    id="c",
    name="charge",
    currency="RUB",
    mode="per_period",
    price=5000,
    period=Period(length=1, unit="hours"),
    cap=12000,
)
FLAT = ChargingTariff(id="f", name="flat", currency="RUB", mode="flat", price=10000)


@pytest.mark.parametrize(
    ("duration_ms", "per_hour", "flat"),
    [(0, 0, 0), (1, 50, 100), (HOUR, 50, 100), (HOUR + 1, 100, 100), (3 * HOUR, 120, 100)],
)
def test_charging_prices(duration_ms: int, per_hour: int, flat: int) -> None:
    assert PER_HOUR.price_for(duration_ms) == rub(per_hour)
    assert FLAT.price_for(duration_ms) == rub(flat)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "per_period"}, "needs a period"),
        ({"mode": "flat", "period": {"length": 1, "unit": "hours"}}, "remove the period"),
        ({"mode": "flat", "cap": 5}, "nothing to cap"),
    ],
)
def test_invalid_charging_tariffs(data: dict[str, Any], message: str) -> None:
    base = {"id": "c", "name": "n", "currency": "RUB", "price": 1}
    with pytest.raises(ValidationError, match=message):
        ChargingTariff.model_validate({**base, **data})


def test_rental_tariff_adds_charging() -> None:
    rental = RentalTariff(storage=SEED, charging=PER_HOUR)
    assert rental.price_for(61 * MIN) == rub(190 + 100)
    assert rental.covered_ms(rub(150)) == HOUR
    assert rental.covered_ms(rub(149)) == 0
    assert rental.amount_due(61 * MIN, rub(150)) == rub(140)
    assert rental.paid_until(7, rental.price_for_period(3 * HOUR)) == 7 + 3 * HOUR


def test_rental_tariff_currencies_must_agree() -> None:
    usd = FLAT.model_copy(update={"currency": "USD"})
    with pytest.raises(ValidationError, match="charging tariff 'f' is in USD"):
        RentalTariff.model_validate({"storage": SEED.model_dump(), "charging": usd.model_dump()})


def test_rental_tariff_free_for_ever_after_saturation() -> None:
    free_after = tariff([(1, "hours", 10000), (1, "hours", 0)])
    rental = RentalTariff(storage=free_after, charging=PER_HOUR)
    assert rental.covered_ms(rub(100 + 120)) is None
    assert rental.covered_ms(rub(100 + 119)) == 2 * HOUR


# -- properties ---------------------------------------------------------------------------------
tariff_st = step_tariff_st(max_steps=6)
charging_st = charging_tariff_st(st.just(FLAT))
duration_st = st.integers(0, 30 * 24 * HOUR)


def started_steps_oracle(t: StepTariff, duration_ms: int) -> int:
    """The sum of every step started, walking step by step (independent of price_for)."""
    if duration_ms <= t.grace_s * 1000:
        return 0
    total, start, i = 0, 0, 0
    while start < duration_ms:
        step = t.steps[min(i, len(t.steps) - 1)]
        total += step.price
        start += step.length * (60_000 if step.unit == "minutes" else 3_600_000)
        i += 1
    return total


@given(tariff_st, duration_st, duration_st)
def test_price_never_falls_as_time_grows(t: StepTariff, a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert t.price_for(short) <= t.price_for(long)


@given(tariff_st, st.integers(0, 4 * 24 * HOUR))
def test_price_is_the_sum_of_started_steps(t: StepTariff, duration_ms: int) -> None:
    assert t.price_for(duration_ms) == Money(started_steps_oracle(t, duration_ms), "RUB")


@given(tariff_st, duration_st)
def test_prepaying_a_period_covers_it(t: StepTariff, period_ms: int) -> None:
    paid = t.price_for_period(period_ms)
    covered = t.covered_ms(paid)
    assert covered is None or covered >= period_ms
    assert t.amount_due(period_ms, paid) == rub(0)
    if covered is not None:
        assert t.price_for(covered) == paid  # the payment covers no more than it pays for
        assert t.price_for(covered + 1) > paid  # one millisecond more needs more money


@given(tariff_st, st.integers(1, 30 * 24))
def test_prepaying_whole_steps_covers_exactly_the_period(t: StepTariff, n_steps: int) -> None:
    """At a step boundary past grace, followed by a paid step, the payment covers exactly it."""
    lengths = [s.duration_ms for s in t.steps]
    boundary = sum(lengths[:n_steps]) + max(0, n_steps - len(lengths)) * lengths[-1]
    next_price = t.steps[min(n_steps, len(t.steps) - 1)].price
    assume(boundary > t.grace_ms and next_price > 0)
    assert t.covered_ms(t.price_for_period(boundary)) == boundary


@given(tariff_st, st.integers(0, 2_000_000))
def test_covered_is_the_longest_affordable_stay(t: StepTariff, amount: int) -> None:
    paid = Money(amount, "RUB")
    covered = t.covered_ms(paid)
    if covered is None:
        assert t.steps[-1].price == 0
        assert t.price_for(30 * 24 * HOUR) <= paid
    else:
        assert t.price_for(covered) <= paid < t.price_for(covered + 1)


@given(tariff_st, charging_st, st.integers(0, 500_000))
def test_rental_covered_is_the_longest_affordable_stay(
    t: StepTariff, charging: ChargingTariff | None, amount: int
) -> None:
    rental = RentalTariff(storage=t, charging=charging)
    paid = Money(amount, "RUB")
    covered = rental.covered_ms(paid)
    if charging is None:
        assert covered == t.covered_ms(paid)
    if covered is None:
        assert rental.price_for(365 * 24 * HOUR) <= paid
    else:
        assert rental.price_for(covered) <= paid < rental.price_for(covered + 1)


@given(tariff_st, charging_st, duration_st, duration_st)
def test_rental_price_never_falls(
    t: StepTariff, charging: ChargingTariff | None, a: int, b: int
) -> None:
    rental = RentalTariff(storage=t, charging=charging)
    short, long = sorted((a, b))
    assert rental.price_for(short) <= rental.price_for(long)
