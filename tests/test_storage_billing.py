"""What a storage rental owes (daemon/storage/billing.py): the seed's tariff, modes, extensions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.money import Money
from contract.pricing import (
    HOUR_MS,
    MINUTE_MS,
    ChargingTariff,
    Period,
    RentalTariff,
)
from daemon.storage import billing
from tests.strategies import charging_tariff_st, step_tariff, step_tariff_st

MIN = MINUTE_MS
HOUR = HOUR_MS
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


#: The seed: first hour 100 roubles, second 90, then 75 for every further hour (minor units).
SEED = RentalTariff(storage=step_tariff([(1, "hours", 10000), (1, "hours", 9000),
                                         (1, "hours", 7500)]))
#: Free once the first hour is paid: a payment of 10000 covers any stay.
FREE_AFTER = RentalTariff(storage=step_tariff([(1, "hours", 10000), (1, "hours", 0)]))
PHONE = ChargingTariff(id="c", name="phone", currency="RUB", mode="per_period", price=2000,
                       period=Period(length=1, unit="hours"))


def tenancy(
    *,
    mode: str = "prepaid",
    paid: int = 0,
    started_at: int | None = START,
    limit_ms: int | None = 72 * HOUR,
    tariff: RentalTariff = SEED,
    **extra: Any,
) -> dict[str, Any]:
    """A rental tenancy shaped like StorageService._new_tenancy's, after the door closed."""
    out: dict[str, Any] = {
        "id": "t-1",
        "kind": "rental",
        "mode": mode,
        "tariff": tariff.model_dump(mode="json"),
        "currency": tariff.currency,
        "paid": paid,
        "payments": [],
        "waived": 0,
        "period_ms": None,
        "limit_ms": limit_ms,
        "due_after_ms": billing.due_after_ms(tariff, mode, paid, limit_ms),
        "charging": tariff.charging is not None,
        "auth": "printed_pin",
        "language": "en",
        "rental_id": "r-1",
        "secret": {"pin": "123456"},
    }
    if started_at is not None:
        out["started_at"] = started_at
    out.update(extra)
    return out


# -- bill ---------------------------------------------------------------------------------------
def test_tariff_round_trips_through_the_tenancy() -> None:
    assert billing.tariff_of(tenancy()) == SEED
    assert billing.tariff_of(tenancy(tariff=SEED.model_copy(update={"charging": PHONE}))) \
        .charging == PHONE


@pytest.mark.parametrize(
    ("elapsed", "price"),
    [(0, 0), (1, 10000), (60 * MIN, 10000), (61 * MIN, 19000), (121 * MIN, 26500),
     (181 * MIN, 34000)],
)
def test_bill_prices_the_time_elapsed_since_the_start(elapsed: int, price: int) -> None:
    bill = billing.bill(tenancy(paid=10000), START + elapsed)
    assert bill.elapsed_ms == elapsed
    assert bill.price == price
    assert bill.paid == 10000 and bill.waived == 0
    assert bill.due == max(0, price - 10000)
    assert bill.currency == "RUB"
    assert bill.paid_until == START + 60 * MIN


def test_bill_is_never_negative_before_the_start() -> None:
    bill = billing.bill(tenancy(paid=10000), START - 5 * HOUR)
    assert bill.elapsed_ms == 0 and bill.price == 0 and bill.due == 0


def test_bill_is_frozen_once_billing_stopped() -> None:
    t = tenancy(paid=10000, billing_stopped_at=START + 61 * MIN)
    later = billing.bill(t, START + 30 * HOUR)
    assert later.elapsed_ms == 61 * MIN
    assert later.price == 19000 and later.due == 9000
    # Before the stop the clock still runs from the start.
    assert billing.bill(t, START + 30 * MIN).elapsed_ms == 30 * MIN
    assert billing.elapsed_ms(t, START + 61 * MIN) == 61 * MIN


def test_stop_before_the_start_bills_nothing() -> None:
    t = tenancy(paid=0, billing_stopped_at=START - MIN)
    assert billing.bill(t, START + HOUR).elapsed_ms == 0


