"""The parcel-locker business of one locker (issue 12): the pure books wired to the locker core.

A `daemon.core.Business`: the kiosk's parcel routes (daemon/parcels/routes.py) and the console's
commands call in here. Every step is one write through the core's `apply`: the events, the cell
machine's open (its verified open, retry and lock-fault rules), and the books' snapshots with the
notification outbox in the store's meta (`parcels`), before any door moves or anything is sent.
The door's outcome arrives as the machine's completed / cancelled event and is carried to the
book in a second write right after; a crash between the two is found at boot (`_reconcile`).

Notifications leave from the durable outbox in the same meta: an entry per once-only key
(`Notify.key`), keys already sent are remembered, so a crash neither loses one nor queues one
twice. An arrival keeps (seed, attempt) and derives its code again when it sends; no plain code is
ever stored (daemon/parcels/codes.py).

Exactly once across a crash in the middle of a hand-over: each message of an entry (one per
channel, or per address of an administrator's e-mail) has a reference of its own, derived from
the entry's key (`_ref`: stable, so the same after a restart). Before a message is handed over
the entry is stored with it `in_flight`; the provider's answer clears that. A crash before the
answer leaves it in flight, and after the restart it is sent again with the SAME reference: the
SMS gateway refuses a reference it already took as "already accepted" (counted as sent), the
console relay sends an id once, and an e-mail comes again with the same Message-ID, code and text
(SMTP cannot refuse a duplicate; Gmail keeps one copy per Message-ID). A recipient who
waits for a code is worse off than one who may see it twice, so an e-mail in doubt is sent again,
not held; the `parcel_notice_sent` event names such channels in `resent` for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from contract.parcels import ParcelsSection
from contract.recipient_list import RecipientList
from contract.recipients import Recipient
from daemon.applied_config import applied_body, applied_sections
from daemon.core import BusinessError, ErrorKind
from daemon.fsm import Event, Refused
from daemon.fsm.allocation import Candidate
from daemon.io.store import StoreCorrupt
from daemon.parcels import texts
from daemon.parcels.codes import CodeBook, Verdict, code_policy
from daemon.parcels.directory import DEFAULT_LIMIT, RecipientDirectory
from daemon.parcels.effects import IssueCode, Notify, OpenCell, RevokeCode
from daemon.parcels.lifecycle import (
    BOARD_OFFLINE,
    CELL_BLOCKED,
    FAULT,
    ParcelBook,
    ParcelError,
    ParcelRules,
)
from daemon.parcels.newcomers import DuplicateRecipient, added_recipient
from daemon.parcels.report import cell_report
from daemon.parcels.returns import ReturnBook, RevokeReturnCode
from daemon.parcels.sizing import NoCell, offer_cell
from daemon.parcels.staff import LoginPolicy, Session, StaffDesk, StaffError, staff_open_event

if TYPE_CHECKING:
    from daemon.core import KioskRoute, LockerCommand, LockerCore, OperatorCommand
    from daemon.io.notifier import Notifier

#: Store meta key of the business's state (books, outbox): ids, states, keyed hashes; no code.
STATE_KEY = "parcels"
#: A parcel cell's tenancy never runs out for the cell machine: the book's window decides.
NO_DUE_MS = 10 * 365 * 24 * 3600_000
#: Notification keys remembered as sent (a key is never queued again): at most this many, and
#: only as long as finished parcels (FINISHED_KEPT_MS; the book itself never asks for a key
#: again: each comes from one step of a parcel's life, reminders are marked in their load).
SENT_KEPT = 1_000
#: Finished parcels stay in the book this long (their events are stored; a screen may still ask
#: for one): each step writes the book, so it stays as small as the parcels at the locker.
FINISHED_KEPT_MS = 3600_000
#: How often the periodic work (expiry, reminders, sessions, outbox) runs.
TICK_S = 0.25
#: `parcel_window_resumed`'s reason when lockerd finds at start that a fault ended unseen by
#: the book (the cell machine's end was committed, a crash came before the book's write).
FAULT_GONE_AT_START = "fault_ended_before_restart"
#: `parcel_window_paused`'s reason when lockerd finds at start a fault the book never saw begin.
FAULT_BEGAN_BEFORE_RESTART = "fault_began_before_restart"
#: The cell machine's block reasons that stop a parcel's window (an operator's block does not).
PAUSING_BLOCKS = frozenset({"lock_fault", "forced_open"})
#: Retry delays of a notification that failed, in seconds (then the last one again).
RETRY_S = (1, 5, 30, 120, 600)
#: Machine open kind and tenancy business per parcel open purpose.
_MACHINE_KIND = {"parcel_pickup": "pickup", "parcel_take_back": "evict",
                 "return_drop": "deposit", "return_collect": "pickup"}
#: What kind of refusal each reason is (the kiosk maps the kind to an HTTP status).
_KINDS: dict[str, ErrorKind] = {
    "wrong_login": ErrorKind.FORBIDDEN, "login_locked": ErrorKind.LOCKED,
    "no_session": ErrorKind.FORBIDDEN, "forbidden": ErrorKind.FORBIDDEN,
    "reason_required": ErrorKind.INVALID, "barcode_required": ErrorKind.INVALID,
    "bad_size": ErrorKind.INVALID, "bad_barcode": ErrorKind.INVALID,
    "no_recipient": ErrorKind.INVALID, "no_parcel": ErrorKind.NOT_FOUND,
    "no_return": ErrorKind.NOT_FOUND, "unknown_recipient": ErrorKind.NOT_FOUND,
    "wrong_code": ErrorKind.FORBIDDEN, "code_wait": ErrorKind.TOO_MANY,
    "code_paused": ErrorKind.LOCKED, "phone_digits_required": ErrorKind.INVALID,
    "returns_disabled": ErrorKind.FORBIDDEN, "unknown_language": ErrorKind.INVALID,
    "bad_recipient": ErrorKind.INVALID, "no_parcels_section": ErrorKind.UNAVAILABLE,
    "not_parcel_cell": ErrorKind.NOT_FOUND, "not_ready": ErrorKind.UNAVAILABLE,
    "unknown_cell": ErrorKind.NOT_FOUND, "storage_full": ErrorKind.NO_SPACE,
}


class ParcelsError(BusinessError):
    """A parcel refusal, its message in the client's language (daemon/parcels/texts.py)."""

    def message(self, language: str) -> str:
        try:
            return texts.message(self.code, language, **self.params)
        except (KeyError, IndexError, TypeError):
            return texts.message(self.code, language)


