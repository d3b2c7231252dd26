"""Phone confirmation codes, sans-I/O: issue, resend, verify; time is passed in, nothing is sent.

The daemon asks ``issue`` for a code, sends it with its notifier, and feeds the client's input to
``verify``. Limits make guessing useless: a code expires (5 min), a phone gets at most 3 sends an
hour at least 30 s apart, and 5 wrong tries burn the code. A resend repeats the live code (an SMS
that arrives late still works) with a fresh expiry; an expired or burnt code is replaced.
Codes are compared in constant time. ``snapshot``/``restore`` carry the state across restarts;
the snapshot holds live codes, so it belongs in the daemon's private store only.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

_PHONE_CHARS = re.compile(r"^\+?[\d\s\-().]+$")


class PhoneError(ValueError):
    """The phone number cannot be turned into E.164; the message says what to fix."""


def normalize_phone(raw: str, default_country_code: str | None = None) -> str:
    """E.164 form (``+79001234567``) of a number typed by a person.

    Spaces, dashes, dots and brackets are dropped; ``00`` is read as ``+``. A number without
    ``+`` is national: it needs ``default_country_code`` (digits, e.g. "7"), and its trunk
    prefix ("0", or "8" for +7) is dropped.
    """
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise PhoneError("phone number is empty")
    if not _PHONE_CHARS.match(text):
        raise PhoneError(
            f"phone number {raw!r} may contain only digits, spaces, dashes, brackets and a "
            "leading +"
        )
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        national = None
    elif digits.startswith("00"):
        digits, national = digits[2:], None
    else:
        national = digits
    if national is not None:
        if not default_country_code:
            raise PhoneError(
                f"phone number {raw!r} needs the country code: write it as +<country><number>, "
                "e.g. +79001234567"
            )
        trunk = "8" if default_country_code == "7" and len(national) == 11 else "0"
        if national.startswith(trunk):
            national = national[1:]
        digits = default_country_code + national
    if digits.startswith("0"):
        raise PhoneError(f"phone number {raw!r}: a country code never starts with 0")
    if not 8 <= len(digits) <= 15:
        raise PhoneError(
            f"phone number {raw!r} has {len(digits)} digits with the country code; "
            "E.164 numbers have 8 to 15"
        )
    return "+" + digits


@dataclass(frozen=True)
class CodePolicy:
    """Limits of the confirmation flow; times in milliseconds."""

    digits: int = 6
    ttl_ms: int = 5 * 60_000
    max_sends: int = 3
    send_window_ms: int = 60 * 60_000
    resend_gap_ms: int = 30_000
    max_attempts: int = 5


class IssueStatus(StrEnum):
    ISSUED = "issued"
    TOO_SOON = "too_soon"
    TOO_MANY_SENDS = "too_many_sends"


class VerifyResult(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NO_CODE = "no_code"


@dataclass(frozen=True)
class Issue:
    """Answer to ``issue``: the code to send, or when sending becomes possible again."""

    status: IssueStatus
    phone: str
    code: str | None = None
    expires_at_ms: int | None = None
    retry_at_ms: int | None = None
    sends_left: int = 0


@dataclass(frozen=True)
class _Entry:
    code: str | None
    expires_at_ms: int
    attempts: int = 0
    sends: tuple[int, ...] = field(default=())


def secret_digits(n: int) -> str:
    """``n`` random decimal digits from the operating system's CSPRNG."""
    return "".join(str(secrets.randbelow(10)) for _ in range(n))


