"""The card payments of a storage locker: charged once, never lost, given back when undelivered.

Every payment is a record in the store (`payments` table), keyed by its `op_id`, the id the
terminal takes money for at most once:

    charging -> declined | cancelled | offline          (no money taken; settled)
             -> unknown                                  (timeout: reconcile asks the terminal)
             -> held      (rent: the deposit that opens the door is pending)
                  -> captured   (the door closed on the deposit; same commit)
                  -> voided | refunded   (the door never opened)
             -> captured  (extension, debt at pickup: booked on the tenancy in the same commit)
    refund_due -> voided | refunded   (paid, but the cell could not be opened)

A retry of the same operation (another card after a decline) keeps the record and its `op_id`,
and every earlier attempt that took no money stays in its `attempts` list (status, reason, time):
the operator's audit sees "refused three times, then paid".

`reconcile` (at start and every `recheck_s`) settles whatever a timeout, a crash or an offline
terminal left open; it never touches a charge in progress (the money lock is held for a whole
charge-and-commit) and re-checks a record under the lock before giving money back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from daemon.core import ErrorKind
from daemon.fsm import Event
from daemon.io.payment.port import PaymentResult, PaymentStatus, PaymentTerminal
from daemon.storage.errors import StorageError
from daemon.storage.receipting import ReceiptDesk
from daemon.storage.texts import item_name

if TYPE_CHECKING:
    from daemon.core import LockerCore

#: How often a charge whose outcome is unknown (terminal timeout) is asked about at once.
STATUS_TRIES = 3
STATUS_GAP_S = 0.2

#: Books a payment that turned out approved late onto its tenancy; False if there is none.
LatePayment = Callable[[dict[str, Any], PaymentResult], bool]


def payment_data(record: dict) -> dict[str, Any]:
    """What every payment event says: which operation, for what, how much."""
    return {"op_id": record["op_id"], "payment_for": record["kind"], "amount": record["amount"],
            "currency": record["currency"], "tenancy_id": record.get("tenancy_id"),
            **({"txn": record["txn"]} if record.get("txn") else {})}


def payment_entry(record: dict, result: PaymentResult, now_ms: int) -> dict[str, Any]:
    """A payment as the tenancy lists it."""
    return {"op_id": record["op_id"], "payment_for": record["kind"], "amount": record["amount"],
            "txn": result.transaction_id, "paid_at": now_ms}


def _with_attempt(record: dict, status: str, reason: str, now_ms: int) -> list[dict[str, Any]]:
    """The record's attempts with this one added: an attempt that took no money (or may have:
    `unknown`, which reconcile or the next try settles) is never overwritten by the next."""
    return [*record.get("attempts", []), {"status": status, "reason": reason, "at": now_ms}]


class PaymentLedger:
    def __init__(
        self, core: LockerCore, terminal: PaymentTerminal | None, receipts: ReceiptDesk
    ) -> None:
        self.core = core
        self.terminal = terminal
        self.receipts = receipts
        #: Held for a whole charge and the commit of its outcome.
        self.lock = asyncio.Lock()
        self.late_payment: LatePayment = lambda record, result: False

    async def charge(
        self, kind: str, cell: int, amount: int, currency: str, *, tenancy_id: str, ref: str,
        language: str, op_id: str | None = None,
    ) -> tuple[dict[str, Any], PaymentResult]:
        """Commit a `charging` record, then ask the terminal; an unknown outcome is asked again.

        Call with `lock` held, and commit what the outcome means before releasing it. Passing
        the `op_id` of an earlier attempt (the client tries again) makes it the same operation:
        the terminal takes money for it at most once, even if the earlier outcome was unknown.
        """
        if self.terminal is None:
            raise StorageError("no_payment", ErrorKind.UNAVAILABLE)
        now = self.core.clock()
        earlier = (self.core.store.payment(op_id) if op_id else None) or {}
        record = {
            "op_id": op_id or f"{self.core.config.locker_id}-{kind}-{uuid.uuid4().hex[:16]}",
            "kind": kind,
            "cell": cell,
            "tenancy_id": tenancy_id,
            "ref": ref,
            "amount": amount,
            "currency": currency,
            "status": "charging",
            "settled": False,
            "created_at": earlier.get("created_at", now),
            "updated_at": now,
            "attempts": list(earlier.get("attempts", [])),
        }
        self.core.apply([], payments=[record])
        name = item_name(language, kind, cell)
        try:
            result = await self.terminal.charge(record["op_id"], amount, currency, name)
        except Exception as exc:  # an adapter failure is an unknown outcome, never a guess
            self.core.journal.line("payment_error", level="error", error=repr(exc))
            result = PaymentResult(record["op_id"], PaymentStatus.TIMEOUT, amount, currency)
        if result.status is PaymentStatus.TIMEOUT:
            result = await self._ask(record["op_id"], amount, currency)
        return record, result

    def retry_id(self, op_id: str | None) -> str | None:
        """`op_id` again for another try at the same payment, unless its money was already
        given back (a voided operation can never be charged again: a new one is needed)."""
        record = self.core.store.payment(op_id) if op_id else None
        if record is None or record["status"] in ("voided", "refunded", "refund_due"):
            return None
        return op_id

    async def _ask(self, op_id: str, amount: int, currency: str) -> PaymentResult:
        assert self.terminal is not None
        for _ in range(STATUS_TRIES):
            with contextlib.suppress(Exception):
                known = await self.terminal.status(op_id)
                if known is None:
                    return PaymentResult(op_id, PaymentStatus.DECLINED, amount, currency,
                                         reason="the terminal has no record of the charge")
                if known.status is not PaymentStatus.OFFLINE:
                    return known
            await asyncio.sleep(STATUS_GAP_S)
        return PaymentResult(op_id, PaymentStatus.TIMEOUT, amount, currency)

    def refuse(self, record: dict[str, Any], result: PaymentResult) -> NoReturn:
        """Record a charge that took no money (or may have: reconcile decides) and refuse."""
        now = self.core.clock()
        if result.status is PaymentStatus.TIMEOUT:
            self.core.apply(
                [Event("payment_unknown", record["cell"], payment_data(record), True)],
                payments=[{**record, "status": "unknown", "updated_at": now,
                           "attempts": _with_attempt(record, "unknown", result.reason, now)}],
            )
            raise StorageError("payment_unknown", ErrorKind.UPSTREAM_FAILED)
        status = {"cancelled": "cancelled", "offline": "offline"}.get(result.status, "declined")
        self.core.apply(
            [Event(f"payment_{status}", record["cell"],
                   {**payment_data(record), "reason": result.reason}, False)],
            payments=[{**record, "status": status, "settled": True, "reason": result.reason,
                       "updated_at": now,
                       "attempts": _with_attempt(record, status, result.reason, now)}],
        )
        code = {"cancelled": "payment_cancelled", "offline": "terminal_offline"}.get(
            status, "payment_declined"
        )
        raise StorageError(code, ErrorKind.PAYMENT_REQUIRED, detail=result.reason or status)

    def captured(self, record: dict[str, Any], txn: str | None) -> dict[str, Any]:
        """The record of a payment booked onto a tenancy (to commit with the booking)."""
        return {**record, "status": "captured", "settled": True, "txn": txn,
                "updated_at": self.core.clock()}

    async def reverse(self, record: dict[str, Any], reason: str) -> bool:
        """Give an approved charge back: void it, or refund it when voiding is refused."""
        if self.terminal is None:
            return False
        async with self.lock:
            current = self.core.store.payment(record["op_id"]) or record
            if current.get("settled"):
                return True
            if current["status"] == "held" and self._deposit_alive(current["tenancy_id"]):
                return False  # decided on a stale view: the deposit it pays for is alive
            txn = current.get("txn")
            if txn is None:  # approved after a timeout: learn the transaction first
                known = await self.terminal.status(current["op_id"])
                if known is None or not known.money_taken:
                    self._settle(current, "declined", reason)
                    return True
                txn = known.transaction_id
                if txn is None:  # money held, no transaction named yet: nothing to reverse by
                    self.core.journal.line("payment_reversal_pending", level="warning",
                                           op_id=current["op_id"], detail="no transaction id")
                    return False
            done = await self.terminal.void(current["op_id"], txn)
            kind = "voided"
            if not done.ok and done.status != "offline":
                done = await self.terminal.refund(current["op_id"], txn)
                kind = "refunded"
            if not done.ok:
                self.core.journal.line("payment_reversal_pending", level="warning",
                                         op_id=current["op_id"], detail=done.reason)
                return False
            self._settle({**current, "txn": txn}, kind, reason)
            await self.receipts.issue(
                "refund", current["cell"], current["amount"], current["currency"], txn,
                "en", op_id=current["op_id"],
            )
            return True

    def refund_due(self, record: dict[str, Any], reason: str) -> None:
        """Paid, but what it paid for cannot happen: commit that, then give the money back."""
        due = {**record, "status": "refund_due", "reason": reason,
               "updated_at": self.core.clock()}
        self.core.apply([], payments=[due])
        self.core.spawn(self.reverse(due, reason))

    def _settle(self, record: dict, status: str, reason: str) -> None:
        self.core.apply(
            [Event(f"payment_{status}", record["cell"],
                   {**payment_data(record), "reason": reason}, False)],
            payments=[{**record, "status": status, "settled": True, "reason": reason,
                       "updated_at": self.core.clock()}],
        )

    # ----------------------------------------------------------------- reconcile
    async def reconcile(self) -> None:
        """Settle every payment whose outcome the locker does not know or has not acted on."""
        if self.terminal is None:
            return
        for record in self.core.store.payments():
            if record.get("settled"):
                continue
            if self.lock.locked():
                return  # a charge is in progress (its record is not stale): next round
            try:
                await self._reconcile_one(record)
            except Exception as exc:  # one bad record must not stop the others
                self.core.journal.line("reconcile_failed", level="error",
                                         op_id=record.get("op_id"), error=repr(exc))

    async def _reconcile_one(self, record: dict[str, Any]) -> None:
        assert self.terminal is not None
        status = record["status"]
        if status == "held":
            if self._deposit_pending(record["tenancy_id"]):
                return  # the door may still open: the machine will complete or cancel
            if self.tenancy_cell(record["tenancy_id"]) is not None:
                self._capture([record])
                return
            await self.reverse(record, "door_not_opened")
            return
        if status == "refund_due":
            await self.reverse(record, record.get("reason") or "refund_due")
            return
        # charging / unknown: the charge's outcome was never learnt (timeout, crash mid-charge).
        known = await self.terminal.status(record["op_id"])
        if known is not None and known.status is PaymentStatus.OFFLINE:
            return
        if known is None or not known.money_taken:
            self._settle(record, "declined", "no money taken")
            return
        record = {**record, "txn": known.transaction_id}
        if record["kind"] in ("extend", "pickup", "temporary") and self.late_payment(record, known):
            return
        await self.reverse(record, "not_delivered")

    def _deposit_alive(self, tenancy_id: str) -> bool:
        return self._deposit_pending(tenancy_id) or self.tenancy_cell(tenancy_id) is not None

    def _deposit_pending(self, tenancy_id: str) -> bool:
        machine = self.core.machine
        return any(
            (machine.pending_tenancy(c.id) or {}).get("id") == tenancy_id
            for c in self.core.config.cells
        )

    def tenancy_cell(self, tenancy_id: str) -> int | None:
        for c in self.core.config.cells:
            if (self.core.machine.tenancy(c.id) or {}).get("id") == tenancy_id:
                return c.id
        return None

    def _capture(self, records: Iterable[dict]) -> None:
        now = self.core.clock()
        self.core.apply(
            [], payments=[{**r, "status": "captured", "settled": True, "updated_at": now}
                          for r in records]
        )

    # ----------------------------------------------------------------- the cells' events
    def captured_by(self, events: Iterable[Event]) -> list[dict]:
        """Held payments whose deposit these events complete (committed in the same write)."""
        records = []
        now = self.core.clock()
        for event in events:
            if event.type != "deposit_completed":
                continue
            for entry in (event.data.get("tenancy") or {}).get("payments", []):
                record = self.core.store.payment(entry.get("op_id", ""))
                if record is not None and record["status"] == "held":
                    records.append({**record, "status": "captured", "settled": True,
                                    "updated_at": now})
        return records

    def deposit_failed(self, tenancy_id: str | None, reason: str) -> None:
        """A deposit was cancelled (door never opened): give back what was held for it."""
        for payment in self.core.store.payments():
            if payment["tenancy_id"] == tenancy_id and payment["status"] == "held":
                self.core.spawn(self.reverse(payment, reason))
