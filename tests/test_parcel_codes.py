"""One-time pickup codes (daemon/parcels/codes.py): keyed hashes only, unique, one cell, never
again after use; and the guessing guard, with the yearly arithmetic the docstring states."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.parcels.codes import (
    CodeBook,
    CodePolicy,
    Verdict,
    max_guesses_per_year,
    yearly_hit_chance,
)

SECRET = b"locker-secret-for-tests"
PHONE = "+4915123456789"
DAY = 24 * 3600_000


def book(**policy: int) -> CodeBook:
    return CodeBook(SECRET, CodePolicy(**policy))  # type: ignore[arg-type]


def test_a_code_opens_its_own_cell_with_the_phone_digits_and_nothing_is_stored_in_clear() -> None:
    codes = book()
    issued = codes.issue(7, PHONE)
    assert issued.factor and len(issued.code) == 6 and issued.code.isdigit()
    assert codes.check(issued.code, "6789", 0).cell == 7
    assert codes.check(issued.code, "6788", 1).verdict is Verdict.WRONG
    assert codes.check(issued.code, "", 2).verdict is Verdict.WRONG
    snap = json.dumps(codes.snapshot())
    assert issued.code not in snap and "6789" not in snap
    # A recipient without a phone gets 4 more digits instead of the second factor.
    long = codes.issue(8, None)
    assert not long.factor and len(long.code) == 10
    assert codes.check(long.code, "", 3).cell == 8


def test_a_used_code_never_opens_again_and_is_not_issued_again() -> None:
    codes = book()
    issued = codes.issue(3, PHONE)
    codes.revoke(3)  # picked up
    assert codes.check(issued.code, "6789", 0).verdict is Verdict.WRONG
    # The same digits come up again at random: the next code is a different one.
    draws = iter([issued.code, issued.code, "123456"])
    rigged = CodeBook(SECRET, random_digits=lambda n: next(draws))
    rigged.issue(3, PHONE)
    rigged.revoke(3)
    assert rigged.issue(4, PHONE).code == "123456"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["issue", "revoke"]), st.integers(1, 12)),
                min_size=1, max_size=60), st.integers(0, 2**32))
def test_live_codes_are_unique_open_only_their_cell_and_used_ones_never_work(
    steps: list[tuple[str, int]], seed: int
) -> None:
    rnd = random.Random(seed)
    # Two digits only, so collisions are frequent and uniqueness is really exercised.
    codes = CodeBook(SECRET, CodePolicy(length=2, factor_digits=0, phone_factor=False,
                                        retired_kept=20, free_failures=10**9, daily_cap=10**9),
                     random_digits=lambda n: "".join(rnd.choice("0123456789") for _ in range(n)))
    live: dict[int, str] = {}
    used: list[str] = []
    for op, cell in steps:
        if op == "issue":
            if cell in live:
                used.append(live[cell])
            live[cell] = codes.issue(cell, None).code
        elif cell in live:
            codes.revoke(cell)
            used.append(live.pop(cell))
        assert len(set(live.values())) == len(live)  # no two live codes equal
        for c, code in live.items():
            assert codes.check(code, "", 0).cell == c  # each opens only its own cell
        for code in used:
            if code not in live.values():
                assert codes.check(code, "", 0).verdict is Verdict.WRONG


def test_a_derived_code_comes_back_from_seed_and_attempt_and_stays_unique() -> None:
    codes = CodeBook(SECRET, CodePolicy(length=2, factor_digits=1, retired_kept=10,
                                        free_failures=10**9, daily_cap=10**9))
    seen: set[str] = set()
    for n in range(60):
        phone = PHONE if n % 2 else None
        issued = codes.issue(n, phone, seed=f"parcel-{n}")
        assert issued.code not in seen  # unique among live codes (all 60 stay live)
        seen.add(issued.code)
        assert codes.derive(f"parcel-{n}", issued.attempt, issued.factor) == issued.code
        assert len(issued.code) == (2 if phone else 3)
    # Collisions are frequent in 100 two-digit codes: a later attempt is derived instead.
    assert any(codes.issue(100 + n, PHONE, seed=f"x{n}").attempt > 0 for n in range(20))
    # Another locker's secret derives other codes from the same seed.
    other = CodeBook(b"another-locker", CodePolicy(length=6))
    mine = CodeBook(SECRET, CodePolicy(length=6))
    assert {other.derive(f"p{i}", 0, True) for i in range(20)} != {
        mine.derive(f"p{i}", 0, True) for i in range(20)}


def test_growing_delays_then_a_pause_with_an_alarm_and_an_operator_resumes() -> None:
    codes = book()
    issued = codes.issue(1, PHONE)
    now = 0
    for _ in range(5):  # honest typos cost nothing at first
        check = codes.check("000000", "0000", now)
        assert check.verdict is Verdict.WRONG
        assert check.retry_at is None or check.retry_at == now + 2_000
    # Too soon after a wrong one: refused unchecked, even the right code.
    assert codes.check(issued.code, "6789", now + 1).verdict is Verdict.WAIT
    wrong = 5
    events = []
    while True:
        check = codes.check("000000", "0000", now)
        if check.verdict is Verdict.WAIT:
            assert check.retry_at is not None and check.retry_at - now <= 30_000
            now = check.retry_at
            continue
        assert check.verdict is Verdict.WRONG
        wrong += 1
        events.extend(check.events)
        if check.events:
            break
    assert wrong == 25
    assert [e.type for e in events] == ["code_entry_paused"]
    assert events[0].alarm and events[0].data["failures"] == 25
    paused = codes.check(issued.code, "6789", now + 60_000)
    assert paused.verdict is Verdict.PAUSED and paused.retry_at == check.retry_at
    [resumed] = codes.resume("op1", now + 60_000)
    assert resumed.type == "code_entry_resumed"
    assert codes.check(issued.code, "6789", now + 60_001).cell == 1


def test_the_yearly_arithmetic_of_the_defaults() -> None:
    policy = CodePolicy()
    assert max_guesses_per_year(policy) == 25 * 366 == 9_150
    blind = yearly_hit_chance(policy, 100, phones_known=False)
    targeted = yearly_hit_chance(policy, 100, phones_known=True)
    assert blind < 0.0001  # 0.009 %
    assert targeted < 0.01  # 0.92 %: below 1 % even knowing every recipient's phone
    # The code alone would not do: a second factor (or a longer code) is needed.
    alone = CodePolicy(phone_factor=False, factor_digits=0)
    assert yearly_hit_chance(alone, 100, phones_known=False) > 0.5


def test_a_simulated_year_of_the_fastest_attacker_gets_no_more_than_the_bound() -> None:
    codes = book()
    for cell in range(1, 101):
        codes.issue(cell, f"+49151000{cell:05d}")
    now, checked = 0, 0
    year = 365 * DAY
    guess = 0
    while now < year:
        check = codes.check(f"{guess % 10**6:06d}", "0000", now)
        if check.verdict in (Verdict.WAIT, Verdict.PAUSED):
            assert check.retry_at is not None and check.retry_at > now
            now = check.retry_at
            continue
        checked += 1
        guess += 1
        assert check.verdict is Verdict.WRONG or check.cell is not None
    assert 25 * 364 <= checked <= max_guesses_per_year(CodePolicy())  # the bound is tight


def test_honest_typos_at_a_busy_locker_never_pause_or_delay_code_entry() -> None:
    """100 pickups a day over 12 hours, one in ten with a typo first, for 60 days."""
    rnd = random.Random(7)
    codes = book()
    cell, waits, pauses = 0, 0, 0
    for day in range(60):
        times = sorted(rnd.randrange(12 * 3600_000) for _ in range(100))
        for t in times:
            cell += 1
            now = day * DAY + t
            issued = codes.issue(cell, PHONE)
            if rnd.random() < 0.1:
                wrong = codes.check(issued.code[::-1] + "9", "6789", now)
                waits += wrong.verdict is Verdict.WAIT
                now += 5_000
            check = codes.check(issued.code, "6789", now)
            waits += check.verdict is Verdict.WAIT
            pauses += check.verdict is Verdict.PAUSED
            assert check.verdict in (Verdict.OK, Verdict.WAIT, Verdict.PAUSED)
            codes.revoke(cell)
    assert (pauses, waits) == (0, 0)


def test_the_snapshot_carries_the_pause_and_the_codes_across_a_restart() -> None:
    codes = book()
    issued = codes.issue(5, PHONE)
    ret_code = codes.issue_return("ret-1")
    now = 0
    for _ in range(200):
        check = codes.check("111111", "1111", now)
        if check.events:
            break
        now = check.retry_at or now
    again = book()
    again.restore(json.loads(json.dumps(codes.snapshot())))
    assert again.check(issued.code, "6789", now + 1).verdict is Verdict.PAUSED
    again.resume("op", now + 1)
    assert again.check(issued.code, "6789", now + 2).cell == 5
    assert again.check(ret_code, "", now + 3).return_id == "ret-1"
    again.revoke_return("ret-1")
    assert again.check(ret_code, "", now + 4).verdict is Verdict.WRONG


def test_used_codes_leave_the_snapshot_and_come_back_from_their_own_store() -> None:
    """The snapshot stored with every step holds no used code; the used ones are handed out
    as pending (to be stored on their own) and given back at start: still never issued again."""
    draws = iter(["111111", "111111", "222222", "333333", "333333", "444444"])
    codes = CodeBook(SECRET, CodePolicy(retired_kept=1), random_digits=lambda n: next(draws))
    codes.issue(3, PHONE)
    codes.revoke(3)
    assert "retired" not in codes.snapshot()
    used, gone = codes.used_pending()
    assert len(used) == 1 and gone == []
    codes.used_stored()
    assert codes.used_pending() == ([], [])
    # After a restart, with the used codes as stored: "111111" is not issued again.
    again = CodeBook(SECRET, CodePolicy(retired_kept=1), random_digits=lambda n: next(draws))
    again.restore(json.loads(json.dumps(codes.snapshot())), used=used)
    assert again.issue(4, PHONE).code == "222222"
    # Past `retired_kept` the oldest is forgotten: it is to be dropped from the store.
    again.revoke(4)
    new, gone = again.used_pending()
    assert gone == used and len(new) == 1
    # A snapshot of an older store that still holds them: they become pending, to move out.
    old = {**codes.snapshot(), "retired": used}
    moved = book()
    moved.restore(old, used=[])
    assert moved.used_pending() == (used, [])
    # An undo in memory (a step whose write failed) keeps them, pending ones included.
    whole = again.snapshot(with_used=True)
    again.issue(5, PHONE)
    again.revoke(5)
    again.restore(whole)
    assert again.used_pending() == (new, gone)
    # The undone step's code was never used as far as the store knows: it may come again.
    assert again.issue(6, PHONE).code == "333333"