class SmsCodes:
    """Confirmation codes for many phones; ``random_digits`` is injectable for tests."""

    def __init__(
        self,
        policy: CodePolicy | None = None,
        *,
        random_digits: Callable[[int], str] = secret_digits,
        default_country_code: str | None = None,
    ) -> None:
        self.policy = policy or CodePolicy()
        self.random_digits = random_digits
        self.default_country_code = default_country_code
        self._entries: dict[str, _Entry] = {}

    def phone(self, raw: str) -> str:
        """The E.164 form this instance keys codes by (raises ``PhoneError``)."""
        return normalize_phone(raw, self.default_country_code)

    def issue(self, raw_phone: str, now_ms: int) -> Issue:
        """A code to send now (the live one again, or a new one) unless a limit says wait."""
        phone = self.phone(raw_phone)
        self.purge(now_ms)
        p = self.policy
        entry = self._entries.get(phone)
        sends = tuple(t for t in entry.sends if t > now_ms - p.send_window_ms) if entry else ()
        if len(sends) >= p.max_sends:
            return Issue(IssueStatus.TOO_MANY_SENDS, phone, retry_at_ms=sends[0] + p.send_window_ms)
        if sends and now_ms < sends[-1] + p.resend_gap_ms:
            return Issue(
                IssueStatus.TOO_SOON,
                phone,
                retry_at_ms=sends[-1] + p.resend_gap_ms,
                sends_left=p.max_sends - len(sends),
            )
        live = (
            entry is not None
            and entry.code is not None
            and now_ms < entry.expires_at_ms
            and entry.attempts < p.max_attempts
        )
        if live and entry is not None:
            new = replace(entry, expires_at_ms=now_ms + p.ttl_ms, sends=(*sends, now_ms))
        else:
            code = self.random_digits(p.digits)
            if len(code) != p.digits or not code.isdigit():
                raise ValueError(f"random_digits must return {p.digits} digits, got {code!r}")
            new = _Entry(code, now_ms + p.ttl_ms, 0, (*sends, now_ms))
        self._entries[phone] = new
        return Issue(
            IssueStatus.ISSUED,
            phone,
            new.code,
            new.expires_at_ms,
            sends_left=p.max_sends - len(new.sends),
        )

    def verify(self, raw_phone: str, code: str, now_ms: int) -> VerifyResult:
        """Check the client's input; a right code is consumed, a wrong one costs an attempt."""
        phone = self.phone(raw_phone)
        entry = self._entries.get(phone)
        if entry is None or entry.code is None:
            return VerifyResult.NO_CODE
        if entry.attempts >= self.policy.max_attempts:
            return VerifyResult.TOO_MANY_ATTEMPTS
        if now_ms >= entry.expires_at_ms:
            return VerifyResult.EXPIRED
        typed = re.sub(r"\s", "", code) if isinstance(code, str) else ""
        if hmac.compare_digest(typed.encode(), entry.code.encode()):
            # Confirmed: the code is gone, the send history stays for the rate limit.
            self._entries[phone] = replace(entry, code=None)
            return VerifyResult.OK
        attempts = entry.attempts + 1
        self._entries[phone] = replace(entry, attempts=attempts)
        if attempts >= self.policy.max_attempts:
            return VerifyResult.TOO_MANY_ATTEMPTS
        return VerifyResult.WRONG

    def attempts_left(self, raw_phone: str) -> int:
        entry = self._entries.get(self.phone(raw_phone))
        if entry is None or entry.code is None:
            return 0
        return max(0, self.policy.max_attempts - entry.attempts)

    def purge(self, now_ms: int) -> None:
        """Forget phones whose code is dead and whose sends no longer count."""
        window_start = now_ms - self.policy.send_window_ms
        for phone, entry in list(self._entries.items()):
            code_dead = entry.code is None or now_ms >= entry.expires_at_ms
            if code_dead and all(t <= window_start for t in entry.sends):
                del self._entries[phone]

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped: codes live and sends count as long as they were meant to."""
        self._entries = {
            phone: replace(e, expires_at_ms=e.expires_at_ms + delta_ms,
                           sends=tuple(t + delta_ms for t in e.sends))
            for phone, e in self._entries.items()
        }

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (contains live codes: store it privately)."""
        return {
            "v": 1,
            "phones": {
                phone: {
                    "code": e.code,
                    "expires_at_ms": e.expires_at_ms,
                    "attempts": e.attempts,
                    "sends": list(e.sends),
                }
                for phone, e in self._entries.items()
            },
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the state with a snapshot's; a malformed one is refused and changes nothing."""
        try:
            if snapshot.get("v") != 1:
                raise ValueError(f"unknown snapshot version {snapshot.get('v')!r}")
            entries = {}
            for phone, raw in snapshot["phones"].items():
                if normalize_phone(phone) != phone:
                    raise ValueError(f"phone {phone!r} is not in E.164 form")
                code = raw["code"]
                if code is not None and not (isinstance(code, str) and code.isdigit()):
                    raise ValueError(f"code of {phone} is not digits")
                entries[phone] = _Entry(
                    code,
                    int(raw["expires_at_ms"]),
                    int(raw["attempts"]),
                    tuple(int(t) for t in raw["sends"]),
                )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"SMS code snapshot is malformed: {exc}") from exc
        self._entries = entries
