"""One-time pickup codes and the defence against guessing them, sans-I/O (time passed in).

A code is random digits (6 by default), unique among the locker's live codes and not one of the
last `retired_kept` used ones, stored only as an HMAC-SHA256 under the locker's secret. A code is
derived from the secret and a seed unique to the issue (`derive`: HMAC-SHA256, a PRF, reduced to
digits), so the outbox keeps (seed, attempt) and derives the code again to send it: nothing in
the store holds a plain code, and a crash between issuing and sending loses none. A code opens
only the cell it was issued for, until pickup or expiry (`revoke`); then never again.

Used codes (their keyed hashes, the last `retired_kept`) are not part of `snapshot()`: at 10,000
they are ~640 KB, and the snapshot is stored with every step. The book lists the ones a step used
and forgot (`used_pending`); the caller stores those as documents of their own in the same write
(`daemon/io/store.py`, `used_codes`), marks them stored (`used_stored`) and hands the stored list
back at start (`restore(snap, used=...)`).

**The guessing arithmetic (defaults).** A 6-digit code alone is too weak for a kiosk anyone can
walk up to: with 100 live codes each guess wins with 100/10^6 = 10^-4, so staying under 1 % a
year would allow fewer than 100 wrong entries a year, which honest typos use up. So:

1. *Second factor*: with the code the kiosk asks for the last 4 digits of the recipient's phone
   (as InPost asks for the phone); a recipient without a phone gets a code 4 digits longer
   instead. Either way a credential is 10 digits: 10^10 possibilities.
2. *Growing delays*: after `free_failures` (5) wrong entries within 10 minutes, each next entry
   is refused until 2 s, 4 s, ... (at most 30 s) after the last wrong one. Entries that come
   earlier are refused without being checked, so parallel typing gains nothing.
3. *Daily cap with an alarm*: `daily_cap` (25) wrong entries within any 24 hours pause code entry
   (`code_entry_paused`, an alarm to the console) until the oldest of them is 24 hours old, or
   an operator resumes it (`code_entry_resumed`, recorded).

An attacker therefore gets at most 25 x 366 = 9,150 wrong entries a year. Against 100 live
codes, not knowing the recipients' phones: 9,150 x 100 / 10^10 = 0.009 % a year. Even knowing
every recipient's phone number (each guess then targets one code of 10^6): 9,150 / 10^6 = 0.92 %
a year, still below 1 %. tests/test_parcel_codes.py computes both and also runs a simulated
year of the fastest attacker the guard lets through.

Honest recipients: a typo costs nothing until the 6th wrong entry kiosk-wide in 10 minutes, and
then seconds. A stranger can pause code entry (not open a cell): the alarm calls an operator,
who can resume entry or hand the parcel out with an operator's open; the pause also ends by
itself. That trade, a nuisance instead of a lost parcel, is the one chosen.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from contract.parcels import ParcelsSection
from daemon.fsm.actions import Event

DAY_MS = 24 * 3600_000
YEAR_DAYS = 366  # the most days a year has: the bound must hold for every year


@dataclass(frozen=True)
class CodePolicy:
    """How codes look and how guessing is slowed; times in ms."""

    length: int = 6
    #: Ask for the last 4 digits of the recipient's phone with the code.
    phone_factor: bool = True
    factor_digits: int = 4
    #: Used codes not issued again (their keyed hashes are remembered).
    retired_kept: int = 10_000
    free_failures: int = 5
    window_ms: int = 10 * 60_000
    delay_step_ms: int = 2_000
    max_delay_ms: int = 30_000
    daily_cap: int = 25
    cap_window_ms: int = DAY_MS


class Verdict(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    #: Too soon after the last wrong entry: not checked, try again at `retry_at`.
    WAIT = "wait"
    #: Code entry is paused (daily cap reached) until `retry_at`: not checked. (The wrong entry
    #: that reached the cap answers WRONG, with the pause's end and the alarm.)
    PAUSED = "paused"


@dataclass(frozen=True)
class Check:
    """The answer to one code entry, with events to record (a pause is an alarm)."""

    verdict: Verdict
    cell: int | None = None
    #: A return code: the return it lets drop (the size, hence the cell, is chosen after).
    return_id: str | None = None
    retry_at: int | None = None
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Issued:
    """A new code: `code` is to be sent once and forgotten; `factor` says what to ask with it.
    A derived code (`seed` given) can be derived again from (seed, attempt) to send it."""

    cell: int
    code: str
    factor: bool
    seed: str | None = None
    attempt: int = 0


def code_policy(section: ParcelsSection) -> CodePolicy:
    """The code policy a `parcels` section asks for (the delays keep their defaults)."""
    return CodePolicy(length=section.code_length, phone_factor=section.phone_factor,
                      daily_cap=section.code_daily_cap)


def max_guesses_per_year(policy: CodePolicy) -> int:
    """The most wrong entries the guard lets through in any year (the daily cap binds)."""
    return policy.daily_cap * -(-YEAR_DAYS * DAY_MS // policy.cap_window_ms)


def credential_space(policy: CodePolicy) -> int:
    """Possible credentials: the code, with the phone's last digits or as many extra digits."""
    return 10 ** (policy.length + policy.factor_digits)