def refusal(reason: str, **params: Any) -> ParcelsError:
    return ParcelsError(reason, _KINDS.get(reason, ErrorKind.CONFLICT), **params)


class ParcelsService:
    """The parcels business (a `daemon.core.Business`)."""

    name = "parcels"

    def __init__(self, core: LockerCore, notifier: Notifier | None, secret: bytes,
                 local_section: ParcelsSection | None,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.core = core
        self.notifier = notifier
        self.secret = secret
        self.local_section = local_section
        self.new_id = new_id
        self._section_cache: tuple[Any, ParcelsSection | None] = (None, None)
        self._directory: tuple[int, RecipientDirectory] | None = None
        section = self.section()
        self.book = ParcelBook(ParcelRules.from_section(section))
        self.codes = CodeBook(secret, code_policy(section))
        self.staff = StaffDesk(section.staff, LoginPolicy.from_section(section))
        self.returns = ReturnBook()
        #: Queued notifications by once-only key; `sent`: keys that left, and when (oldest
        #: first).
        self.outbox: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, int] = {}
        #: Recipients couriers added at the kiosk (kept on the locker).
        self.newcomers: list[dict[str, Any]] = []
        self.language: str | None = None
        self.next_report_at: int | None = None
        self._wake = asyncio.Event()
        self._restore()

    # ----------------------------------------------------------------- configuration
    def section(self) -> ParcelsSection:
        """The `parcels` section in force: the fleet's signed one if applied, else the local."""
        applied = self.core.store.meta("fleet_config")
        if "parcels" not in applied_sections(applied):
            return self.local_section or ParcelsSection()
        key = (applied["version"], applied["hash"])
        if self._section_cache[0] != key:
            try:
                section: ParcelsSection | None = ParcelsSection.model_validate(
                    applied_body(applied)["parcels"])
            except ValueError:
                section = self.local_section
            self._section_cache = (key, section)
            if section is not None and hasattr(self, "staff"):
                self.staff.staff = section.staff
                self.book.rules = ParcelRules.from_section(section)
                self.codes.policy = code_policy(section)
        return self._section_cache[1] or ParcelsSection()

    def kiosk_language(self) -> str:
        """The locker's language: the administrator's choice at the kiosk, else the section's;
        notifications use it for recipients without a language of their own."""
        return self.language or self.section().language

    def recipient(self, recipient_id: str | None) -> Recipient | None:
        if recipient_id is None:
            return None
        found = self.section().recipient(recipient_id)
        if found is None:
            raw = next((r for r in self.newcomers if r["id"] == recipient_id), None)
            found = Recipient.model_validate(raw) if raw else None
        return found

    def directory(self) -> RecipientDirectory:
        """The search index, built on first use (a locker that never searches never builds it)."""
        section = self.section()
        key = id(section) + len(self.newcomers)
        if self._directory is None or self._directory[0] != key:
            people: Sequence[Recipient] = section.recipients
            if self.newcomers:  # packed again with them (one index over both)
                people = RecipientList([*section.recipients,
                                        *(Recipient.model_validate(r) for r in self.newcomers)])
            self._directory = (key, RecipientDirectory.load(people))
        return self._directory[1]

    # ----------------------------------------------------------------- persistence
    def _state(self, *, stored: bool = False) -> dict[str, Any]:
        """The books' state: as stored with a step (`stored`: used codes are documents of
        their own, not rewritten with every step), else whole, to undo a step with."""
        return {"v": 1, "book": self.book.snapshot(),
                "codes": self.codes.snapshot(with_used=not stored),
                "staff": self.staff.snapshot(), "returns": self.returns.snapshot(),
                # Copies: the store keeps what it was given, and compares the next state to it.
                "outbox": copy.deepcopy(list(self.outbox.values())),
                "sent": [[k, at] for k, at in self.sent.items()],
                "newcomers": list(self.newcomers), "language": self.language,
                "next_report_at": self.next_report_at}

    def _restore(self) -> None:
        saved = self.core.store.meta(STATE_KEY)
        if not saved:
            return
        try:
            self.book.restore(saved["book"])
            self.codes.restore(saved["codes"], used=self.core.store.used_codes())
            self.staff.restore(saved["staff"])
            self.returns.restore(saved["returns"])
        except (KeyError, ValueError) as exc:
            raise StoreCorrupt(f"{self.core.store.path}: the parcel business's state "
                               f"({STATE_KEY}) is unreadable: {exc}") from exc
        self.outbox = {e["key"]: e for e in saved.get("outbox", [])}
        self.sent = _sent(saved.get("sent", []), self.core.clock())
        self.newcomers = list(saved.get("newcomers", []))
        self.language = saved.get("language")
        self.next_report_at = saved.get("next_report_at")

    def _commit(self, out: Iterable[Any] = ()) -> list[dict]:
        """Carry out a step's output in one write: events, codes, outbox entries and the
        machine's actions, with the books' snapshots and the codes the step used; then wake
        the sender."""
        actions: list[Any] = []
        code: dict[str, Any] = {}
        for item in out:
            if isinstance(item, IssueCode):
                code = self._issue(item)
            elif isinstance(item, RevokeCode):
                self.codes.revoke(item.cell)
            elif isinstance(item, RevokeReturnCode):
                self.codes.revoke_return(item.return_id)
            elif isinstance(item, Notify):
                self._queue(item, code if item.kind == "parcel_arrived" else {})
            else:
                actions.append(item)
        used, forgotten = self.codes.used_pending()
        numbered = self.core.apply(actions, meta={STATE_KEY: self._state(stored=True)},
                                   used_codes=used, forgotten_codes=forgotten)
        self.codes.used_stored()
        self._wake.set()
        return numbered

    def _step(self, fn: Callable[[], list[Any]]) -> list[Any]:
        """Run a step on the books; on any refusal (or a disk that takes nothing) put them back
        as they were, so memory never holds what was not stored."""
        before = self._state()
        try:
            return fn()
        except BaseException:
            self._put_back(before)
            raise

    def _put_back(self, state: dict[str, Any]) -> None:
        self.book.restore(state["book"])
        self.codes.restore(state["codes"])
        self.staff.restore(state["staff"])
        self.returns.restore(state["returns"])
        self.outbox = {e["key"]: e for e in state["outbox"]}
        self.sent = _sent(state["sent"], self.core.clock())
        self.newcomers = list(state["newcomers"])
        self.language = state["language"]

    def _issue(self, effect: IssueCode) -> dict[str, Any]:
        """Issue the code; what the arrival's outbox entry keeps to derive it again."""
        recipient = self.recipient(effect.recipient_id)
        issued = self.codes.issue(effect.cell, recipient.phone if recipient else None,
                                  effect.seed)
        return {"seed": issued.seed, "attempt": issued.attempt, "factor": issued.factor}

    def _queue(self, notify: Notify, code: dict[str, Any]) -> None:
        if notify.key in self.outbox or notify.key in self.sent:
            return
        entry: dict[str, Any] = {"key": notify.key, "kind": notify.kind, "cell": notify.cell,
                                 "recipient_id": notify.recipient_id,
                                 "parcels": list(notify.parcels), "tries": 0, "next_at": 0,
                                 "at": self.core.clock()}
        entry.update(code)
        if notify.recipient_id is not None and notify.cell in self.book.loads:
            with contextlib.suppress(ParcelError):
                entry["due"] = self.book.due_at(notify.cell)
        if notify.kind == "pickup_report":
            entry["to"] = list(self.section().notify.pickup_emails)
        self.outbox[notify.key] = entry

    # ----------------------------------------------------------------- cells
    def _candidates(self) -> list[Candidate]:
        profile = self.core.profile()
        machine = self.core.machine
        out = []
        for spec in self.core.config.cells:
            view = machine.cell_view(spec.id)
            business = profile.business_of_cell(spec.id, spec.size) if profile else None
            out.append(Candidate(id=spec.id, size=spec.size, business=business,
                                 state=view["state"], door=view["door"],
                                 pending=machine.pending_purpose(spec.id) is not None))
        return out

    def parcel_cells(self) -> set[int]:
        return {c.id for c in self._candidates() if c.business == "parcels"}

    def _reserved(self) -> set[int]:
        return set(self.book.loads) | {r.cell for r in self.returns.returns.values()
                                       if r.cell is not None}

    def _open(self, effect: OpenCell, now: int, tenancy_id: str) -> list[Any]:
        """The machine's verified open for a parcel open purpose; Refused passes up."""
        cell = effect.cell
        ref = f"parcels:{effect.purpose}:{cell}:{now}"
        machine = self.core.machine
        if effect.purpose in ("parcel_deposit", "return_drop"):
            if machine.tenancy(cell) is None:
                business = "parcels" if effect.purpose == "parcel_deposit" else "returns"
                return machine.command(cell, "deposit", now, ref=ref, tenancy={
                    "id": tenancy_id, "business": business, "due_after_ms": NO_DUE_MS})
            return machine.command(cell, "temporary", now, ref=ref)
        return machine.command(cell, _MACHINE_KIND[effect.purpose], now, ref=ref)

    def _run_opens(self, out: list[Any], now: int, tenancy_id: str) -> list[Any]:
        done: list[Any] = []
        for item in out:
            if isinstance(item, OpenCell):
                try:
                    done.extend(self._open(item, now, tenancy_id))
                except Refused as exc:
                    raise refusal("busy" if exc.reason in ("busy", "door_open") else exc.reason,
                                  detail=exc.detail) from None
            else:
                done.append(item)
        return done

    # ----------------------------------------------------------------- staff
    def login(self, code: str, pin: str) -> dict[str, Any]:
        now = self.core.clock()
        result = self._step(lambda: self._login(code, pin, now))
        if result[0] is None:
            refused, until = result[1], result[2]
            params: dict[str, Any] = {}
            if until is not None:
                params["until"] = until
                params["wait"] = f"{max(1, (until - now + 59_999) // 60_000)} min"
            raise refusal(refused, **params)
        session: Session = result[0]
        member = next(s for s in self.section().staff if s.id == session.staff_id)
        return {"session": session.id, "staff_id": member.id, "name": member.name,
                "role": member.role}

    def _login(self, code: str, pin: str, now: int) -> list[Any]:
        login = self.staff.login(code, pin, now)
        self._commit(login.events)
        return [login.session, login.refused, login.until]

    def _authorize(self, session: str, action: Any, reason: str | None = None) -> Session:
        try:
            return self.staff.authorize(session, action, self.core.clock(), reason)
        except StaffError as exc:
            raise refusal(exc.reason) from None

    def session_view(self, session: str) -> dict[str, Any]:
        try:
            s = self.staff.session(session, self.core.clock())
        except StaffError as exc:
            raise refusal(exc.reason) from None
        return {"session": s.id, "staff_id": s.staff_id, "role": s.role,
                "started_at": s.started_at}

    def logout(self, session: str) -> dict[str, Any]:
        self._step(lambda: self._commit(self.staff.logout(session, self.core.clock())))
        return {"ended": True}

    # ----------------------------------------------------------------- recipients
    def search(self, session: str, typed: str, limit: int = DEFAULT_LIMIT) -> list[dict]:
        self._authorize(session, "deposit")
        return [{"id": h.id, "name": h.name, "department": h.department, "number": h.number,
                 "hint": h.hint} for h in self.directory().search(typed, limit)]

    def add_recipient(self, session: str, fields: dict[str, Any]) -> dict[str, Any]:
        s = self._authorize(session, "deposit")
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.setdefault("id", f"new-{self.new_id()[:12]}")
        try:
            recipient = Recipient.model_validate(fields)
        except ValueError as exc:
            raise refusal("bad_recipient", detail=str(exc).splitlines()[0]) from None
        known = {*self.section().recipients.ids(), *(r["id"] for r in self.newcomers)}
        try:
            event = added_recipient(recipient, s.staff_id, known)
        except DuplicateRecipient:
            raise refusal("duplicate_recipient") from None

        def step() -> list[Any]:
            self.newcomers.append(recipient.model_dump(exclude_none=True))
            self._commit([event])
            return []

        self._step(step)
        return {"id": recipient.id, "name": recipient.name, "department": recipient.department}

    # ----------------------------------------------------------------- deposit
    def deposit(self, session: str, *, size: str, recipient_id: str | None,
                barcode: str | None, cell: int | None) -> dict[str, Any]:
        s = self._authorize(session, "deposit")
        now = self.core.clock()
        if recipient_id is not None and self.recipient(recipient_id) is None:
            raise refusal("unknown_recipient")
        larger = False
        given = size
        if cell is None:
            try:
                offer = offer_cell(self._candidates(), size, self._reserved())
            except NoCell:
                raise refusal("no_cell", size=size) from None
            cell, given, larger = offer.cell, offer.size, offer.larger
        elif cell not in self.parcel_cells():
            raise refusal("not_parcel_cell")
        parcel_id = self.new_id()
        chosen = cell

        def step() -> list[Any]:
            out = self.book.begin_deposit(parcel_id, cell=chosen, size=size,
                                          recipient_id=recipient_id, courier_id=s.staff_id,
                                          barcode=barcode, now_ms=now)
            load = self.book.loads[chosen]
            self._commit(self._run_opens(out, now, f"p{chosen}-{parcel_id[:12]}"))
            self.staff.opened(session, chosen)
            return [load.pending[2] if load.pending else parcel_id]

        try:
            pid = self._step(step)[0]
        except ParcelError as exc:
            raise refusal(exc.reason) from None
        return {"parcel_id": pid, "cell": cell, "size": given, "larger": larger,
                "state": self.book.parcels[pid].state}

    def parcel_view_for(self, session: str, parcel_id: str) -> dict[str, Any]:
        """What the kiosk shows of a parcel: staff only (its barcode and recipient are not a
        stranger's to read by guessing or learning an id)."""
        self.session_view(session)
        return self.parcel_view(parcel_id)

    def parcel_view(self, parcel_id: str) -> dict[str, Any]:
        parcel = self.book.parcels.get(parcel_id)
        if parcel is None:
            raise refusal("no_parcel")
        return {"parcel_id": parcel.id, "state": parcel.state, "cell": parcel.cell,
                "size": parcel.size, "barcode": parcel.barcode,
                "recipient_id": parcel.recipient_id}

    # ----------------------------------------------------------------- pickup and returns
    def enter_code(self, code: str, phone_digits: str | None,
                   return_size: str | None = None) -> dict[str, Any]:
        """A recipient's code (or a return code) typed at the kiosk."""
        now = self.core.clock()
        if self.codes.asks_factor(code) and not phone_digits:
            raise refusal("phone_digits_required")
        result: dict[str, Any] = {}

        def step() -> list[Any]:
            check = self.codes.check(code, phone_digits or "", now)
            if check.verdict is not Verdict.OK:
                self._commit(check.events)
                return [check]
            if check.return_id is not None:
                result.update(self._begin_drop(check.return_id, return_size, now))
            else:
                assert check.cell is not None
                out = self.book.begin_pickup(check.cell, now)
                parcels = self.book.parcels_in(check.cell)
                self._commit(self._run_opens(out, now, ""))
                result.update(cell=check.cell, parcels=parcels, state="collecting")
            return [check]

        try:
            check = self._step(step)[0]
        except ParcelError as exc:
            raise refusal(exc.reason) from None
        if check.verdict is Verdict.WRONG:
            raise refusal("wrong_code", **({"retry_at": check.retry_at} if check.retry_at
                                          else {}))
        if check.verdict is Verdict.WAIT:
            raise refusal("code_wait", seconds=max(1, -(-(check.retry_at - now) // 1000)))
        if check.verdict is Verdict.PAUSED:
            raise refusal("code_paused", retry_at=check.retry_at)
        return result

    def _begin_drop(self, return_id: str, size: str | None, now: int) -> dict[str, Any]:
        if size is None:
            return {"return_id": return_id, "state": "size_needed"}
        try:
            offer = offer_cell(self._candidates(), size, self._reserved())
        except NoCell:
            raise refusal("no_cell", size=size) from None
        out = self.returns.begin_drop(return_id, offer.cell, offer.size, now)
        self._commit(self._run_opens(out, now, f"r{offer.cell}-{return_id[:12]}"))
        return {"return_id": return_id, "cell": offer.cell, "size": offer.size,
                "state": "dropping"}

    def create_return(self, return_id: str, recipient_id: str | None) -> str:
        """A return code (shown once, never stored in clear)."""
        if not self.section().returns_enabled:
            raise refusal("returns_disabled")
        code: list[str] = []

        def step() -> list[Any]:
            self.returns.create(return_id, recipient_id)
            code.append(self.codes.issue_return(return_id))
            self._commit([Event("return_issued", None, {"return_id": return_id,
                                                         "recipient_id": recipient_id})])
            return []

        try:
            self._step(step)
        except ParcelError as exc:
            raise refusal(exc.reason) from None
        return code[0]

    def issue_return(self, session: str, recipient_id: str | None) -> dict[str, Any]:
        self._authorize(session, "issue_return_code")
        return_id = f"ret-{self.new_id()[:12]}"
        return {"return_id": return_id, "return_code": self.create_return(return_id,
                                                                          recipient_id)}

    def collect_return(self, session: str, cell: int) -> dict[str, Any]:
        s = self._authorize(session, "collect_returns")
        try:
            self._staff_open(session, cell,
                             lambda now: self.returns.begin_collect(cell, s.staff_id, now))
        except ParcelError as exc:
            raise refusal("no_return" if exc.reason == "no_parcel" else exc.reason) from None
        return {"cell": cell, "state": "collecting"}

    def waiting_returns(self, session: str) -> list[dict[str, Any]]:
        self._authorize(session, "collect_returns")
        return [{"return_id": r.id, "cell": r.cell, "size": r.size,
                 "deposited_at": r.deposited_at} for r in self.returns.waiting()]

    # ----------------------------------------------------------------- take back
    def expired(self, session: str) -> list[dict[str, Any]]:
        self._authorize(session, "take_back")
        return [{"cell": ld.cell, "recipient_id": ld.recipient_id, "parcels": [
            self.parcel_view(p) for p in ld.parcels]} for ld in self.book.expired_loads()]

    def take_back(self, session: str, cell: int) -> dict[str, Any]:
        s = self._authorize(session, "take_back")
        if cell not in {ld.cell for ld in self.book.expired_loads()}:
            raise refusal("no_parcel")
        try:
            self._staff_open(session, cell,
                             lambda now: self.book.begin_take_back(cell, s.staff_id, now))
        except ParcelError as exc:
            raise refusal(exc.reason) from None
        return {"cell": cell, "state": "taking_back"}

    def _staff_open(self, session: str, cell: int, begin: Callable[[int], Any]) -> None:
        """A staff member takes something out of a cell (a return, an expired parcel): the
        core's step, its door opened, the session told which cell it opened."""
        now = self.core.clock()

        def step() -> list[Any]:
            self._commit(self._run_opens(begin(now), now, ""))
            self.staff.opened(session, cell)
            return []

        self._step(step)

    # ----------------------------------------------------------------- staff acts on cells
    def staff_cell(self, session: str, cell: int, act: str, reason: str) -> dict[str, Any]:
        """An operator's or collector's block, unblock or open, with the reason recorded."""
        s = self._authorize(session, act, reason)
        now = self.core.clock()
        if cell not in {c.id for c in self.core.config.cells}:
            raise refusal("not_parcel_cell")
        ref = f"parcels:staff_{act}:{cell}:{now}"

        def step() -> list[Any]:
            events: list[Any] = []
            if act == "open":
                held = self.book.parcels_in(cell)
                holds = ("parcel" if held else "return" if any(
                    r.cell == cell for r in self.returns.waiting()) else
                         "rental" if self.core.machine.tenancy(cell) else "nothing")
                events.append(staff_open_event(s, cell, reason, holds, held))
            try:
                actions = self.core.machine.command(cell, act, now, ref=ref,
                                                    reason=f"{s.staff_id}: {reason}")
            except Refused as exc:
                raise refusal(exc.reason, detail=exc.detail) from None
            self._commit([*events, *actions])
            if act == "open":
                self.staff.opened(session, cell)
            return []

        self._step(step)
        return {"cell": self.core.machine.cell_view(cell)}

    def resume_codes(self, session: str) -> dict[str, Any]:
        s = self._authorize(session, "resume_code_entry")
        self._step(lambda: self._commit(self.codes.resume(s.staff_id, self.core.clock())))
        return {"resumed": True}

    # ----------------------------------------------------------------- administrator
    def set_language(self, session: str, language: str) -> dict[str, Any]:
        self._authorize(session, "set_language")
        if language not in texts.NOTICES:
            raise refusal("unknown_language", wanted=language)

        def step() -> list[Any]:
            self.language = language
            self._commit([Event("parcels_language_set", None, {"language": language})])
            return []

        self._step(step)
        return {"language": language}

    def service_view(self, session: str) -> list[dict[str, Any]]:
        self._authorize(session, "service_view")
        out = []
        for c in self._candidates():
            load = self.book.load_of(c.id)
            out.append({"cell": c.id, "size": c.size, "business": c.business,
                        "state": c.state, "door": c.door,
                        "parcels": list(load.parcels) if load else [],
                        "due_at": self._due(c.id)})
        return out

    def _due(self, cell: int) -> int | None:
        with contextlib.suppress(ParcelError):
            return self.book.due_at(cell) if cell in self.book.loads else None
        return None

    def queue_report(self, emails: Sequence[str], why: str) -> None:
        """The cell report by e-mail to `emails` (through the outbox: once, durable)."""
        now = self.core.clock()

        def step() -> list[Any]:
            key = f"report:{why}:{now}"
            self.outbox[key] = {"key": key, "kind": "cell_report", "cell": 0,
                                "recipient_id": None, "parcels": [], "to": list(emails),
                                "tries": 0, "next_at": 0, "at": now}
            self._commit([Event("cell_report_queued", None, {"why": why,
                                                             "emails": len(emails)})])
            return []

        self._step(step)

    def report(self, session: str, email: str | None) -> dict[str, Any]:
        self._authorize(session, "reports")
        report = cell_report(self._candidates(), self.book, self.returns)
        if email:
            self.queue_report([email], "kiosk")
        return {"free": report.free, "occupied": report.occupied, "blocked": report.blocked,
                "waiting": report.waiting, "expired": report.expired, "returns": report.returns,
                "emailed": bool(email)}

    # ----------------------------------------------------------------- console commands
    def _cmd_expect(self, args: dict[str, Any]) -> dict[str, Any]:
        now = self.core.clock()

        def step() -> list[Any]:
            self._commit(self.book.announce(str(args["parcel_id"]), str(args["barcode"]),
                                            str(args["recipient_id"]), now))
            return []

        try:
            self._step(step)
        except ParcelError as exc:
            raise Refused(exc.reason, exc.detail) from None
        return {"parcel_id": args["parcel_id"], "state": "announced"}

    def _cmd_report(self, args: dict[str, Any]) -> dict[str, Any]:
        self.queue_report([str(args["email"])], "console")
        return {"queued": True}

    def operator_commands(self) -> dict[str, OperatorCommand]:
        """The console's acts: none on one cell yet (parcel commands take named args)."""
        return {}

    def locker_commands(self) -> dict[str, LockerCommand]:
        """The console's parcel commands (on no cell) by type, each taking the command's args."""
        return {
            "expect-parcel": self._cmd_expect,
            "create-return": lambda a: {"return_code": self.create_return(
                str(a["return_id"]), a.get("recipient_id"))},
            "report-cells": self._cmd_report,
        }

    def kiosk_routes(self) -> Sequence[KioskRoute]:
        from daemon.parcels.routes import parcel_routes

        return parcel_routes(self)

    # ----------------------------------------------------------------- the Business seam
    def settle(self, events: Iterable[Event]) -> list[dict]:
        return []

    def committed(self, numbered: list[dict], changed: set[int]) -> None:
        """Door outcomes and faults of parcel cells, carried to the books right after."""
        todo: list[tuple[str, int, dict[str, Any]]] = []
        for record in numbered:
            data = record["data"]
            cell = data.get("cell")
            ref = data.get("ref") or ""
            if record["type"] in ("board_offline", "board_online"):
                # Its cells cannot be opened meanwhile: their windows stop, then run again
                # (unless another fault still blocks the cell: the book keeps each cause).
                mark = "+fault" if record["type"] == "board_offline" else "-fault"
                todo.extend((mark, c.id, {**data, "cause": BOARD_OFFLINE})
                            for c in self.core.config.cells if c.board == data.get("board"))
                continue
            if cell is None:
                continue
            if ref.startswith("parcels:") and record["type"].endswith(
                    ("_completed", "_cancelled")):
                todo.append((record["type"], cell, data))
            elif record["type"] in PAUSING_BLOCKS or (
                    record["type"] == "blocked" and data.get("reason") in PAUSING_BLOCKS):
                todo.append(("+fault", cell, {**data, "cause": CELL_BLOCKED}))
            elif record["type"] == "unblocked":
                todo.append(("-fault", cell, {**data, "cause": CELL_BLOCKED}))
        if todo:
            asyncio.get_running_loop().call_soon(self._outcomes, todo)

    def _outcomes(self, todo: list[tuple[str, int, dict[str, Any]]]) -> None:
        now = self.core.clock()
        out: list[Any] = []
        before = self._state()
        try:
            for kind, cell, data in todo:
                if kind == "+fault":
                    if cell in self.book.loads and self.book.fault_started(cell, now,
                                                                           data["cause"]):
                        out.append(Event("parcel_window_paused", cell, {}))
                    continue
                if kind == "-fault":
                    if self.book.fault_ended(cell, now, data["cause"]):
                        out.append(Event("parcel_window_resumed", cell,
                                         {"due_at": self._due(cell)}))
                    continue
                purpose = data["ref"].split(":")[1]
                if purpose.startswith("staff_"):
                    out.extend(self.staff.door_closed(cell, now))
                    continue
                done = kind.endswith("_completed")
                out.extend(self._door_outcome(purpose, cell, done, data.get("item_present"),
                                              now))
            self._commit(out)
        except Exception as exc:  # the books stay as stored; the boot check tries again
            self._put_back(before)
            self.core.journal.line("parcels_outcome_failed", level="error", error=repr(exc))

    def _door_outcome(self, purpose: str, cell: int, done: bool, item: bool | None,
                      now: int) -> list[Any]:
        books: Any = self.returns if purpose.startswith("return") else self.book
        try:
            out = books.door_closed(cell, item, now) if done else books.open_failed(cell, now)
        except ParcelError as exc:
            self.core.journal.line("parcels_outcome_ignored", level="warning", cell=cell,
                                   reason=exc.reason)
            return []
        if done:
            out = [*out, *self.staff.door_closed(cell, now)]
        return out

    def _forget_sent(self, before_ms: int) -> None:
        """Sent keys older than `before_ms`, and all but the last SENT_KEPT, are forgotten."""
        while self.sent:
            key, at = next(iter(self.sent.items()))
            if at >= before_ms and len(self.sent) <= SENT_KEPT:
                break
            del self.sent[key]

    def clock_jumped(self, delta_ms: int) -> None:
        self.book.shift(delta_ms)
        self.codes.shift(delta_ms)
        self.staff.shift(delta_ms)
        self.returns.shift(delta_ms)
        if self.next_report_at is not None:
            self.next_report_at += delta_ms
        self.sent = {k: at + delta_ms for k, at in self.sent.items()}
        for entry in self.outbox.values():
            entry["next_at"] = entry.get("next_at", 0) + delta_ms
            if entry.get("due") is not None:
                entry["due"] += delta_ms

    async def run(self) -> None:
        """Boot check of opens a crash cut short, then expiry, reminders, sessions, the daily
        report and the outbox, until cancelled."""
        await self.core.wait_ready(60)
        self._reconcile()
        while True:
            try:
                self._periodic()
                await self._send_due()
            except Exception as exc:  # a full disk, a bad entry: the next round tries again
                self.core.journal.line("parcels_tick_failed", level="warning", error=repr(exc))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()

    def _reconcile(self) -> None:
        """An open the books wait on that the machine no longer has: the door's outcome was
        committed and the crash came before the book's write. The cell's state tells which."""
        now = self.core.clock()
        out: list[Any] = []
        machine = self.core.machine
        for cell, load in list(self.book.loads.items()):
            if load.pending is None or machine.pending_purpose(cell) is not None:
                continue
            tenancy = machine.tenancy(cell)
            if load.pending[0] == "parcel_deposit":
                done = tenancy is not None and tenancy.get("business") == "parcels"
            else:
                done = tenancy is None
            out.extend(self._door_outcome(load.pending[0], cell, done, None, now))
        for ret in list(self.returns.returns.values()):
            if ret.cell is None or ret.state not in ("dropping", "collecting"):
                continue
            if machine.pending_purpose(ret.cell) is not None:
                continue
            tenancy = machine.tenancy(ret.cell)
            done = (tenancy is not None) if ret.state == "dropping" else tenancy is None
            purpose = "return_drop" if ret.state == "dropping" else "return_collect"
            out.extend(self._door_outcome(purpose, ret.cell, done, None, now))
        out.extend(self._faults_gone(now))
        out.extend(self._faults_unseen(now))
        if out:
            self._commit(out)

    def _faults_gone(self, now: int) -> list[Event]:
        """Faults the book still keeps that the restored cell machine no longer has: its
        `unblocked` / `board_online` was committed and the crash came before the book's write
        (two writes). Ended now, so the window runs again instead of staying paused for ever."""
        return [Event("parcel_window_resumed", cell,
                      {"due_at": self._due(cell), "reason": FAULT_GONE_AT_START})
                for cell in self.book.faults_gone(now, self._fault_holds)]

    def _faults_unseen(self, now: int) -> list[Event]:
        """The other side of the same two writes: the cell machine committed a fault (a lock
        fault, a forced open, its board offline) and the crash came before the book's pause.
        Paused now (a block from when the cell was blocked), so the window does not run out
        while nobody can open the cell."""
        out = []
        for cell in sorted(self.book.loads):
            for cause, since in self._faults_of(cell, now):
                if self.book.fault_started(cell, since, cause):
                    out.append(Event("parcel_window_paused", cell,
                                     {"reason": FAULT_BEGAN_BEFORE_RESTART}))
        return out

    def _faults_of(self, cell: int, now: int) -> list[tuple[str, int]]:
        """The faults that stop the cell's window as the cell machine has them, with when each
        began (a board's: not known, `now`)."""
        spec = self._spec(cell)
        if spec is None:  # no longer configured: nothing holds it
            return []
        out = []
        block = self.core.machine.block(cell)
        if block is not None and block[0] in PAUSING_BLOCKS:
            out.append((CELL_BLOCKED, block[1] if block[1] is not None else now))
        if self._board_offline(spec.board):
            out.append((BOARD_OFFLINE, now))
        return out

    def _fault_holds(self, cell: int, cause: str) -> bool:
        """Does the cell machine still have this fault: the cell blocked, its board offline?
        A cell blocked again for another reason keeps its fault: `unblocked` ends it, as live."""
        spec = self._spec(cell)
        if spec is None:  # no longer configured: nothing holds it
            return False
        if cause in (CELL_BLOCKED, FAULT) and self.core.machine.block(cell) is not None:
            return True
        return cause in (BOARD_OFFLINE, FAULT) and self._board_offline(spec.board)

    def _board_offline(self, board: str) -> bool:
        return bool(self.core.machine.boards().get(board, {}).get("offline"))

    def _spec(self, cell: int) -> Any:
        """The cell's configuration (None: no longer configured)."""
        return next((c for c in self.core.config.cells if c.id == cell), None)

    def _periodic(self) -> None:
        now = self.core.clock()
        self.book.forget_finished(now - FINISHED_KEPT_MS)  # stored with the next step
        self._forget_sent(now - FINISHED_KEPT_MS)
        out = [*self.book.tick(now), *self.staff.tick(now)]
        section = self.section()
        at, emails = section.notify.daily_report_at, section.notify.daily_report_emails
        if at and emails:
            from daemon.parcels.report import next_daily

            tz = datetime.now().astimezone().tzinfo
            if self.next_report_at is None:
                self.next_report_at = next_daily(at, now, tz)  # type: ignore[arg-type]
            elif now >= self.next_report_at:
                self.next_report_at = next_daily(at, now, tz)  # type: ignore[arg-type]
                self.queue_report(emails, "daily")
        if out:
            self._step(lambda: self._commit(out))

    # ----------------------------------------------------------------- sending
    async def _send_due(self) -> None:
        now = self.core.clock()
        for key, entry in list(self.outbox.items()):
            if entry.get("next_at", 0) > now or key not in self.outbox:
                continue
            try:
                ok, detail = await self._send(entry)
            except (Refused, OSError) as exc:  # the hand-over could not be stored: not sent
                self.core.journal.line("parcel_notice_held", level="warning", key=key,
                                       error=repr(exc))
                return
            self.core.journal.line("parcel_notice", key=key, notice=entry["kind"], ok=ok,
                                   detail=detail)
            state = copy.deepcopy(self._state())
            try:
                if ok:
                    self.outbox.pop(key, None)
                    self.sent[key] = self.core.clock()
                    self._forget_sent(0)
                    data: dict[str, Any] = {"notice": entry["kind"],
                                            "parcels": entry["parcels"], "channels": detail}
                    if entry.get("resent"):
                        data["resent"] = _channels(entry["resent"])
                    self._commit([Event("parcel_notice_sent", entry["cell"] or None, data)])
                else:
                    entry["tries"] = entry.get("tries", 0) + 1
                    delay = RETRY_S[min(entry["tries"], len(RETRY_S)) - 1]
                    entry["next_at"] = self.core.clock() + delay * 1000
                    self._commit()
            except (Refused, OSError):
                self._put_back(state)

    async def _send(self, entry: dict[str, Any]) -> tuple[bool, str]:
        """Render and send one outbox entry, each of its messages once (see the module's
        doc); the arrival's code is derived here, now. (ok, the channels that took it)."""
        if self.notifier is None:
            return False, "no notifier"
        rendered = self._render(entry)
        if rendered is None:
            return True, "no recipient"
        message, targets = rendered
        done: list[str] = entry.setdefault("done", [])
        for target, channel, to in targets:
            if target in done:
                continue
            self._hand_over(entry, target)
            ref = self._ref(entry["key"], target)
            if channel == "email":
                sent = await self.notifier.send_email(to, message.subject, message.text,
                                                      ref=ref)
            else:
                sent = await self.notifier.send_sms(to, message.text, ref=ref)
            entry.pop("in_flight", None)  # answered: stored with the entry's next write
            if sent.ok:
                done.append(target)
        return all(t in done for t, _, _ in targets), _channels(done) or "none"

    def _hand_over(self, entry: dict[str, Any], target: str) -> None:
        """Store `target`'s message as in flight before it leaves. Found in flight (a crash
        came before the provider's answer), it goes again with the same reference and is
        named `resent`. Raises Refused / OSError (nothing changed) when the disk takes nothing."""
        if entry.get("in_flight") == target:
            resent = entry.setdefault("resent", [])
            if target not in resent:
                resent.append(target)
            self.core.journal.line("parcel_notice_in_doubt", level="warning",
                                   key=entry["key"], channel=_channels([target]))
            return
        before = entry.get("in_flight")
        entry["in_flight"] = target
        try:
            self._commit()
        except BaseException:
            if before is None:
                entry.pop("in_flight", None)
            else:
                entry["in_flight"] = before
            raise

    def _ref(self, key: str, target: str) -> str:
        """The message's own reference: the same for an entry's target on every try and after
        a restart, unique to this locker (keyed with its secret), nothing to read in it."""
        digest = hmac.new(self.secret, f"notice-ref:{key}:{target}".encode(),
                          hashlib.sha256).hexdigest()
        return f"parcel-{digest[:32]}"

    def _render(self, entry: dict[str, Any]) -> tuple[Any, list[tuple[str, str, str]]] | None:
        """The message and its targets (target name, channel, address); None: no recipient.
        A recipient's targets are "email" and "sms"; an administrator's "email:<address>"."""
        section = self.section()
        kind = entry["kind"]
        if kind in ("pickup_report", "cell_report"):
            message = texts.notice(kind, self.kiosk_language(), **self._admin_params(entry))
            return message, [(f"email:{to}", "email", to) for to in entry.get("to", [])]
        recipient = self.recipient(entry.get("recipient_id"))
        if recipient is None:
            return None
        language = recipient.language or self.kiosk_language()
        params: dict[str, Any] = {"address": section.address,
                                  "opening_hours": section.opening_hours,
                                  "due": _local(entry.get("due"))}
        if kind == "parcel_arrived":
            params["code"] = self.codes.derive(entry["seed"], entry["attempt"], entry["factor"])
            params["factor"] = entry["factor"]
        message = texts.notice(kind, language, **params)
        return message, [(c, c, to) for c, to in (("email", recipient.email),
                                                   ("sms", recipient.phone)) if to]

    def _admin_params(self, entry: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"locker": self.core.config.locker_id,
                                  "time": _local(entry.get("at")), "cell": entry["cell"],
                                  "parcels": ", ".join(entry["parcels"])}
        if entry["kind"] == "cell_report":
            params.update(cell_report(self._candidates(), self.book, self.returns).params())
        return params


def _sent(saved: Iterable[Any], now: int) -> dict[str, int]:
    """Sent keys as stored: [key, at] pairs (an older store's bare keys count as sent now)."""
    out: dict[str, int] = {}
    for item in saved:
        if isinstance(item, str):
            out[item] = now
        else:
            out[str(item[0])] = int(item[1])
    return out


def _channels(targets: Iterable[str]) -> str:
    """The channels of targets ("email:<address>" is e-mail): events never name addresses."""
    return ",".join(sorted({t.split(":", 1)[0] for t in targets}))


def _local(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M")


__all__ = ["STATE_KEY", "ParcelsError", "ParcelsService", "refusal"]
