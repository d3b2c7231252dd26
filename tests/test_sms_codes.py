"""Phone confirmation codes: expiry, resend limits, attempt lockout, persistence, phone numbers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from daemon.access.sms_codes import (
    CodePolicy,
    IssueStatus,
    PhoneError,
    SmsCodes,
    VerifyResult,
    normalize_phone,
    secret_digits,
)

PHONE = "+79001234567"
MIN = 60_000


def digits_from(*codes: str) -> Callable[[int], str]:
    """A deterministic random source handing out the given codes in order."""
    it: Iterator[str] = iter(codes)
    return lambda n: next(it)


@pytest.fixture
def codes() -> SmsCodes:
    return SmsCodes(random_digits=digits_from("111111", "222222", "333333", "444444"))


def test_right_code_once(codes: SmsCodes) -> None:
    issued = codes.issue(PHONE, now_ms=0)
    assert issued.status is IssueStatus.ISSUED and issued.code == "111111"
    assert issued.expires_at_ms == 5 * MIN and issued.sends_left == 2
    assert codes.verify(PHONE, " 111 111 ", now_ms=1_000) is VerifyResult.OK
    assert codes.verify(PHONE, "111111", now_ms=2_000) is VerifyResult.NO_CODE  # consumed


def test_wrong_code_then_right(codes: SmsCodes) -> None:
    codes.issue(PHONE, 0)
    assert codes.verify(PHONE, "999999", 1) is VerifyResult.WRONG
    assert codes.verify(PHONE, "abc", 2) is VerifyResult.WRONG
    assert codes.attempts_left(PHONE) == 3
    assert codes.verify(PHONE, "111111", 3) is VerifyResult.OK


def test_no_code(codes: SmsCodes) -> None:
    assert codes.verify(PHONE, "111111", 0) is VerifyResult.NO_CODE


def test_expiry(codes: SmsCodes) -> None:
    codes.issue(PHONE, 0)
    assert codes.verify(PHONE, "111111", 5 * MIN - 1) is VerifyResult.OK
    codes.issue(PHONE, 6 * MIN)
    assert codes.verify(PHONE, "222222", 11 * MIN) is VerifyResult.EXPIRED


def test_resend_spacing_and_limit(codes: SmsCodes) -> None:
    assert codes.issue(PHONE, 0).code == "111111"
    too_soon = codes.issue(PHONE, 29_999)
    assert too_soon.status is IssueStatus.TOO_SOON and too_soon.retry_at_ms == 30_000
    assert too_soon.code is None
    again = codes.issue(PHONE, 30_000)  # the live code again, with a fresh expiry
    assert again.code == "111111" and again.expires_at_ms == 30_000 + 5 * MIN
    assert again.sends_left == 1
    third = codes.issue(PHONE, 10 * MIN)  # the code had expired: a new one
    assert third.code == "222222" and third.sends_left == 0
    refused = codes.issue(PHONE, 11 * MIN)
    assert refused.status is IssueStatus.TOO_MANY_SENDS and refused.retry_at_ms == 60 * MIN
    assert codes.issue(PHONE, 60 * MIN).status is IssueStatus.ISSUED  # the window slid on
    assert codes.issue("+79990000000", 11 * MIN).status is IssueStatus.ISSUED  # per phone


def test_attempts_lockout(codes: SmsCodes) -> None:
    codes.issue(PHONE, 0)
    results = [codes.verify(PHONE, "000000", t) for t in range(5)]
    assert results == [VerifyResult.WRONG] * 4 + [VerifyResult.TOO_MANY_ATTEMPTS]
    assert codes.verify(PHONE, "111111", 10) is VerifyResult.TOO_MANY_ATTEMPTS  # burnt
    assert codes.attempts_left(PHONE) == 0
    fresh = codes.issue(PHONE, 30_000)  # a resend replaces a burnt code
    assert fresh.code == "222222"
    assert codes.verify(PHONE, "111111", 30_001) is VerifyResult.WRONG
    assert codes.verify(PHONE, "222222", 30_002) is VerifyResult.OK


def test_snapshot_round_trip(codes: SmsCodes) -> None:
    codes.issue(PHONE, 0)
    codes.verify(PHONE, "000000", 1)
    saved = json.loads(json.dumps(codes.snapshot()))
    restored = SmsCodes(random_digits=digits_from("999999"))
    restored.restore(saved)
    assert restored.snapshot() == codes.snapshot()
    assert restored.attempts_left(PHONE) == 4
    assert restored.issue(PHONE, 1_000).status is IssueStatus.TOO_SOON
    assert restored.verify(PHONE, "111111", 2_000) is VerifyResult.OK


@pytest.mark.parametrize(
    "snapshot",
    [
        {},
        {"v": 2, "phones": {}},
        {"v": 1, "phones": {"89001234567": {}}},
        {
            "v": 1,
            "phones": {PHONE: {"code": "12ab", "expires_at_ms": 1, "attempts": 0, "sends": []}},
        },
    ],
)
def test_bad_snapshot_changes_nothing(codes: SmsCodes, snapshot: dict) -> None:
    codes.issue(PHONE, 0)
    before = codes.snapshot()
    with pytest.raises(ValueError, match="snapshot is malformed"):
        codes.restore(snapshot)
    assert codes.snapshot() == before


def test_purge_forgets_finished_phones(codes: SmsCodes) -> None:
    codes.issue(PHONE, 0)
    codes.purge(61 * MIN)
    assert codes.snapshot()["phones"] == {}


def test_custom_policy_and_real_random_source() -> None:
    codes = SmsCodes(CodePolicy(digits=4, ttl_ms=1_000, max_attempts=1))
    issued = codes.issue(PHONE, 0)
    assert issued.code is not None and len(issued.code) == 4 and issued.code.isdigit()
    wrong = "0000" if issued.code != "0000" else "1111"
    assert codes.verify(PHONE, wrong, 1) is VerifyResult.TOO_MANY_ATTEMPTS
    assert len(secret_digits(6)) == 6
    with pytest.raises(ValueError, match="6 digits"):
        SmsCodes(random_digits=lambda n: "12").issue(PHONE, 0)


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+7 (900) 123-45-67", None, "+79001234567"),
        ("0049 30 1234567", None, "+49301234567"),
        ("8 900 123 45 67", "7", "+79001234567"),
        ("900.123.45.67", "7", "+79001234567"),
        ("030 1234567", "49", "+49301234567"),
    ],
)
def test_phone_normalised_to_e164(raw: str, country: str | None, expected: str) -> None:
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("+7 900 abc", "only digits"),
        ("+7+9001234567", "only digits"),
        ("89001234567", "country code"),
        ("+7900", "8 to 15"),
        ("+1234567890123456", "8 to 15"),
        ("+0123456789", "never starts with 0"),
    ],
)
def test_bad_phone_rejected_clearly(raw: str, message: str) -> None:
    with pytest.raises(PhoneError, match=message):
        normalize_phone(raw)


def test_codes_keyed_by_normalised_phone() -> None:
    codes = SmsCodes(random_digits=digits_from("123456"), default_country_code="7")
    assert codes.issue("8 (900) 123-45-67", 0).phone == PHONE
    assert codes.verify(PHONE, "123456", 1) is VerifyResult.OK
    with pytest.raises(PhoneError):
        codes.issue("not a phone", 0)


@pytest.mark.parametrize("jump", [5 * 3600_000, -8 * 3600_000])
def test_a_clock_jump_keeps_codes_and_send_limits_as_long_as_they_were(
    codes: SmsCodes, jump: int
) -> None:
    codes.issue(PHONE, 0)
    codes.shift(jump)  # the wall clock stepped by `jump` right after the send
    assert codes.issue(PHONE, jump + 1_000).status is IssueStatus.TOO_SOON  # still 30 s apart
    assert codes.verify(PHONE, "111111", jump + 4 * MIN) is VerifyResult.OK  # still alive
