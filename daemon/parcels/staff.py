"""Kiosk logins of couriers and staff, sans-I/O: code + PIN, lockouts, sessions and roles.

A login is the personal code, then the PIN, checked against the scrypt hash in the `parcels`
section (contract/pin_hash.py), so it works with the locker offline. `attempts` wrong PINs in a
row lock that login for `lockout_ms`, doubling with each lockout in a row up to
`max_lockout_ms`, and record `staff_login_locked` (an alarm); an unknown or
disabled code is refused the same way as a wrong PIN (nothing tells a stranger which codes
exist) and counts against the code typed. A session ends on logout, after `idle_ms` without a
touch, or when the door it opened closes. What a session may do follows from its role
(`ROLE_ACTIONS`); anything else raises `StaffError("forbidden")`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from contract.parcels import ParcelsSection, Staff
from contract.pin_hash import verify_pin
from daemon.fsm.actions import Event

StaffAction = Literal[
    "deposit", "take_back", "collect_returns", "block", "unblock", "open", "set_language",
    "service_view", "issue_return_code", "reports", "resume_code_entry",
]

#: What each role may do at the kiosk (issue 12, from the seed's roles).
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "courier": frozenset({"deposit", "take_back", "collect_returns"}),
    "operator": frozenset({"block", "unblock", "open", "resume_code_entry"}),
    "collector": frozenset({"block", "unblock", "open", "collect_returns"}),
    "administrator": frozenset({"set_language", "service_view", "issue_return_code",
                                "reports", "resume_code_entry"}),
}
#: Actions that must say why (recorded in the event).
NEEDS_REASON = frozenset({"block", "unblock", "open"})


class StaffError(Exception):
    """A login or an action refused; `reason` is a stable code for the kiosk."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LoginPolicy:
    attempts: int = 3
    lockout_ms: int = 15 * 60_000
    #: Each lockout in a row (no good login between) lasts twice the last, up to this: someone
    #: who knows a courier's code gets about 3 PIN guesses a day after the first few hours.
    max_lockout_ms: int = 24 * 3600_000
    idle_ms: int = 120_000
    #: Codes whose failures are remembered (a stranger typing random codes cannot grow it).
    kept_logins: int = 1_000

    @classmethod
    def from_section(cls, section: ParcelsSection) -> LoginPolicy:
        return cls(idle_ms=section.session_idle_s * 1000)


@dataclass
class Session:
    id: str
    staff_id: str
    role: str
    started_at: int
    last_seen: int
    #: The cell whose door closing ends the session (the open it made).
    door_cell: int | None = None


@dataclass(frozen=True)
class Login:
    """A login's outcome: `session`, or `refused` (wrong_login, login_locked) and `until`."""

    session: Session | None
    refused: str | None = None
    until: int | None = None
    events: tuple[Event, ...] = ()


@dataclass
class _Failures:
    count: int = 0
    locked_until: int | None = None
    #: Lockouts in a row; a good login forgets them, and so does a day without one.
    lockouts: int = 0
    #: When the last lockout ended.
    served_at: int | None = None