def yearly_hit_chance(policy: CodePolicy, live_codes: int, *, phones_known: bool) -> float:
    """Chance that a year of the fastest allowed guessing opens any of `live_codes` cells.

    phones_known: the attacker knows every recipient's phone, so the second factor adds
    nothing and each guess targets one code of 10^length."""
    per_guess = (1 / 10 ** policy.length if phones_known
                 else live_codes / credential_space(policy))
    return 1 - (1 - min(per_guess, 1.0)) ** max_guesses_per_year(policy)


def secret_digits(n: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(n))


@dataclass
class _Live:
    #: The cell a pickup code opens, or 0 for a return code.
    cell: int
    code_key: str
    #: The return a return code is for.
    return_id: str | None = None


@dataclass
class CodeBook:
    """The locker's live codes (keyed hashes only) and the kiosk-wide guessing guard."""

    secret: bytes
    policy: CodePolicy = field(default_factory=CodePolicy)
    random_digits: Callable[[int], str] = secret_digits
    _live: dict[str, _Live] = field(default_factory=dict)
    _by_cell: dict[int, str] = field(default_factory=dict)
    _returns: dict[str, str] = field(default_factory=dict)
    _code_keys: set[str] = field(default_factory=set)
    _retired: deque[str] = field(default_factory=deque)
    _retired_set: set[str] = field(default_factory=set)
    _failures: list[int] = field(default_factory=list)
    _paused_until: int | None = None
    #: Used codes not yet stored, and stored ones forgotten since (see the module's doc).
    _used_new: list[str] = field(default_factory=list)
    _used_gone: list[str] = field(default_factory=list)

    # -- issue and revoke -----------------------------------------------------------------
    def issue(self, cell: int, phone: str | None, seed: str | None = None) -> Issued:
        """A fresh code for `cell` (replacing any it had).

        With a `seed` (unique per issue: the first parcel's id) the code is derived from the
        locker's secret, so the outbox keeps only (seed, attempt) and derives the code again
        when it sends: a crash between issuing and sending loses nothing, and the plain code is
        never stored. Without one it is random and this is the only time it is seen."""
        self.revoke(cell)
        factor = self.policy.phone_factor and phone is not None
        length = self.policy.length + (0 if factor else self.policy.factor_digits)
        code_key, code, attempt = self._fresh(length, seed)
        suffix = _phone_suffix(phone, self.policy.factor_digits) if factor else ""
        cred = self._key("cred", f"{code}|{suffix}")
        self._live[cred] = _Live(cell, code_key)
        self._by_cell[cell] = cred
        self._code_keys.add(code_key)
        return Issued(cell, code, factor, seed, attempt)

    def derive(self, seed: str, attempt: int, factor: bool) -> str:
        """The code `issue(..., seed)` gave on `attempt` (for the outbox to send it)."""
        length = self.policy.length + (0 if factor else self.policy.factor_digits)
        digest = hmac.new(self.secret, f"derive:{seed}:{attempt}".encode(),
                          hashlib.sha256).digest()
        return f"{int.from_bytes(digest, 'big') % 10 ** length:0{length}d}"

    def issue_return(self, return_id: str) -> str:
        """A return code (as long as a code without a phone factor); shown once."""
        code_key, code, _ = self._fresh(self.policy.length + self.policy.factor_digits, None)
        cred = self._key("cred", f"{code}|")
        self._live[cred] = _Live(0, code_key, return_id)
        self._returns[return_id] = cred
        self._code_keys.add(code_key)
        return code

    def revoke_return(self, return_id: str) -> None:
        """The return was dropped (or withdrawn): its code is dead."""
        cred = self._returns.pop(return_id, None)
        if cred is not None:
            self._retire(self._live.pop(cred))

    def revoke(self, cell: int) -> None:
        """The cell's code is used or dead: it never opens anything again."""
        cred = self._by_cell.pop(cell, None)
        if cred is not None:
            self._retire(self._live.pop(cred))

    def _fresh(self, length: int, seed: str | None) -> tuple[str, str, int]:
        """(keyed hash, code, attempt) of digits neither live nor recently used."""
        for attempt in range(1000):
            if seed is None:
                code = self.random_digits(length)
            else:
                code = self.derive(seed, attempt, length == self.policy.length
                                   and self.policy.phone_factor)
            if len(code) != length or not code.isdigit():
                raise ValueError(f"random_digits must return {length} digits, got {code!r}")
            code_key = self._key("code", code)
            if code_key not in self._code_keys and code_key not in self._retired_set:
                return code_key, code, attempt
        raise RuntimeError("no unused code found: the code space is exhausted")

    def _retire(self, live: _Live) -> None:
        self._code_keys.discard(live.code_key)
        if live.code_key in self._retired_set:
            return
        self._retired.append(live.code_key)
        self._retired_set.add(live.code_key)
        self._used_new.append(live.code_key)
        while len(self._retired) > self.policy.retired_kept:
            gone = self._retired.popleft()
            self._retired_set.discard(gone)
            if gone in self._used_new:
                self._used_new.remove(gone)
            else:
                self._used_gone.append(gone)

    def used_pending(self) -> tuple[list[str], list[str]]:
        """(used codes to store, stored ones to drop) since the last `used_stored`."""
        return list(self._used_new), list(self._used_gone)

    def used_stored(self) -> None:
        """The pending used codes are stored (a write that failed leaves them pending)."""
        self._used_new, self._used_gone = [], []

    def asks_factor(self, typed: str) -> bool:
        """Whether the kiosk asks for the phone's last digits after this code: a pickup code of
        the plain length does; a longer one (no phone, or a return code) does not."""
        return self.policy.phone_factor and len("".join(typed.split())) == self.policy.length

    def has_code(self, cell: int) -> bool:
        return cell in self._by_cell

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- entry ----------------------------------------------------------------------------
    def check(self, code: str, factor: str, now_ms: int) -> Check:
        """One entry at the kiosk: the cell it opens, or why not. A right code is not used up
        here (the door may fail to open): `revoke` after the pickup completes."""
        self._forget(now_ms)
        if self._paused_until is not None:
            if now_ms < self._paused_until:
                return Check(Verdict.PAUSED, retry_at=self._paused_until)
            self._paused_until = None
        not_before = self._not_before()
        if not_before is not None and now_ms < not_before:
            return Check(Verdict.WAIT, retry_at=not_before)
        typed = "".join(code.split()) if isinstance(code, str) else ""
        digits = "".join(factor.split()) if isinstance(factor, str) else ""
        live = self._live.get(self._key("cred", f"{typed}|{digits}"))
        if live is not None and live.return_id is not None:
            return Check(Verdict.OK, return_id=live.return_id)
        if live is not None:
            return Check(Verdict.OK, cell=live.cell)
        self._failures.append(now_ms)
        del self._failures[: -self.policy.daily_cap]
        day = [t for t in self._failures if t > now_ms - self.policy.cap_window_ms]
        if len(day) >= self.policy.daily_cap:
            self._paused_until = day[0] + self.policy.cap_window_ms
            event = Event("code_entry_paused", None,
                          {"failures": len(day), "until": self._paused_until, "alarm": True},
                          alarm=True)
            return Check(Verdict.WRONG, retry_at=self._paused_until, events=(event,))
        return Check(Verdict.WRONG, retry_at=self._not_before())

    def resume(self, staff_id: str, now_ms: int) -> list[Event]:
        """An operator lifts a pause (and forgets the failures that caused it)."""
        was = self._paused_until is not None and now_ms < self._paused_until
        self._paused_until, self._failures = None, []
        if not was:
            return []
        return [Event("code_entry_resumed", None, {"staff_id": staff_id})]

    def _not_before(self) -> int | None:
        p = self.policy
        recent = [t for t in self._failures if t > self._failures[-1] - p.window_ms] \
            if self._failures else []
        over = len(recent) - p.free_failures + 1
        if over <= 0:
            return None
        return recent[-1] + min(p.max_delay_ms, over * p.delay_step_ms)

    def _forget(self, now_ms: int) -> None:
        start = now_ms - self.policy.cap_window_ms
        self._failures = [t for t in self._failures if t > start]

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped: delays and a pause last as long as they were meant to."""
        self._failures = [t + delta_ms for t in self._failures]
        if self._paused_until is not None:
            self._paused_until += delta_ms

    def _key(self, kind: str, text: str) -> str:
        return hmac.new(self.secret, f"{kind}:{text}".encode(), hashlib.sha256).hexdigest()

    # -- persistence ----------------------------------------------------------------------
    def snapshot(self, *, with_used: bool = False) -> dict[str, Any]:
        """JSON-ready state: keyed hashes and times only, no code. The used codes (stored on
        their own) only `with_used`: a copy in memory to undo a step with."""
        snap: dict[str, Any] = {
            "v": 1,
            "live": {cred: [lv.cell, lv.code_key, lv.return_id]
                     for cred, lv in self._live.items()},
            "failures": list(self._failures),
            "paused_until": self._paused_until,
        }
        if with_used:
            snap["retired"] = list(self._retired)
            snap["used_pending"] = [list(self._used_new), list(self._used_gone)]
        return snap

    def restore(self, snap: dict[str, Any], used: list[str] | None = None) -> None:
        """Take a snapshot back; a malformed one raises ValueError and changes nothing.

        `used`: the used codes as stored (at start). A snapshot of an older store that still
        holds them (`retired`) has those not stored yet become pending, to be moved out at the
        next write. Without `used`, the snapshot's own (`snapshot(with_used=True)`) are taken."""
        try:
            if snap.get("v") != 1:
                raise ValueError(f"unknown version {snap.get('v')!r}")
            live = {str(c): _Live(int(cell), str(k), None if r is None else str(r))
                    for c, (cell, k, r) in snap["live"].items()}
            in_snap = [str(k) for k in snap.get("retired", ())]
            failures = [int(t) for t in snap["failures"]]
            paused = snap["paused_until"]
            paused = None if paused is None else int(paused)
            pending = snap.get("used_pending") or [[], []]
            new, gone = [str(k) for k in pending[0]], [str(k) for k in pending[1]]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"code book snapshot is malformed: {exc}") from exc
        if used is not None:
            stored = set(used)
            new = [k for k in in_snap if k not in stored]
            retired, gone = deque(k for k in in_snap if k not in stored), []
            retired.extendleft(reversed(used))
        else:
            retired = deque(in_snap)
        self._live, self._retired, self._failures, self._paused_until = (
            live, retired, failures, paused)
        self._used_new, self._used_gone = new, gone
        self._by_cell = {lv.cell: c for c, lv in live.items() if lv.return_id is None}
        self._returns = {lv.return_id: c for c, lv in live.items() if lv.return_id is not None}
        self._code_keys = {lv.code_key for lv in live.values()}
        self._retired_set = set(retired)


def _phone_suffix(phone: str | None, n: int) -> str:
    digits = "".join(ch for ch in phone or "" if ch.isdigit())
    return digits[-n:]