@pytest.mark.parametrize(("waived", "due"), [(0, 9000), (4000, 5000), (9000, 0), (20000, 0)])
def test_due_is_price_minus_paid_minus_waived_never_negative(waived: int, due: int) -> None:
    bill = billing.bill(tenancy(paid=10000, waived=waived), START + 61 * MIN)
    assert bill.waived == waived
    assert bill.due == due


def test_overpaid_owes_nothing() -> None:
    assert billing.bill(tenancy(paid=50000), START + 61 * MIN).due == 0


def test_postpaid_bill_has_no_paid_until_and_owes_everything() -> None:
    bill = billing.bill(tenancy(mode="postpaid"), START + 61 * MIN)
    assert bill.paid_until is None
    assert bill.due == 19000


def test_bill_with_charging_adds_the_charging_price() -> None:
    rental = SEED.model_copy(update={"charging": PHONE})
    bill = billing.bill(tenancy(tariff=rental, mode="postpaid"), START + 61 * MIN)
    assert bill.price == 19000 + 2 * 2000


def test_bill_to_dict_and_money() -> None:
    bill = billing.bill(tenancy(paid=10000), START + 61 * MIN)
    assert bill.to_dict() == {
        "currency": "RUB", "elapsed_ms": 61 * MIN, "price": 19000, "paid": 10000,
        "waived": 0, "due": 9000, "paid_until": START + 60 * MIN,
    }
    assert bill.money(bill.due) == Money(9000, "RUB")


def test_missing_paid_and_waived_count_as_zero() -> None:
    t = tenancy(mode="postpaid")
    del t["paid"], t["waived"]
    bill = billing.bill(t, START + MIN)
    assert (bill.paid, bill.waived, bill.due) == (0, 0, 10000)


@pytest.mark.parametrize("mode", ["prepaid", "partial"])
def test_missing_paid_counts_as_zero_in_prepaid_modes_too(mode: str) -> None:
    t = tenancy(mode=mode)
    del t["paid"]
    bill = billing.bill(t, START + MIN)
    assert (bill.paid, bill.due, bill.paid_until) == (0, 10000, START)


# -- paid_until ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("paid", "until"),
    [(0, START), (9999, START), (10000, START + HOUR), (19000, START + 2 * HOUR),
     (26500, START + 3 * HOUR), (34000, START + 4 * HOUR)],
)
def test_paid_until_is_the_end_of_the_last_step_paid_in_full(paid: int, until: int) -> None:
    assert billing.paid_until(tenancy(paid=paid)) == until
    assert billing.paid_until(tenancy(mode="partial", paid=paid)) == until


def test_paid_until_is_none_for_postpaid_unstarted_or_paid_for_ever() -> None:
    assert billing.paid_until(tenancy(mode="postpaid", paid=10000)) is None
    assert billing.paid_until(tenancy(started_at=None, paid=10000)) is None
    assert billing.paid_until(tenancy(tariff=FREE_AFTER, paid=10000)) is None
    assert billing.paid_until(tenancy(tariff=FREE_AFTER, paid=9999)) == START


# -- due_after_ms -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["prepaid", "partial"])
@pytest.mark.parametrize(
    ("paid", "limit", "after"),
    [
        (10000, 72 * HOUR, HOUR),  # the paid time is shorter
        (19000, 72 * HOUR, 2 * HOUR),
        (26500, 90 * MIN, 90 * MIN),  # the limit is shorter
        (10000, HOUR, HOUR),  # equal
        (10000, None, HOUR),  # no limit: the paid time alone
        (0, 72 * HOUR, 0),  # nothing paid: nothing covered
    ],
)
def test_prepaid_and_partial_are_due_at_the_sooner_of_paid_time_and_limit(
    mode: str, paid: int, limit: int | None, after: int
) -> None:
    assert billing.due_after_ms(SEED, mode, paid, limit) == after


@pytest.mark.parametrize("paid", [0, 10000, 1_000_000])
def test_postpaid_is_due_at_the_limit_only(paid: int) -> None:
    assert billing.due_after_ms(SEED, "postpaid", paid, 72 * HOUR) == 72 * HOUR
    assert billing.due_after_ms(SEED, "postpaid", paid, None) is None


def test_due_after_is_none_when_paid_for_ever_and_no_limit() -> None:
    assert billing.due_after_ms(FREE_AFTER, "prepaid", 10000, None) is None
    assert billing.due_after_ms(FREE_AFTER, "prepaid", 10000, 5 * HOUR) == 5 * HOUR