@dataclass
class StaffDesk:
    """The kiosk's staff logins and open sessions."""

    staff: Sequence[Staff]
    policy: LoginPolicy = field(default_factory=LoginPolicy)
    verify: Callable[[str, str], bool] = verify_pin
    new_id: Callable[[], str] = lambda: secrets.token_hex(8)
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, _Failures] = field(default_factory=dict)

    def login(self, code: str, pin: str, now_ms: int) -> Login:
        """Check a code and PIN: a session, or the refusal (with the lockout's end, and the
        alarm to record when this failure locked the login)."""
        fails = self._failures.get(code)
        if fails and fails.locked_until is not None:
            if now_ms < fails.locked_until:
                return Login(None, "login_locked", fails.locked_until)
            # Served: a fresh count, but the next lockout in a row lasts longer.
            fails.count, fails.served_at, fails.locked_until = 0, fails.locked_until, None
        member = next((s for s in self.staff if s.code == code), None)
        # The hash is checked even for an unknown code, so timing does not tell codes apart.
        ok = self.verify(pin, member.pin_hash if member else _DUMMY_HASH)
        if member is None or member.disabled or not ok:
            return self._failed(code, member, now_ms)
        self._failures.pop(code, None)
        session = Session(self.new_id(), member.id, member.role, now_ms, now_ms)
        self.sessions[session.id] = session
        event = Event("staff_login", None, {"staff_id": member.id, "role": member.role})
        return Login(session, None, None, (event,))

    def _failed(self, code: str, member: Staff | None, now_ms: int) -> Login:
        self._prune(now_ms)
        fails = self._failures.setdefault(code, _Failures())
        fails.count += 1
        if fails.count < self.policy.attempts:
            return Login(None, "wrong_login")
        p = self.policy
        lockout = min(p.max_lockout_ms, p.lockout_ms << min(fails.lockouts, 30))
        fails.locked_until = now_ms + lockout
        fails.lockouts += 1
        data: dict = {"failures": fails.count, "until": fails.locked_until, "alarm": True}
        if member is not None:
            data.update(staff_id=member.id, role=member.role)
        event = Event("staff_login_locked", None, data, alarm=True)
        return Login(None, "login_locked", fails.locked_until, (event,))

    def _prune(self, now_ms: int) -> None:
        """Bounded memory whatever a stranger types: lockouts served a day ago go (and their
        doubling with them), then the oldest."""
        forget = now_ms - self.policy.max_lockout_ms
        for code in [c for c, f in self._failures.items()
                     if f.locked_until is None and f.served_at is not None
                     and f.served_at <= forget]:
            del self._failures[code]
        while len(self._failures) >= self.policy.kept_logins:
            del self._failures[next(iter(self._failures))]

    def snapshot(self) -> dict:
        """JSON-ready failure counts, so a restart does not lift a lockout (sessions end)."""
        return {"v": 1, "failures": {c: [f.count, f.locked_until, f.lockouts, f.served_at]
                                     for c, f in self._failures.items()}}

    def restore(self, snap: dict) -> None:
        """Take a snapshot back; a malformed one raises ValueError and changes nothing."""
        try:
            if snap.get("v") != 1:
                raise ValueError(f"unknown version {snap.get('v')!r}")
            failures = {str(c): _Failures(int(n), _ms(u), int(k), _ms(a))
                        for c, (n, u, k, a) in snap["failures"].items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"staff snapshot is malformed: {exc}") from exc
        self._failures = failures

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped: lockouts last as long as meant, sessions keep their idle time."""
        for f in self._failures.values():
            f.locked_until, f.served_at = _ms(f.locked_until, delta_ms), _ms(f.served_at, delta_ms)
        for s in self.sessions.values():
            s.started_at += delta_ms
            s.last_seen += delta_ms

    def session(self, session_id: str, now_ms: int) -> Session:
        """A live session, touched; StaffError("no_session") if it ended or idled out."""
        s = self.sessions.get(session_id)
        if s is None:
            raise StaffError("no_session", "log in first")
        if now_ms - s.last_seen >= self.policy.idle_ms:
            raise StaffError("no_session", "the session timed out")
        s.last_seen = now_ms
        return s

    def authorize(self, session_id: str, action: StaffAction, now_ms: int,
                  reason: str | None = None) -> Session:
        """The session, if its role may do `action` now; StaffError otherwise."""
        s = self.session(session_id, now_ms)
        if action not in ROLE_ACTIONS[s.role]:
            raise StaffError("forbidden", f"a {s.role} may not {action}")
        if action in NEEDS_REASON and not (reason and reason.strip()):
            raise StaffError("reason_required", f"say why you {action} the cell")
        return s

    def opened(self, session_id: str, cell: int) -> None:
        """The session opened `cell`: its door closing ends the session."""
        if session_id in self.sessions:
            self.sessions[session_id].door_cell = cell

    def logout(self, session_id: str, now_ms: int) -> list[Event]:
        return self._end(session_id, "logout")

    def door_closed(self, cell: int, now_ms: int) -> list[Event]:
        """A door closed: the sessions that opened it end."""
        ended = [sid for sid, s in self.sessions.items() if s.door_cell == cell]
        return [e for sid in ended for e in self._end(sid, "door_closed")]

    def tick(self, now_ms: int) -> list[Event]:
        """Sessions idle for `idle_ms` end."""
        idle = [sid for sid, s in self.sessions.items()
                if now_ms - s.last_seen >= self.policy.idle_ms]
        return [e for sid in idle for e in self._end(sid, "idle")]

    def _end(self, session_id: str, why: str) -> list[Event]:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return []
        return [Event("staff_logout", None, {"staff_id": s.staff_id, "role": s.role,
                                             "reason": why})]


def _ms(value: int | None, delta: int = 0) -> int | None:
    """A stored time (or none), moved by `delta`; int() refuses what a snapshot cannot hold."""
    return None if value is None else int(value) + delta


def staff_open_event(session: Session, cell: int, reason: str, holds: str,
                     parcels: Sequence[str] = ()) -> Event:
    """What an operator's or collector's open records: who, why and what the cell held
    (parcel, rental, return or nothing)."""
    data: dict = {"staff_id": session.staff_id, "role": session.role, "reason": reason,
                  "holds": holds}
    if parcels:
        data["parcels"] = list(parcels)
    return Event("cell_opened_by_staff", cell, data)


#: A well-formed hash no PIN matches in practice (verified for unknown codes, for even timing).
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43
