"""The storage-locker business of one locker: rentals, payments, PINs, pickups, force majeure.

A `Business` of the locker core (daemon/core.py): the kiosk API (daemon/kiosk.py) and the
fleet's operator commands call in here; every change goes through the core's `apply`, so it is
persisted before it is announced or a lock moves.

Money is never lost and never taken twice (README "Storage lockers"):
- Before the terminal is asked for money, a payment record `charging` is committed; the charge
  uses the record's `op_id`, and the terminal takes money at most once per op_id.
- An approval is committed in the same write as what it pays for: the deposit (record `held`
  until the door closed on it), the extension, or the debt and the pickup (`captured`).
- A deposit whose door never opened, an approval that arrived when it was no longer wanted, or a
  crash anywhere in between is found by `reconcile` (at start and every `recheck_s`): the
  terminal is asked what happened and the money is voided or refunded, with events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contract.pricing import RentalTariff
from contract.profiles import Profile
from daemon.access.pin_guard import GuardPolicy, PinGuard
from daemon.access.sms_codes import CodePolicy, IssueStatus, PhoneError, SmsCodes, VerifyResult
from daemon.core import ErrorKind
from daemon.fsm import Event, Refused
from daemon.fsm.allocation import Candidate, allocate, available
from daemon.io.payment.port import PaymentResult, PaymentTerminal
from daemon.io.receipts.printers import ReceiptPrinter
from daemon.storage import billing
from daemon.storage.errors import StorageError
from daemon.storage.ledger import PaymentLedger, payment_data, payment_entry
from daemon.storage.receipting import ReceiptDesk
from daemon.storage.settings import KioskSettings, PrinterSettings
from daemon.storage.texts import text

if TYPE_CHECKING:
    from daemon.core import LockerCore, OperatorCommand
    from daemon.io.notifier import Notifier

#: Store meta key of the kiosk's limits (PIN failures, SMS sends): private, holds live codes.
KIOSK_STATE = "kiosk_limits"
#: Settled payment records are kept this long (a day) for the ctl view, then pruned.
PAYMENT_RETENTION_MS = 24 * 3600 * 1000


@dataclass
class Draft:
    """A rental being set up on the screen: in memory until it is paid and its door opens."""

    id: str
    cell: int
    size: str
    tariff: RentalTariff
    mode: str
    period_ms: int | None
    amount: int
    language: str
    created_at: int
    pin: str
    auth: str
    charging: bool
    limit_ms: int | None
    email: str | None = None
    phone: str | None = None
    phone_verified: bool = False
    #: phone -> code -> payment -> opening -> occupied; or cancelled.
    state: str = "payment"
    op_id: str | None = None
    tenancy_id: str | None = None
    detail: str = ""
    receipt: str | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rental_id": self.id,
            "cell": self.cell,
            "size": self.size,
            "state": self.state,
            "payment_mode": self.mode,
            "auth": self.auth,
            "charging": self.charging,
            "period_s": None if self.period_ms is None else self.period_ms // 1000,
            "amount": {"amount": self.amount, "currency": self.tariff.currency},
            "tariff": {"id": self.tariff.storage.id, "name": self.tariff.storage.name},
            "language": self.language,
        }
        if self.state == "occupied":
            out["pin"] = self.pin  # shown once on the screen that rented the cell
            out["tenancy_id"] = self.tenancy_id
            out["receipt"] = self.receipt
        if self.detail:
            out["detail"] = self.detail
        return out


class StorageService:
    """The storage business (a `daemon.core.Business`)."""

    name = "storage"

    def __init__(
        self,
        core: LockerCore,
        kiosk: KioskSettings,
        printer_settings: PrinterSettings,
        terminal: PaymentTerminal | None,
        notifier: Notifier | None,
        printer: ReceiptPrinter | None,
        *,
        recheck_s: float = 10.0,
    ) -> None:
        self.core = core
        self.kiosk = kiosk
        self.notifier = notifier
        self.recheck_s = recheck_s
        self.receipts = ReceiptDesk(core, printer_settings, printer, notifier)
        self.ledger = PaymentLedger(core, terminal, self.receipts)
        self.ledger.late_payment = self._late_payment
        self.guard = PinGuard(
            GuardPolicy(
                cell_attempts=kiosk.pin_attempts,
                cell_lockout_ms=int(kiosk.pin_lockout_s * 1000),
                kiosk_free_failures=kiosk.slow_after_failures,
                kiosk_window_ms=int(kiosk.slow_window_s * 1000),
                kiosk_delay_step_ms=kiosk.slow_step_ms,
                kiosk_max_delay_ms=kiosk.slow_max_ms,
            )
        )
        #: One lock per cell: a PIN is checked, compared and its failure recorded under it.
        self._pin_locks = {c.id: asyncio.Lock() for c in core.config.cells}
        self.codes = SmsCodes(CodePolicy(), default_country_code=kiosk.default_country_code)
        self.drafts: dict[str, Draft] = {}
        self._by_ref: dict[str, Draft] = {}
        self._restore_kiosk_state()

    @property
    def terminal(self) -> PaymentTerminal | None:
        return self.ledger.terminal

    def _restore_kiosk_state(self) -> None:
        saved = self.core.store.meta(KIOSK_STATE) or {}
        if saved.get("pins"):
            self.guard.restore(saved["pins"])
        if saved.get("codes"):
            with contextlib.suppress(ValueError):  # codes are worth less than starting
                self.codes.restore(saved["codes"])

    def _save_kiosk_state(self, events: Iterable[Event] = ()) -> None:
        """PIN failures and SMS send counts, durable: a restart lifts no limit."""
        self.codes.purge(self.core.clock())
        state = {"pins": self.guard.snapshot(), "codes": self.codes.snapshot()}
        self.core.apply(list(events), meta={KIOSK_STATE: state})

    # ----------------------------------------------------------------- profile and offers
    def profile(self) -> Profile:
        profile = self.core.profile()
        if profile is None:
            raise StorageError("no_profile", ErrorKind.UNAVAILABLE)
        return profile

    def offers(self, language: str | None = None) -> dict[str, Any]:
        """What the first screen shows: scenario, languages, sizes with free cells and prices."""
        profile = self.profile()
        scenario = profile.scenario
        free = self._free_cells()
        sizes: dict[tuple[str, bool], dict[str, Any]] = {}
        for spec in self.core.config.cells:
            try:
                tariff = _cell_tariff(profile, spec)
            except LookupError:
                continue
            key = (spec.size, tariff.charging is not None)
            entry = sizes.setdefault(
                key,
                {
                    "size": spec.size,
                    "charging": tariff.charging is not None,
                    "free": 0,
                    "tariff": _tariff_view(tariff),
                    "periods": [
                        {"period_s": p, "price": tariff.price_for_period(p * 1000).to_dict()}
                        for p in (scenario.prepaid_periods_s if scenario.payment_mode != "postpaid"
                                  else [])
                    ],
                },
            )
            if spec.id in free:
                entry["free"] += 1
        return {
            "locker_id": self.core.config.locker_id,
            "profile": {"name": profile.name, "version": profile.version},
            "currency": profile.currency,
            "languages": scenario.languages,
            "default_language": scenario.default_language,
            "language": language or scenario.default_language,
            "auth": scenario.auth,
            "payment_mode": scenario.payment_mode,
            # What the screen may offer: postpaid pays the time used before each temporary
            # access, which needs a card terminal.
            "temporary_access": scenario.temporary_access
            and (scenario.payment_mode != "postpaid" or self.terminal is not None),
            "temporary_access_pays": "time_used" if scenario.payment_mode == "postpaid"
            else "nothing",
            "extension": scenario.payment_mode == "partial",
            "storage_limit_s": scenario.storage_limit_s,
            "sizes": sorted(sizes.values(), key=lambda e: ("SML".index(e["size"]), e["charging"])),
        }

    def _reserved(self) -> set[int]:
        """Cells a rental being set up on a screen holds."""
        return {d.cell for d in self.drafts.values()
                if d.state in ("phone", "code", "payment", "paying")}

    def _candidates(self, profile: Profile) -> dict[int, Candidate]:
        """Every cell as the allocator sees it, by id (in the configuration's order)."""
        machine = self.core.machine
        return {
            spec.id: Candidate(
                id=spec.id, size=spec.size, business=profile.business_of_cell(spec.id, spec.size),
                state=view["state"], door=view["door"],
                pending=machine.pending_purpose(spec.id) is not None,
            )
            for spec in self.core.config.cells
            for view in (machine.cell_view(spec.id),)
        }

    def _free_cells(self) -> set[int]:
        reserved = self._reserved()
        return {cid for cid, cell in self._candidates(self.profile()).items()
                if available(cell, self.name, reserved)}

    # ----------------------------------------------------------------- renting
    def create_rental(
        self,
        size: str,
        *,
        charging: bool = False,
        period_s: int | None = None,
        language: str | None = None,
        email: str | None = None,
    ) -> Draft:
        profile = self.profile()
        scenario = profile.scenario
        now = self.core.clock()
        self._expire_drafts(now)
        language = self.language(language)
        mode = scenario.payment_mode
        if mode == "postpaid":
            period_s = None
        elif period_s not in scenario.prepaid_periods_s:
            raise StorageError("bad_period", ErrorKind.INVALID, periods=scenario.prepaid_periods_s)
        candidates = []
        for spec in self.core.config.cells:
            if spec.size != size:
                continue
            try:
                tariff = _cell_tariff(profile, spec)
            except LookupError:
                continue
            if (tariff.charging is not None) != charging:
                continue
            candidates.append((spec.id, tariff))
        if not candidates:
            raise StorageError("unknown_size", ErrorKind.NOT_FOUND, size=size)
        cells = self._candidates(profile)
        cell = allocate([cells[cid] for cid, _ in candidates], self.name, size,
                        reserved=self._reserved())
        if cell is None:
            raise StorageError("no_free_cell", ErrorKind.CONFLICT, size=size)
        tariff = dict(candidates)[cell]
        period_ms = None if period_s is None else period_s * 1000
        limit_s = profile.storage_limit_s(cell, size)
        default_limit = int(self.core.machine.timing.storage_limit_ms)
        limit_ms = limit_s * 1000 if limit_s is not None else default_limit
        amount = billing.prepayment(tariff, mode, period_ms)
        draft = Draft(
            id=uuid.uuid4().hex,
            cell=cell,
            size=size,
            tariff=tariff,
            mode=mode,
            period_ms=period_ms,
            amount=amount,
            language=language,
            created_at=now,
            pin=_new_pin(self.kiosk.pin_digits),
            auth=scenario.auth,
            charging=tariff.charging is not None,
            limit_ms=limit_ms,
            email=email or None,
            state="phone" if scenario.auth == "sms" else "payment",
        )
        self.drafts[draft.id] = draft
        return draft

    def draft(self, rental_id: str) -> Draft:
        draft = self.drafts.get(rental_id) or self._paid_draft(rental_id)
        if draft is None:
            raise StorageError("unknown_rental", ErrorKind.NOT_FOUND)
        return draft

    def _paid_draft(self, rental_id: str) -> Draft | None:
        """A rental whose door opened outlives a restart: the screen that started it polls on
        and sees it rebuilt from its tenancy (unpaid drafts are screen state, and are gone)."""
        now, machine = self.core.clock(), self.core.machine
        for spec in self.core.config.cells:
            pending = machine.pending_tenancy(spec.id)
            tenancy = pending or machine.tenancy(spec.id)
            if not tenancy or tenancy.get("rental_id") != rental_id:
                continue
            created = now if pending else int(tenancy.get("started_at") or now)
            if now - created > 4 * int(self.kiosk.draft_ttl_s * 1000):
                return None  # as long as the draft itself would have been kept, and no longer
            secret = tenancy.get("secret") or {}
            payments = tenancy.get("payments") or []
            draft = Draft(
                id=rental_id, cell=spec.id, size=spec.size,
                tariff=RentalTariff.model_validate(tenancy["tariff"]), mode=tenancy["mode"],
                period_ms=tenancy.get("period_ms"), amount=int(tenancy.get("paid") or 0),
                language=tenancy.get("language", "en"), created_at=created,
                pin=secret.get("pin", ""), auth=tenancy.get("auth", ""),
                charging=bool(tenancy.get("charging")), limit_ms=tenancy.get("limit_ms"),
                email=secret.get("email"), phone=secret.get("phone"),
                phone_verified="phone" in secret, state="opening" if pending else "occupied",
                op_id=payments[0]["op_id"] if payments else None, tenancy_id=tenancy["id"],
                receipt=self.receipts.kept_text(spec.id, tenancy),
            )
            if pending:
                self._by_ref[rental_id] = draft
            self.drafts[rental_id] = draft
            return draft
        return None

    def cancel_draft(self, rental_id: str) -> Draft:
        draft = self.draft(rental_id)
        if draft.state in ("phone", "code", "payment"):
            draft.state = "cancelled"
            draft.detail = "cancelled by the client"
        return draft

    def language(self, language: str | None) -> str:
        scenario = self.profile().scenario
        if language is None:
            return scenario.default_language
        if language not in scenario.languages:
            raise StorageError("unknown_language", ErrorKind.INVALID, language=language)
        return language

    async def send_code(self, rental_id: str, phone: str) -> dict[str, Any]:
        draft = self.draft(rental_id)
        if draft.auth != "sms" or draft.state not in ("phone", "code"):
            raise StorageError("wrong_step", ErrorKind.CONFLICT, detail=draft.state)
        now = self.core.clock()
        try:
            issue = self.codes.issue(phone, now)
        except PhoneError as exc:
            raise StorageError("bad_phone", ErrorKind.INVALID, detail=str(exc)) from None
        if issue.status is IssueStatus.TOO_SOON:
            seconds = max(1, -(-(issue.retry_at_ms or now) + now) // -1000)
            raise StorageError("sms_too_soon", ErrorKind.TOO_MANY, seconds=seconds)
        if issue.status is IssueStatus.TOO_MANY_SENDS:
            raise StorageError("sms_too_many", ErrorKind.TOO_MANY)
        if self.notifier is None:
            raise StorageError("sms_failed", ErrorKind.UNAVAILABLE)
        sent = await self.notifier.send_sms(
            issue.phone, text(draft.language, "sms_code", {"code": issue.code})
        )
        self.core.journal.line(
            "sms_code_sent", ok=sent.ok, detail=sent.detail, rental=draft.id, cell=draft.cell
        )
        if not sent.ok:
            raise StorageError("sms_failed", ErrorKind.UPSTREAM_FAILED)
        draft.phone = issue.phone
        draft.state = "code"
        self._save_kiosk_state()
        return {"sent": True, "expires_at": issue.expires_at_ms, "sends_left": issue.sends_left}

    def verify_code(self, rental_id: str, code: str) -> Draft:
        draft = self.draft(rental_id)
        if draft.state != "code" or draft.phone is None:
            raise StorageError("wrong_step", ErrorKind.CONFLICT, detail=draft.state)
        outcome = self.codes.verify(draft.phone, code, self.core.clock())
        self._save_kiosk_state()
        if outcome is VerifyResult.OK:
            draft.phone_verified = True
            draft.state = "payment"
            return draft
        if outcome is VerifyResult.WRONG:
            raise StorageError("wrong_code", ErrorKind.FORBIDDEN,
                               attempts=self.codes.attempts_left(draft.phone))
        if outcome is VerifyResult.EXPIRED:
            raise StorageError("code_expired", ErrorKind.GONE)
        raise StorageError("code_locked", ErrorKind.TOO_MANY)

    async def start_rental(self, rental_id: str) -> Draft:
        """Take the prepayment (if any), then open the door; the tenancy starts when it closes."""
        draft = self.draft(rental_id)
        if draft.state != "payment":
            raise StorageError("wrong_step", ErrorKind.CONFLICT, detail=draft.state)
        self._check_open(draft.cell, "deposit")
        draft.state = "paying"
        draft.tenancy_id = f"{draft.cell}-{draft.id[:12]}"
        tenancy = self._new_tenancy(draft)
        txn = op_id = None
        try:
            if draft.amount == 0:
                self._open_deposit(draft, tenancy, None)
            else:
                txn, op_id = await self._prepay(draft, tenancy)
        except BaseException:
            if draft.state == "paying":
                draft.state = "payment"
            raise
        if draft.amount or draft.auth == "printed_pin":  # a PIN slip even when nothing is due
            draft.receipt = await self.receipts.issue(
                "rent", draft.cell, draft.amount, draft.tariff.currency, txn, draft.language,
                pin=draft.pin if draft.auth == "printed_pin" else None, email=draft.email,
                op_id=op_id, tenancy_id=draft.tenancy_id,
            )
        return draft

    async def _prepay(self, draft: Draft, tenancy: dict[str, Any]) -> tuple[str | None, str]:
        """Charge the prepayment; on approval commit it with the deposit that opens the door."""
        assert draft.tenancy_id is not None  # start_rental names the tenancy before it pays
        async with self.ledger.lock:
            record, result = await self.ledger.charge(
                "rent", draft.cell, draft.amount, draft.tariff.currency,
                tenancy_id=draft.tenancy_id, ref=draft.id, language=draft.language,
                op_id=self.ledger.retry_id(draft.op_id),  # another try: the same operation
            )
            draft.op_id = record["op_id"]
            if not result.approved:
                draft.state = "payment"  # the client may try another card
                self.ledger.refuse(record, result)
            tenancy["paid"] = draft.amount
            tenancy["payments"] = [payment_entry(record, result, self.core.clock())]
            self._open_deposit(draft, tenancy, {**record, "status": "held",
                                                "txn": result.transaction_id})
        return result.transaction_id, record["op_id"]

    def _new_tenancy(self, draft: Draft) -> dict[str, Any]:
        due_after = billing.due_after_ms(draft.tariff, draft.mode, draft.amount, draft.limit_ms)
        secret: dict[str, Any] = {"pin": draft.pin}
        if draft.phone:
            secret["phone"] = draft.phone
        if draft.email:
            secret["email"] = draft.email
        return {
            "id": draft.tenancy_id,
            "kind": "rental",
            "mode": draft.mode,
            "tariff": draft.tariff.model_dump(mode="json"),
            "currency": draft.tariff.currency,
            "paid": 0,
            "payments": [],
            "waived": 0,
            "period_ms": draft.period_ms,
            "limit_ms": draft.limit_ms,
            "due_after_ms": due_after,
            "charging": draft.charging,
            "auth": draft.auth,
            "language": draft.language,
            "rental_id": draft.id,
            "secret": secret,
        }

    def _open_deposit(
        self, draft: Draft, tenancy: dict[str, Any], record: dict[str, Any] | None
    ) -> None:
        """Commit the approval (if any) with the deposit that opens the door, in one write."""
        now = self.core.clock()
        try:
            actions = self.core.machine.command(
                draft.cell, "deposit", now, ref=draft.id, tenancy=tenancy
            )
        except Refused as refused:
            draft.state = "cancelled"
            draft.detail = refused.reason
            if record is not None:  # paid, but the door cannot open: give the money back
                self.ledger.refund_due(record, refused.reason)
            raise StorageError("cell_unavailable", ErrorKind.CONFLICT,
                               detail=refused.reason) from None
        events = []
        if record is not None:
            record["updated_at"] = now
            events.append(Event("payment_approved", draft.cell, payment_data(record), False))
        try:
            self.core.apply([*events, *actions], payments=[record] if record else [])
        except Refused as refused:  # storage_full: nothing moved; a held payment is reconciled
            raise _kiosk_refusal(refused) from None
        draft.state = "opening"
        self._by_ref[draft.id] = draft

    # ----------------------------------------------------------------- existing rentals
    async def authorise(self, cell: int, pin: str) -> dict[str, Any]:
        """The cell's tenancy if `pin` opens it; wrong PINs are counted and slowed down.

        The lockout check, the comparison and the record of a failure run under the cell's lock
        with no await between them, so parallel requests cannot all pass the check before the
        first failures are counted: at most `pin_attempts` wrong PINs per lockout.
        """
        self._refuse_if_locked(cell)  # at once, before any waiting
        delay = self.guard.delay_ms(self.core.clock())
        if delay:
            await asyncio.sleep(delay / 1000)
        lock = self._pin_locks.get(cell)
        if lock is None:  # no such cell: nothing to lock out, but it counts for the slowdown
            self.guard.failed_elsewhere(self.core.clock())
            self._save_kiosk_state()
            raise StorageError("wrong_pin", ErrorKind.FORBIDDEN,
                               attempts=self.guard.policy.cell_attempts)
        async with lock:
            self._refuse_if_locked(cell)
            return self._check_pin(cell, pin)

    def _refuse_if_locked(self, cell: int) -> None:
        now = self.core.clock()
        until = self.guard.locked_until(cell, now)
        if until is not None:
            raise _pin_locked(until, now)

    def _check_pin(self, cell: int, pin: str) -> dict[str, Any]:
        """Compare and record in one step (no await): the caller holds the cell's lock."""
        tenancy = self.core.machine.tenancy(cell)
        expected = ((tenancy or {}).get("secret") or {}).get("pin")
        typed = pin.strip() if isinstance(pin, str) else ""
        if expected and hmac.compare_digest(typed.encode(), str(expected).encode()):
            if self.guard.attempts_left(cell) < self.guard.policy.cell_attempts:
                self.guard.succeeded(cell)
                self._save_kiosk_state()
            assert tenancy is not None
            return tenancy
        now = self.core.clock()
        locked = self.guard.failed(cell, now)
        if locked is not None:
            self._save_kiosk_state(
                [Event("pin_locked", cell, {"until": locked}, True)]
            )
            raise _pin_locked(locked, now)
        self._save_kiosk_state()
        raise StorageError("wrong_pin", ErrorKind.FORBIDDEN,
                           attempts=self.guard.attempts_left(cell))

    async def account(self, cell: int, pin: str) -> dict[str, Any]:
        tenancy = await self.authorise(cell, pin)
        return self._account(cell, tenancy)

    def _account(self, cell: int, tenancy: dict[str, Any]) -> dict[str, Any]:
        now = self.core.clock()
        bill = billing.bill(tenancy, now)
        profile = self.core.profile()
        scenario = profile.scenario if profile is not None else None
        state = self.core.machine.cell_view(cell)["state"]
        return {
            "cell": cell,
            "state": state,
            "tenancy_id": tenancy["id"],
            "started_at": tenancy.get("started_at"),
            "due_at": tenancy.get("due_at"),
            "payment_mode": tenancy.get("mode"),
            "charging": bool(tenancy.get("charging")),
            "bill": bill.to_dict(),
            "can": {
                "pickup": True,
                "temporary": self._temporary_possible(tenancy, bill, state),
                "extend": tenancy.get("mode") == "partial",
            },
            #: What a temporary access costs now (postpaid: the time used so far).
            "temporary_due": bill.due if tenancy.get("mode") == "postpaid" else 0,
            "extension_periods_s": scenario.prepaid_periods_s if scenario else [],
        }

    def _temporary_possible(self, tenancy: dict[str, Any], bill: billing.Bill, state: str) -> bool:
        profile = self.core.profile()
        if profile is None or not profile.scenario.temporary_access or state != "occupied":
            return False
        if tenancy.get("mode") == "postpaid":  # the time used is paid first: a terminal is needed
            return bill.due == 0 or self.terminal is not None
        return bill.due == 0

    async def pickup(self, cell: int, pin: str) -> dict[str, Any]:
        """Pay what is owed, then open the door; the tenancy ends when it closes."""
        authorised = await self.authorise(cell, pin)
        self._check_open(cell, "pickup")
        ref = f"pickup-{uuid.uuid4().hex[:12]}"
        async with self.ledger.lock:  # the bill is made and paid on the tenancy as it is now
            tenancy = self._same_tenancy(cell, authorised)
            bill = billing.bill(tenancy, self.core.clock())
            bill_event = Event("pickup_bill", cell,
                               {"tenancy_id": tenancy["id"], **bill.to_dict()}, False)
            if bill.due == 0:
                self.core.apply([bill_event, *self._machine_command(cell, "pickup", ref)])
                return {"cell": cell, "paid": 0, "bill": bill.to_dict(), "door": "opening"}
            record, result = await self.ledger.charge(
                "pickup", cell, bill.due, bill.currency, tenancy_id=tenancy["id"], ref=ref,
                language=str(tenancy.get("language", "en")),
            )
            if not result.approved:
                self.ledger.refuse(record, result)
            actions = self._book(cell, tenancy["id"], record, result, "debt_paid")
            try:
                actions += self._machine_command(cell, "pickup", ref)
            finally:  # the debt is paid even if the door cannot open right now
                self.core.apply([bill_event, *actions],
                                  payments=[self.ledger.captured(record, result.transaction_id)])
        receipt = await self.receipts.issue(
            "pickup", cell, bill.due, bill.currency, result.transaction_id,
            str(tenancy.get("language", "en")), email=(tenancy.get("secret") or {}).get("email"),
            op_id=record["op_id"],
        )
        return {"cell": cell, "paid": bill.due, "bill": bill.to_dict(), "door": "opening",
                "receipt": receipt}

    async def temporary(
        self, cell: int, pin: str, expected_due: int | None = None
    ) -> dict[str, Any]:
        """Open and close the cell during the rental.

        Postpaid: what the time used so far costs is paid first (the screen showed it as the
        account's `temporary_due`; `expected_due` is what it showed, and a bill that moved on
        since is not charged), then the door opens; billing goes on. Prepaid and partial:
        refused while anything is owed (the cell is overdue: pay at pickup, or extend).
        """
        authorised = await self.authorise(cell, pin)
        if not self.profile().scenario.temporary_access:
            raise StorageError("temporary_disabled", ErrorKind.FORBIDDEN)
        ref = f"temp-{uuid.uuid4().hex[:12]}"
        if authorised.get("mode") != "postpaid":
            bill = billing.bill(authorised, self.core.clock())
            if bill.due > 0 or self.core.machine.cell_view(cell)["state"] == "overdue":
                raise _debt(bill)
            self.core.apply(self._machine_command(cell, "temporary", ref))
            return {"cell": cell, "paid": 0, "door": "opening", "bill": bill.to_dict()}
        self._check_open(cell, "temporary")
        async with self.ledger.lock:  # the bill is made and paid on the tenancy as it is now
            tenancy = self._same_tenancy(cell, authorised)
            bill = billing.bill(tenancy, self.core.clock())
            if expected_due is not None and expected_due != bill.due:
                raise StorageError("due_changed", ErrorKind.CONFLICT, due=bill.due,
                                   currency=bill.currency, amount=str(bill.money(bill.due)))
            if bill.due == 0:
                self.core.apply(self._machine_command(cell, "temporary", ref))
                return {"cell": cell, "paid": 0, "door": "opening", "bill": bill.to_dict()}
            language = str(tenancy.get("language", "en"))
            record, result = await self.ledger.charge(
                "temporary", cell, bill.due, bill.currency, tenancy_id=tenancy["id"], ref=ref,
                language=language,
            )
            if not result.approved:
                self.ledger.refuse(record, result)
            actions = self._book(cell, tenancy["id"], record, result, "debt_paid")
            try:
                actions += self._machine_command(cell, "temporary", ref)
            finally:  # the time used is paid even if the door cannot open right now
                self.core.apply(actions,
                                  payments=[self.ledger.captured(record, result.transaction_id)])
        receipt = await self.receipts.issue(
            "temporary", cell, bill.due, bill.currency, result.transaction_id, language,
            email=(tenancy.get("secret") or {}).get("email"), op_id=record["op_id"],
        )
        after = billing.bill(self.core.machine.tenancy(cell) or tenancy, self.core.clock())
        return {"cell": cell, "paid": bill.due, "door": "opening", "bill": after.to_dict(),
                "receipt": receipt}

    async def extend(self, cell: int, pin: str, period_s: int) -> dict[str, Any]:
        """Pay for `period_s` more (partial mode): the cell is not overdue until then."""
        authorised = await self.authorise(cell, pin)
        scenario = self.profile().scenario
        if authorised.get("mode") != "partial":
            raise StorageError("extension_disabled", ErrorKind.FORBIDDEN)
        if period_s not in scenario.prepaid_periods_s:
            raise StorageError("bad_period", ErrorKind.INVALID, periods=scenario.prepaid_periods_s)
        language = str(authorised.get("language", "en"))
        async with self.ledger.lock:  # quoted and paid on the tenancy as it is now
            tenancy = self._same_tenancy(cell, authorised)
            amount, target_ms = billing.extension_quote(
                tenancy, period_s * 1000, self.core.clock()
            )
            limit_ms = tenancy.get("limit_ms")
            if limit_ms is not None and target_ms > limit_ms:
                raise StorageError("beyond_limit", ErrorKind.INVALID, hours=limit_ms // 3_600_000)
            if amount == 0:
                return self._account(cell, tenancy)
            record, result = await self.ledger.charge(
                "extend", cell, amount, tenancy["currency"], tenancy_id=tenancy["id"],
                ref=f"extend-{uuid.uuid4().hex[:12]}", language=language,
            )
            if not result.approved:
                self.ledger.refuse(record, result)
            actions = self._book(cell, tenancy["id"], record, result, "rental_extended")
            self.core.apply(actions,
                              payments=[self.ledger.captured(record, result.transaction_id)])
        receipt = await self.receipts.issue(
            "extend", cell, amount, tenancy["currency"], result.transaction_id, language,
            email=(tenancy.get("secret") or {}).get("email"), op_id=record["op_id"],
        )
        account = self._account(cell, self.core.machine.tenancy(cell) or tenancy)
        return {**account, "paid": amount, "receipt": receipt}

    def _same_tenancy(self, cell: int, authorised: dict[str, Any]) -> dict[str, Any]:
        """The cell's tenancy now, if it is still the one the PIN opened."""
        tenancy = self.core.machine.tenancy(cell)
        if tenancy is None or tenancy["id"] != authorised["id"]:
            raise StorageError("not_occupied", ErrorKind.NOT_FOUND)
        return tenancy

    def _book(
        self, cell: int, tenancy_id: str, record: dict, result: PaymentResult, kind: str
    ) -> list[Any]:
        """The machine actions that book an approved payment onto the tenancy as it is now.

        If that tenancy ended while the card was being charged, the money is given back and
        StorageError(not_occupied) raised.
        """
        tenancy = self.core.machine.tenancy(cell)
        if tenancy is None or tenancy["id"] != tenancy_id:
            self.ledger.refund_due({**record, "txn": result.transaction_id}, "tenancy_ended")
            raise StorageError("not_occupied", ErrorKind.NOT_FOUND)
        now = self.core.clock()
        paid = int(tenancy.get("paid", 0)) + record["amount"]
        changes = {
            "paid": paid,
            "payments": [*tenancy.get("payments", []), payment_entry(record, result, now)],
            "due_at": billing.due_at_after_payment(tenancy, paid),
        }
        if tenancy.get("billing_stopped_at") is not None or kind == "debt_paid":
            changes.pop("due_at")  # a debt paid at pickup: the rental still ended overdue
        return self.core.machine.update_tenancy(
            cell, changes, now,
            event=(kind, {**payment_data({**record, "txn": result.transaction_id}),
                          "paid_total": paid, "due_at": changes.get("due_at")}),
        )

    # ----------------------------------------------------------------- operator acts
    def waive(self, cell: int, reason: str, operator: str, ref: str | None = None) -> dict:
        """Clear the debt of the cell's tenancy and stop its billing (force majeure)."""
        tenancy = self._tenancy_or_refuse(cell)
        now = self.core.clock()
        bill = billing.bill(tenancy, now)
        changes = {
            "waived": bill.waived + bill.due,
            "billing_stopped_at": now,
            "due_at": None,
            "waiver": {"reason": reason, "operator": operator, "waived_at": now,
                       "amount": bill.due},
        }
        data = {"amount": bill.due, "currency": bill.currency, "reason": reason,
                "operator": operator, **({"ref": ref} if ref else {})}
        self.core.apply(
            self.core.machine.update_tenancy(cell, changes, now, event=("debt_waived", data))
        )
        return {"cell": cell, "tenancy_id": tenancy["id"],
                "waived": {"amount": bill.due, "currency": bill.currency}}

    def reveal_pin(self, cell: int, reason: str, operator: str, ref: str | None = None) -> dict:
        """The PIN, for the console only; the act itself is an event (without the PIN)."""
        tenancy = self._tenancy_or_refuse(cell)
        pin = (tenancy.get("secret") or {}).get("pin")
        if not pin:
            raise Refused("no_pin", f"cell {cell}: the tenancy has no PIN")
        data = {"tenancy_id": tenancy["id"], "reason": reason, "operator": operator,
                **({"ref": ref} if ref else {})}
        self.core.record_event("pin_revealed", data, cell=cell)
        return {"cell": cell, "tenancy_id": tenancy["id"], "pin": pin}

    def _tenancy_or_refuse(self, cell: int) -> dict[str, Any]:
        try:
            tenancy = self.core.machine.tenancy(cell)
        except KeyError:
            raise Refused("unknown_cell", f"no cell {cell}") from None
        if tenancy is None:
            raise Refused("not_occupied", f"cell {cell} has no tenancy")
        if "tariff" not in tenancy:  # a parcel (`lockerd ctl deposit`): nothing billed, no PIN
            raise Refused("not_a_rental", f"cell {cell}: the tenancy is not a storage rental")
        return tenancy

    # ----------------------------------------------------------------- machine helpers
    def _check_open(self, cell: int, kind: str) -> None:
        try:
            self.core.machine.check_command(cell, kind, self.core.clock())
        except Refused as refused:
            raise _kiosk_refusal(refused) from None

    def _machine_command(self, cell: int, kind: str, ref: str) -> list[Any]:
        try:
            return self.core.machine.command(cell, kind, self.core.clock(), ref=ref)
        except Refused as refused:
            raise _kiosk_refusal(refused) from None

    # ----------------------------------------------------------------- the Business seam
    def operator_commands(self) -> dict[str, OperatorCommand]:
        """The console's acts on a rental (looked up at each command)."""
        return {"waive": self.waive, "reveal-pin": self.reveal_pin}

    def kiosk_routes(self) -> tuple[()]:
        """None beside the kiosk's own: the kiosk API is this business's (daemon/kiosk.py)."""
        return ()

    async def run(self) -> None:
        """Boot reconciliation (charging sockets, payments), then payments now and then
        (terminal back online, crash recovered)."""
        self.core.spawn(self._charging_at_boot())
        await self.core.wait_ready(60)
        while True:
            try:
                await self.ledger.reconcile()
                self.core.store.prune_payments(self.core.clock() - PAYMENT_RETENTION_MS)
            except (Refused, OSError) as exc:  # the disk is full: the next round tries again
                self.core.journal.line("payments_not_reconciled", level="warning",
                                         error=str(exc))
            self._expire_drafts(self.core.clock())
            await asyncio.sleep(self.recheck_s)

    def _late_payment(self, record: dict[str, Any], known: PaymentResult) -> bool:
        """An extension or debt whose approval was learnt late: book it if the tenancy is on."""
        cell = self.ledger.tenancy_cell(record["tenancy_id"])
        if cell is None:
            return False
        tenancy = self.core.machine.tenancy(cell) or {}
        if not any(p.get("op_id") == record["op_id"] for p in tenancy.get("payments", [])):
            actions = self._book(cell, record["tenancy_id"], record, known, "payment_recovered")
            self.core.apply(actions, payments=[self.ledger.captured(record,
                                                                      known.transaction_id)])
        return True

    # ----------------------------------------------------------------- reacting to the cells
    def settle(self, events: Iterable[Event]) -> list[dict]:
        """Payment records these events settle, committed in the same write (the core's apply)."""
        return self.ledger.captured_by(events)

    def committed(self, numbered: list[dict], changed: set[int]) -> None:
        """After a commit: deliver PINs, switch charging, void what a failed door left paid."""
        for record in numbered:
            kind, data = record["type"], record["data"]
            cell = data.get("cell")
            if kind == "deposit_completed" and cell is not None:
                draft = self._by_ref.pop(data.get("ref") or "", None)
                if draft is not None:
                    draft.state = "occupied"
                tenancy = self.core.machine.tenancy(cell)
                if tenancy is not None and tenancy.get("kind") == "rental":
                    self.core.spawn(self._deliver_pin(cell, tenancy))
                    if tenancy.get("charging"):
                        self.core.spawn(self.core.set_charging(cell, True))
            elif kind == "deposit_cancelled" and cell is not None:
                draft = self._by_ref.pop(data.get("ref") or "", None)
                if draft is not None:
                    draft.state = "cancelled"
                    draft.detail = data.get("reason", "")
                self.ledger.deposit_failed(data.get("tenancy_id"), data.get("reason", "cancelled"))
            elif (
                kind in ("pickup_completed", "eviction_completed")
                and cell is not None
                and (data.get("tenancy") or {}).get("charging")
            ):
                self.core.spawn(self.core.set_charging(cell, False))

    async def _deliver_pin(self, cell: int, tenancy: dict[str, Any]) -> None:
        secret = tenancy.get("secret") or {}
        channels = ["screen"]
        if tenancy.get("auth") == "printed_pin":
            channels.append("receipt")
        phone = secret.get("phone")
        if phone and self.notifier is not None:
            message = text(str(tenancy.get("language", "en")), "sms_pin",
                           {"locker": self.core.config.locker_id, "cell": cell,
                            "pin": secret.get("pin")})
            sent = await self.notifier.send_sms(phone, message)
            channels.append("sms" if sent.ok else "sms_failed")
        self.core.record_event("pin_issued", {"tenancy_id": tenancy["id"],
                                                "channels": channels}, cell=cell)

    # ----------------------------------------------------------------- housekeeping
    def _expire_drafts(self, now_ms: int) -> None:
        ttl = int(self.kiosk.draft_ttl_s * 1000)
        for draft_id, draft in list(self.drafts.items()):
            unfinished = draft.state in ("phone", "code", "payment")
            if (unfinished and now_ms - draft.created_at > ttl) or (
                draft.state in ("occupied", "cancelled") and now_ms - draft.created_at > 4 * ttl
            ):
                del self.drafts[draft_id]

    async def _charging_at_boot(self) -> None:
        """Once the boards reported: sockets of rented charging cells on, others off."""
        if not await self.core.wait_ready(3600):
            return
        for cell in self.core.config.cells:
            if cell.charging:
                tenancy = self.core.machine.tenancy(cell.id)
                await self.core.set_charging(cell.id, bool(tenancy and tenancy.get("charging")),
                                             quiet=True)

    def clock_jumped(self, delta_ms: int) -> None:
        self.guard.shift(delta_ms)
        self.codes.shift(delta_ms)
        self._save_kiosk_state()
        for draft in self.drafts.values():
            draft.created_at += delta_ms


def _cell_tariff(profile: Profile, spec: Any) -> RentalTariff:
    """The cell's tariff; charging only where the cell really has a socket (charge channel)."""
    tariff = profile.rental_tariff(spec.id, spec.size)
    if tariff.charging is not None and not spec.charging:
        return RentalTariff(storage=tariff.storage)
    return tariff


def _new_pin(digits: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(digits))


def _tariff_view(tariff: RentalTariff) -> dict[str, Any]:
    storage = tariff.storage
    out: dict[str, Any] = {
        "id": storage.id,
        "name": storage.name,
        "currency": storage.currency,
        "grace_s": storage.grace_s,
        "steps": [s.model_dump() for s in storage.steps],
    }
    if tariff.charging is not None:
        out["charging"] = tariff.charging.model_dump(mode="json", exclude_none=True)
    return out


def _pin_locked(until_ms: int, now_ms: int) -> StorageError:
    """423 pin_locked: `seconds` left (rounded up: never less than the truth), `minutes` the
    nearest whole minute (15 s is 0, not 1); the message says seconds under a minute."""
    seconds = max(1, -(-(until_ms - now_ms) // 1000))
    return StorageError("pin_locked", ErrorKind.LOCKED, seconds=seconds,
                        minutes=(seconds + 30) // 60)


def _debt(bill: billing.Bill) -> StorageError:
    """402 debt: `due` in minor units (an integer), `amount` the same as display text."""
    return StorageError("debt", ErrorKind.PAYMENT_REQUIRED, amount=str(bill.money(bill.due)),
                        due=bill.due, currency=bill.currency)


_REFUSAL_KIND = {"not_occupied": ErrorKind.NOT_FOUND, "busy": ErrorKind.CONFLICT,
                 "door_open": ErrorKind.CONFLICT, "debt": ErrorKind.PAYMENT_REQUIRED,
                 "storage_full": ErrorKind.NO_SPACE}


def _kiosk_refusal(refused: Refused) -> StorageError:
    code = refused.reason if refused.reason in _REFUSAL_KIND else "cell_unavailable"
    return StorageError(code, _REFUSAL_KIND.get(code, ErrorKind.CONFLICT), detail=refused.reason)


__all__ = ["Draft", "StorageError", "StorageService"]
