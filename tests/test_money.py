"""Money: exact minor units, one currency at a time, readable on receipts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.money import (
    DEFAULT_EXPONENT,
    CurrencyMismatch,
    Money,
    check_currency,
    minor_unit_exponent,
)


@pytest.mark.parametrize("code", ["RUB", "USD", "EUR", "JPY", "KWD", "XTS"])
def test_well_formed_codes_are_accepted(code: str) -> None:
    assert check_currency(code) == code
    assert Money(1, code).currency == code


@pytest.mark.parametrize("code", ["rub", "RU", "RUBL", "", "R1B", " RUB", "₽", 643])
def test_malformed_codes_are_rejected_with_the_code_named(code: object) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, code)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [1.0, "100", True, None])
def test_amount_must_be_an_int(amount: object) -> None:
    with pytest.raises(TypeError, match="int of minor units"):
        Money(amount, "RUB")  # type: ignore[arg-type]


def test_exponents() -> None:
    assert minor_unit_exponent("RUB") == 2
    assert minor_unit_exponent("USD") == 2
    assert minor_unit_exponent("EUR") == 2
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("KWD") == 3
    assert minor_unit_exponent("XTS") == DEFAULT_EXPONENT == 2


def test_same_currency_arithmetic_and_order() -> None:
    a, b = Money(10000, "RUB"), Money(9000, "RUB")
    assert a + b == Money(19000, "RUB")
    assert a - b == Money(1000, "RUB")
    assert b - a == Money(-1000, "RUB")
    assert -a == Money(-10000, "RUB")
    assert a * 3 == 3 * a == Money(30000, "RUB")
    assert b < a and b <= a and a > b and a >= b and a <= a
    assert max(a, b) is a


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_different_currencies_never_mix(op) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CurrencyMismatch, match=r"1\.00 RUB and 1\.00 USD: different currencies"):
        op(Money(100, "RUB"), Money(100, "USD"))


def test_different_currencies_are_simply_unequal() -> None:
    assert Money(100, "RUB") != Money(100, "USD")
    assert len({Money(100, "RUB"), Money(100, "USD"), Money(100, "RUB")}) == 2


def test_no_arithmetic_with_bare_numbers() -> None:
    with pytest.raises(TypeError):
        Money(100, "RUB") + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(100, "RUB") * 1.5  # type: ignore[operator]


@pytest.mark.parametrize(
    ("money", "kwargs", "text"),
    [
        (Money(19000, "RUB"), {}, "190.00 RUB"),
        (Money(5, "RUB"), {}, "0.05 RUB"),
        (Money(-150, "USD"), {}, "-1.50 USD"),
        (Money(123456789, "RUB"), {"decimal_sep": ",", "thousands_sep": " "}, "1 234 567,89 RUB"),
        (Money(1500, "JPY"), {}, "1500 JPY"),
        (Money(1500, "KWD"), {}, "1.500 KWD"),
        (Money(19000, "RUB"), {"code": False}, "190.00"),
    ],
)
def test_format(money: Money, kwargs: dict[str, object], text: str) -> None:
    assert money.format(**kwargs) == text  # type: ignore[arg-type]


def test_str_is_the_default_format() -> None:
    assert str(Money(7500, "EUR")) == "75.00 EUR"


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [("190", "RUB", 19000), ("190.5", "RUB", 19050), ("-1.25", "USD", -125), ("7", "JPY", 7)],
)
def test_parse(text: str, currency: str, amount: int) -> None:
    assert Money.parse(text, currency) == Money(amount, currency)


@pytest.mark.parametrize(("text", "currency"), [("1.005", "RUB"), ("1.5", "JPY"), ("1e3", "RUB")])
def test_parse_rejects_what_is_not_exact(text: str, currency: str) -> None:
    with pytest.raises(ValueError, match=text.replace(".", r"\.")):
        Money.parse(text, currency)


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["RUB", "JPY", "KWD"]))
def test_format_parse_round_trip(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    assert Money.parse(money.format(code=False), currency) == money
    assert Money.from_dict(money.to_dict()) == money


def test_from_dict_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="amount"):
        Money.from_dict({"amount": 1})
    with pytest.raises(TypeError):
        Money.from_dict({"amount": 1.5, "currency": "RUB"})