# -- prepayment ---------------------------------------------------------------------------------
@pytest.mark.parametrize("period", [None, HOUR, 24 * HOUR])
def test_postpaid_prepays_nothing(period: int | None) -> None:
    assert billing.prepayment(SEED, "postpaid", period) == 0


@pytest.mark.parametrize("mode", ["prepaid", "partial"])
@pytest.mark.parametrize(
    ("period", "amount"), [(HOUR, 10000), (61 * MIN, 19000), (2 * HOUR, 19000),
                           (3 * HOUR, 26500), (24 * HOUR, 26500 + 21 * 7500)],
)
def test_prepaid_and_partial_pay_the_period(mode: str, period: int, amount: int) -> None:
    assert billing.prepayment(SEED, mode, period) == amount


@pytest.mark.parametrize("mode", ["prepaid", "partial"])
def test_prepaid_and_partial_need_a_period(mode: str) -> None:
    with pytest.raises(ValueError, match="needs a period"):
        billing.prepayment(SEED, mode, None)


# -- extension_quote ----------------------------------------------------------------------------
def test_extending_an_overdue_rental_pays_the_debt_then_the_period() -> None:
    """The seed's example: prepaid 1 h, 61 min elapsed, extended by 1 h."""
    t = tenancy(mode="partial", paid=10000)
    assert billing.extension_quote(t, HOUR, START + 61 * MIN) == (16500, 121 * MIN)


@pytest.mark.parametrize("elapsed", [0, 1, 30 * MIN, 60 * MIN])
def test_extending_before_the_paid_time_ran_out_counts_from_its_end(elapsed: int) -> None:
    t = tenancy(mode="partial", paid=10000)
    assert billing.extension_quote(t, HOUR, START + elapsed) == (9000, 120 * MIN)
    assert billing.extension_quote(t, 2 * HOUR, START + elapsed) == (16500, 180 * MIN)


def test_the_storage_guides_extension_example() -> None:
    """docs/storage.md: prepaid 1 h, 61 min old, extended by 1 h: pays 90 + 75 and is then paid
    to the end of the last step it paid (180 min), not to the 121 min it asked for."""
    t = tenancy(paid=10000)
    top_up, asked = billing.extension_quote(t, HOUR, START + 61 * MIN)
    assert (top_up, asked) == (9000 + 7500, 121 * MIN)
    assert billing.due_at_after_payment(t, 10000 + top_up) == START + 180 * MIN


def test_extension_of_a_stopped_rental_counts_from_the_stop() -> None:
    t = tenancy(mode="partial", paid=10000, billing_stopped_at=START + 90 * MIN)
    assert billing.extension_quote(t, HOUR, START + 10 * HOUR) == (16500, 150 * MIN)


def test_paying_the_quote_covers_at_least_the_new_length() -> None:
    t = tenancy(mode="partial", paid=10000)
    top_up, target = billing.extension_quote(t, HOUR, START + 61 * MIN)
    due_at = billing.due_at_after_payment(t, 10000 + top_up)
    # 26500 pays three whole hours: the client gets the rest of the step it paid for.
    assert due_at == START + 3 * HOUR
    assert due_at is not None and due_at >= START + target


# -- due_at_after_payment -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "paid", "limit", "due_at"),
    [
        ("partial", 19000, 72 * HOUR, START + 2 * HOUR),
        ("prepaid", 26500, 72 * HOUR, START + 3 * HOUR),
        ("partial", 26500, 150 * MIN, START + 150 * MIN),  # the limit still holds
        ("partial", 19000, None, START + 2 * HOUR),
        ("postpaid", 19000, 72 * HOUR, START + 72 * HOUR),
        ("postpaid", 19000, None, None),
    ],
)
def test_due_at_after_payment(mode: str, paid: int, limit: int | None, due_at: int | None) -> None:
    t = tenancy(mode=mode, paid=10000, limit_ms=limit)
    assert billing.due_at_after_payment(t, paid) == due_at


