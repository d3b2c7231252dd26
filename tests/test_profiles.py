"""Storage profiles: validation messages, tariff resolution, JSON and TOML, signed delivery."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.config_file import ConfigError
from contract.messages import Reason, SignedConfig
from contract.money import Money
from contract.pricing import HOUR_MS
from contract.profiles import Profile, ProfileError, load_profile_file
from contract.signing import (
    canonical_json,
    config_hash,
    make_config,
    private_key_from_seed,
    public_key_b64,
    verify_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "profile.example.toml"
KEY = private_key_from_seed(b"\x07" * 32)
TRUSTED = {"console-1": public_key_b64(KEY)}
NOW = 1_767_225_600_000


def hourly(tid: str, *prices: int, currency: str = "RUB") -> dict[str, Any]:
    return {
        "id": tid,
        "name": tid,
        "currency": currency,
        "steps": [{"length": 1, "unit": "hours", "price": p} for p in prices],
    }


def body() -> dict[str, Any]:
    """A valid profile body; tests break one thing at a time."""
    return {
        "name": "test",
        "version": 3,
        "currency": "RUB",
        "tariffs": [hourly("small", 10000, 9000, 7500), hourly("big", 20000), hourly("vip", 1)],
        "charging_tariffs": [
            {
                "id": "phone",
                "name": "phone",
                "currency": "RUB",
                "mode": "per_period",
                "price": 5000,
                "period": {"length": 1, "unit": "hours"},
            },
            {"id": "flat", "name": "flat", "currency": "RUB", "mode": "flat", "price": 100},
        ],
        "cell_groups": [
            {
                "name": "charging",
                "cells": [1, 2],
                "tariff": "small",
                "charging": True,
                "charging_tariff": "phone",
                "overrides": [{"cell": 2, "charging_tariff": "flat"}],
            },
            {"name": "small", "sizes": ["S"], "tariff": "small"},
            {
                "name": "big",
                "sizes": ["M", "L"],
                "tariff": "big",
                "overrides": [{"cell": 9, "tariff": "vip"}],
            },
        ],
        "scenario": {
            "auth": "sms",
            "payment_mode": "prepaid",
            "temporary_access": True,
            "languages": ["en", "ru"],
            "default_language": "ru",
            "storage_limit_s": 72 * 3600,
            "prepaid_periods_s": [3600, 10800, 86400],
        },
    }


PROFILE = Profile.from_body(body())


# -- resolution ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "size", "tariff", "charging"),
    [
        (1, "S", "small", "phone"),  # listed in the charging group
        (1, "L", "small", "phone"),  # listing by id beats size
        (2, "S", "small", "flat"),  # per-cell charging override
        (3, "S", "small", None),  # by size
        (4, "M", "big", None),
        (5, "L", "big", None),
        (9, "M", "vip", None),  # per-cell tariff override beats the group tariff
        (9, "S", "vip", None),  # an overridden cell belongs to the override's group
    ],
)
def test_tariff_resolution(cell: int, size: str, tariff: str, charging: str | None) -> None:
    assert PROFILE.tariff_for_cell(cell, size).id == tariff
    found = PROFILE.charging_tariff_for_cell(cell, size)
    assert (found.id if found else None) == charging
    rental = PROFILE.rental_tariff(cell, size)
    assert rental.storage.id == tariff


def test_uncovered_cells_are_reported() -> None:
    partial = copy.deepcopy(body())
    partial["cell_groups"] = partial["cell_groups"][:2]
    profile = Profile.from_body(partial)
    assert profile.uncovered_cells([(1, "M"), (3, "S"), (4, "M"), (5, "L")]) == [4, 5]
    with pytest.raises(LookupError, match="no cell group covers cell 4"):
        profile.tariff_for_cell(4, "M")
    assert PROFILE.uncovered_cells([(n, s) for n in range(1, 20) for s in "SML"]) == []


def test_rental_price_of_a_charging_cell() -> None:
    assert PROFILE.rental_tariff(1, "S").price_for(HOUR_MS + 1) == Money(19000 + 10000, "RUB")
    assert PROFILE.rental_tariff(2, "S").price_for(HOUR_MS + 1) == Money(19000 + 100, "RUB")


def test_storage_limit_is_the_shorter_of_scenario_and_tariff() -> None:
    assert PROFILE.storage_limit_s(3, "S") == 72 * 3600
    short = copy.deepcopy(body())
    short["tariffs"][0]["max_period_s"] = 3600
    assert Profile.from_body(short).storage_limit_s(3, "S") == 3600
    del short["scenario"]["storage_limit_s"]
    assert Profile.from_body(short).storage_limit_s(4, "M") is None


def test_lookup_of_an_unknown_tariff_id() -> None:
    with pytest.raises(KeyError, match="no tariff 'nope'"):
        PROFILE.tariff("nope")


# -- validation -------------------------------------------------------------------------------
def _set(path: str, value: Any) -> dict[str, Any]:
    data = body()
    *parents, last = path.split("/")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "cell_groups/1/tariff",
            "nope",
            "cell_groups[1].tariff: unknown tariff id 'nope' (known: big, small, vip)",
        ),
        (
            "cell_groups/2/overrides/0/tariff",
            "gone",
            "cell_groups[2].overrides[0].tariff: unknown tariff id 'gone'",
        ),
        (
            "cell_groups/0/charging_tariff",
            "solar",
            "cell_groups[0].charging_tariff: unknown charging tariff id 'solar'",
        ),
        ("tariffs/0/steps", [], "tariffs[0].steps: a tariff needs at least one step"),
        (
            "tariffs/0/steps/1/price",
            -5,
            "tariffs[0].steps[1].price: Input should be greater than or equal to 0",
        ),
        ("cell_groups/1/cells", [2], "cell_groups[1]: cell 2 is already in group 'charging'"),
        ("cell_groups/0/cells", [1, 1], "cell_groups[0].cells[1]: cell 1 is listed twice"),
        ("cell_groups/2/sizes", ["S"], "cell_groups[2].sizes[0]: size S is already in group"),
        (
            "tariffs/1",
            hourly("big", 1, currency="USD"),
            "tariffs[1].currency: tariff 'big' is in USD but the profile is in RUB",
        ),
        ("charging_tariffs/1/currency", "EUR", "charging_tariffs[1].currency: tariff 'flat'"),
        ("currency", "rubles", "currency: not an ISO 4217 currency code"),
        (
            "scenario/default_language",
            "de",
            "scenario.default_language: 'de' is not among languages ['en', 'ru']",
        ),
        (
            "scenario/languages",
            ["en", "en"],
            "scenario.languages[1]: language 'en' is listed twice",
        ),
        ("scenario/languages", ["English"], "scenario.languages[0]: String should match pattern"),
        ("scenario/auth", "email", "scenario.auth: Input should be 'sms' or 'printed_pin'"),
        ("scenario/payment_mode", "credit", "scenario.payment_mode: Input should be 'prepaid'"),
        ("scenario/prepaid_periods_s", [], "scenario.prepaid_periods_s: payment_mode 'prepaid'"),
        ("scenario/prepaid_periods_s", [3600, 3600], "scenario.prepaid_periods_s[1]: periods must"),
        (
            "scenario/prepaid_periods_s",
            [3600, 300 * 3600],
            "scenario.prepaid_periods_s: period 1080000 s is longer than storage_limit_s",
        ),
        ("tariffs/2/id", "small", "tariffs[2].id: duplicate tariff id 'small'"),
        ("cell_groups/2/name", "small", "cell_groups[2].name: duplicate group name 'small'"),
        ("cell_groups/1/sizes", [], "cell_groups[1].sizes: a group needs sizes or cells"),
        (
            "cell_groups/0/charging",
            False,
            "cell_groups[0].charging_tariff: set charging = true to use a charging tariff",
        ),
        (
            "cell_groups/0/charging_tariff",
            _DELETE,
            "cell_groups[0].charging_tariff: a charging group needs a charging_tariff",
        ),
        (
            "cell_groups/2/overrides/0",
            {"cell": 9},
            "cell_groups[2].overrides[0].cell: the override of cell 9 sets neither",
        ),
        (
            "cell_groups/2/overrides/0",
            {"cell": 9, "charging_tariff": "phone"},
            "cell_groups[2].overrides[0].charging_tariff: cell 9 is in a group without charging",
        ),
        (
            "charging_tariffs/0/period",
            _DELETE,
            "charging_tariffs[0].period: mode 'per_period' needs a period",
        ),
        ("version", 0, "version: Input should be greater than or equal to 1"),
        ("version", "2", "version: Input should be a valid integer"),
        ("tariffs/0/grace_s", 1.5, "tariffs[0].grace_s: Input should be a valid integer"),
        ("colour", "red", "colour: unknown key (check the spelling)"),
        ("scenario", _DELETE, "scenario: required key is missing"),
    ],
)
def test_validation_messages_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ProfileError) as exc:
        Profile.from_body(_set(path, value))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_cell_in_two_groups_via_override_is_refused() -> None:
    data = body()
    data["cell_groups"][2]["overrides"].append({"cell": 1, "tariff": "vip"})
    with pytest.raises(ProfileError, match="cell 1 is already in group 'charging'"):
        Profile.from_body(data)


def test_a_cell_overridden_twice_is_refused() -> None:
    data = body()
    data["cell_groups"][2]["overrides"].append({"cell": 9, "tariff": "small"})
    with pytest.raises(ProfileError, match=r"overrides\[1\].cell: cell 9 is overridden twice"):
        Profile.from_body(data)


def test_postpaid_needs_no_periods() -> None:
    data = body()
    data["scenario"].update(payment_mode="postpaid", prepaid_periods_s=[])
    assert Profile.from_body(data).scenario.payment_mode == "postpaid"


def test_not_an_object() -> None:
    with pytest.raises(ProfileError, match="JSON object"):
        Profile.from_body([1, 2])


# -- JSON round trip and signed delivery ------------------------------------------------------
def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _leaves(value)]
    return [node]


def test_json_round_trip_is_equal_and_integer_only() -> None:
    assert {type(leaf) for leaf in _leaves(PROFILE.to_body())} == {str, int, bool}
    text = json.dumps(PROFILE.to_body())
    assert Profile.from_body(json.loads(text)) == PROFILE
    assert Profile.from_body(PROFILE.to_body()).to_body() == PROFILE.to_body()


@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=5),
    st.integers(0, 10**6),
    st.sampled_from(["prepaid", "partial", "postpaid"]),
)
def test_json_round_trip_property(prices: list[int], grace: int, mode: str) -> None:
    data = body()
    data["tariffs"][0]["steps"] = [{"length": 1, "unit": "minutes", "price": p} for p in prices]
    data["tariffs"][0]["grace_s"] = grace
    data["scenario"]["payment_mode"] = mode
    profile = Profile.from_body(data)
    wire = json.loads(canonical_json(profile.to_body()))
    assert Profile.from_body(wire) == profile


def test_profile_signed_as_config_verifies_and_parses_back() -> None:
    signed = make_config(
        "L1", PROFILE.version, PROFILE.to_body(), key_id="console-1", private_key=KEY, now_ms=NOW
    )
    payload = json.dumps(signed).encode()
    assert verify_config(payload, trusted_keys=TRUSTED, locker_id="L1", topic_locker="L1") is None
    cfg = SignedConfig.from_payload(payload)
    assert Profile.from_body(cfg.body) == PROFILE
    assert config_hash(cfg.body) == config_hash(PROFILE.to_body())


def test_a_tampered_profile_fails_verification() -> None:
    signed = make_config(
        "L1", PROFILE.version, PROFILE.to_body(), key_id="console-1", private_key=KEY, now_ms=NOW
    )
    signed["body"]["tariffs"][0]["steps"][0]["price"] = 1  # a cheaper first hour
    assert Profile.from_body(signed["body"])  # still a valid profile ...
    reason = verify_config(signed, trusted_keys=TRUSTED, locker_id="L1")
    assert reason == Reason.BAD_SIGNATURE  # ... but not the one the console signed


# -- the example file and the TOML loader -----------------------------------------------------
def test_example_profile_loads() -> None:
    profile = load_profile_file(EXAMPLE)
    assert profile.currency == "RUB"
    assert profile.scenario.auth == "sms"
    assert profile.scenario.payment_mode == "prepaid"
    assert profile.scenario.temporary_access is True
    assert profile.scenario.languages == ["en", "ru"]
    assert {g.name for g in profile.cell_groups} >= {"small", "medium", "large"}
    charging = [c for c in range(1, 40) if profile.charging_tariff_for_cell(c, "S") is not None]
    assert charging == [1, 2]
    seed = profile.tariff_for_cell(5, "S")
    assert [s.price for s in seed.steps] == [10000, 9000, 7500]
    assert seed.price_for(121 * 60_000) == Money(26500, "RUB")
    assert profile.uncovered_cells([(n, s) for n in range(1, 33) for s in "SML"]) == []
    assert Profile.from_body(json.loads(json.dumps(profile.to_body()))) == profile


def test_example_profile_signs_and_verifies() -> None:
    body_ = load_profile_file(EXAMPLE).to_body()
    signed = make_config("L1", 1, body_, key_id="console-1", private_key=KEY, now_ms=NOW)
    assert verify_config(signed, trusted_keys=TRUSTED, locker_id="L1") is None


def test_loader_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "profile.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace('tariff = "large"', 'tariff = "huge"')
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_profile_file(bad)
    assert str(exc.value) == (
        f"{bad}: cell_groups[3].tariff: unknown tariff id 'huge' (known: large, medium, small, vip)"
    )


def test_loader_nested_errors_name_the_full_path(tmp_path: Path) -> None:
    bad = tmp_path / "profile.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'period = { length = 1, unit = "hours" }\ncap = 20000', "cap = 20000"
    )
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"charging_tariffs\[0\]\.period: mode 'per_period'"):
        load_profile_file(bad)


def test_loader_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such profile file"):
        load_profile_file(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile_file(broken)
