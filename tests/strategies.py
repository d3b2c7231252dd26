"""Hypothesis strategies for tariffs (contract/pricing.py), shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from contract.pricing import ChargingTariff, Period, Step, StepTariff

UNITS = st.sampled_from(["minutes", "hours"])


def steps_st(max_size: int) -> st.SearchStrategy[list[Step]]:
    """One to `max_size` steps of 1..90 minutes or hours, each 0..500.00."""
    return st.lists(
        st.builds(Step, length=st.integers(1, 90), unit=UNITS, price=st.integers(0, 50_000)),
        min_size=1,
        max_size=max_size,
    )


def step_tariff_st(
    max_steps: int, *, zero_grace_first: bool = False
) -> st.SearchStrategy[StepTariff]:
    """A RUB StepTariff with a grace of 0..3 h (0 as its own alternative: first if asked)."""
    grace = [st.integers(0, 3 * 3600), st.just(0)]
    if zero_grace_first:
        grace.reverse()
    return st.builds(
        StepTariff,
        id=st.just("t"),
        name=st.just("t"),
        currency=st.just("RUB"),
        steps=steps_st(max_steps),
        grace_s=st.one_of(*grace),
    )


def charging_tariff_st(
    *also: st.SearchStrategy[ChargingTariff],
) -> st.SearchStrategy[ChargingTariff | None]:
    """None or a RUB per-period ChargingTariff (maybe capped), or one of `also`."""
    return st.one_of(
        st.none(),
        st.builds(
            ChargingTariff,
            id=st.just("c"),
            name=st.just("c"),
            currency=st.just("RUB"),
            mode=st.just("per_period"),
            price=st.integers(0, 5_000),
            period=st.builds(Period, length=st.integers(1, 90), unit=UNITS),
            cap=st.none() | st.integers(0, 20_000),
        ),
        *also,
    )


def step_tariff(steps: list[tuple[int, str, int]], **extra: Any) -> StepTariff:
    """A RUB tariff from (length, unit, price) triples: the tests' way of writing one."""
    return StepTariff.model_validate(
        {
            "id": "t",
            "name": "test",
            "currency": "RUB",
            "steps": [{"length": n, "unit": u, "price": p} for n, u, p in steps],
            **extra,
        }
    )