def test_due_at_after_payment_is_none_when_paid_for_ever_without_limit() -> None:
    t = tenancy(tariff=FREE_AFTER, paid=0, limit_ms=None)
    assert billing.due_at_after_payment(t, 10000) is None
    assert billing.due_at_after_payment(t, 5000) == START


# -- properties ---------------------------------------------------------------------------------
storage_st = step_tariff_st(max_steps=5, zero_grace_first=True)
charging_st = charging_tariff_st()
rental_st = st.builds(RentalTariff, storage=storage_st, charging=charging_st)
mode_st = st.sampled_from(billing.PAYMENT_MODES)
amount_st = st.integers(0, 500_000)
offset_st = st.integers(-2 * HOUR, 10 * 24 * HOUR)  # now relative to the start
limit_st = st.none() | st.integers(1, 10 * 24 * HOUR)


@given(rental_st, mode_st, amount_st, amount_st, offset_st, offset_st)
def test_due_never_falls_as_time_grows(
    rental: RentalTariff, mode: str, paid: int, waived: int, a: int, b: int
) -> None:
    t = tenancy(tariff=rental, mode=mode, paid=paid, waived=waived)
    early, late = sorted((a, b))
    before, after = billing.bill(t, START + early), billing.bill(t, START + late)
    assert 0 <= before.elapsed_ms <= after.elapsed_ms
    assert before.price <= after.price
    assert 0 <= before.due <= after.due


@given(rental_st, mode_st, amount_st, offset_st)
def test_paying_the_due_leaves_nothing_due_at_that_instant(
    rental: RentalTariff, mode: str, paid: int, offset: int
) -> None:
    t = tenancy(tariff=rental, mode=mode, paid=paid)
    due = billing.bill(t, START + offset).due
    settled = billing.bill({**t, "paid": paid + due}, START + offset)
    assert settled.due == 0
    assert settled.price <= settled.paid


@given(rental_st, mode_st, amount_st, offset_st, offset_st)
def test_a_waiver_owes_nothing_ever_after(
    rental: RentalTariff, mode: str, paid: int, at: int, later: int
) -> None:
    """As StorageService.waive books it: the due is waived and the clock stops."""
    t = tenancy(tariff=rental, mode=mode, paid=paid)
    now = START + at
    bill = billing.bill(t, now)
    waived = {**t, "waived": bill.waived + bill.due, "billing_stopped_at": now, "due_at": None}
    assert billing.bill(waived, now).due == 0
    assert billing.bill(waived, now + abs(later)).due == 0


@given(rental_st, mode_st, amount_st, limit_st)
def test_due_after_is_the_sooner_of_paid_time_and_limit(
    rental: RentalTariff, mode: str, paid: int, limit: int | None
) -> None:
    after = billing.due_after_ms(rental, mode, paid, limit)
    covered = None if mode == "postpaid" else rental.covered_ms(Money(paid, "RUB"))
    expected = [x for x in (covered, limit) if x is not None]
    assert after == (min(expected) if expected else None)
    t = tenancy(tariff=rental, mode=mode, paid=0, limit_ms=limit)
    at = billing.due_at_after_payment(t, paid)
    assert at == (None if after is None else START + after)


@given(rental_st, st.integers(1, 48 * HOUR))
def test_prepaying_a_period_covers_it(rental: RentalTariff, period: int) -> None:
    amount = billing.prepayment(rental, "prepaid", period)
    t = tenancy(tariff=rental, paid=amount)
    assert billing.bill(t, START + period).due == 0
    after = billing.due_after_ms(rental, "prepaid", amount, None)
    assert after is None or after >= period


@given(rental_st, amount_st, offset_st, st.integers(1, 48 * HOUR))
def test_paying_an_extension_quote_covers_now_and_the_period(
    rental: RentalTariff, paid: int, offset: int, period: int
) -> None:
    t = tenancy(tariff=rental, mode="partial", paid=paid, limit_ms=None)
    now = START + offset
    top_up, target = billing.extension_quote(t, period, now)
    assert top_up >= 0
    assert target >= billing.elapsed_ms(t, now) + period
    extended = {**t, "paid": paid + top_up}
    assert billing.bill(extended, now).due == 0
    assert billing.bill(extended, START + target).due == 0
    due_at = billing.due_at_after_payment(t, paid + top_up)
    assert due_at is None or due_at >= START + target
