"""A simulated card terminal that keeps the payment port's promises (`port.py`), with fault
switches and a journal that survives a restart: for tests, demos and the kiosk without a terminal.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from daemon.io.atomic_file import write_atomically
from daemon.io.payment.port import (
    PaymentResult,
    PaymentStatus,
    ReversalResult,
    ReversalStatus,
    check_charge,
)


class Outcome(StrEnum):
    """What the simulated terminal does with the next charge."""

    APPROVE = "approve"
    DECLINE = "decline"
    TIMEOUT = "timeout"
    CANCEL = "cancel"


class JournalCorrupt(Exception):
    """The simulator's journal cannot be read; starting from a guess could charge twice."""


@dataclass
class _Operation:
    """The simulator's record of one operation; ``charges`` etc. count money movements."""

    operation_id: str
    status: PaymentStatus
    amount: int
    currency: str
    description: str
    transaction_id: str | None = None
    reason: str = ""
    refunded: int = 0
    charges: int = 0
    voids: int = 0
    refunds: int = 0
    attempts: int = 0

    def result(self) -> PaymentResult:
        return PaymentResult(
            operation_id=self.operation_id,
            status=self.status,
            amount=self.amount,
            currency=self.currency,
            transaction_id=self.transaction_id,
            reason=self.reason,
            refunded=self.refunded,
        )


_MONEY_HELD = (PaymentStatus.APPROVED, PaymentStatus.VOIDED, PaymentStatus.REFUNDED)


class SimulatedTerminal:
    """An in-memory terminal with fault switches; with a journal it survives a restart.

    Switches: ``next_outcomes`` (a queue; empty means approve), ``offline``, ``delay_s``.
    ``Outcome.TIMEOUT`` models the worst case: the bank approved, the reply was lost, so the
    caller sees ``timeout`` while ``status`` tells the truth (``timeout_takes_money=False`` makes
    the lost reply a decline instead). Every state change is written to the journal (atomic
    replace, fsync) before the result is returned.
    """

    def __init__(
        self,
        journal: str | Path | None = None,
        *,
        delay_s: float = 0.0,
        timeout_takes_money: bool = True,
    ) -> None:
        self.journal = Path(journal) if journal is not None else None
        self.delay_s = delay_s
        self.timeout_takes_money = timeout_takes_money
        self.offline = False
        #: Crash-test window: after an approval is journaled, wait this long before answering
        #: (the money is taken; a process killed now never hears about it).
        self.hold_after_approve_s = 0.0
        self.next_outcomes: list[Outcome] = []
        self._ops: dict[str, _Operation] = {}
        self._next_txn = 1
        self._lock = asyncio.Lock()
        self._load()

    # -- switches and counters for tests --------------------------------------------------------

    def set_next(self, *outcomes: Outcome | str) -> None:
        """Queue the outcomes of the next charges (afterwards: approve)."""
        self.next_outcomes.extend(Outcome(o) for o in outcomes)

    def operations(self) -> list[dict]:
        """Every operation with its money movements, as the journal holds them."""
        return [{**asdict(op), "status": op.status.value} for op in self._ops.values()]

    def charges(self, operation_id: str) -> int:
        op = self._ops.get(operation_id)
        return op.charges if op else 0

    def voids(self, operation_id: str) -> int:
        op = self._ops.get(operation_id)
        return op.voids if op else 0

    def refunds(self, operation_id: str) -> int:
        op = self._ops.get(operation_id)
        return op.refunds if op else 0

    # -- the port -------------------------------------------------------------------------------

    async def charge(
        self, operation_id: str, amount: int, currency: str, description: str
    ) -> PaymentResult:
        check_charge(operation_id, amount, currency)
        async with self._lock:
            await self._respond_delay()
            if self.offline:
                return PaymentResult(
                    operation_id, PaymentStatus.OFFLINE, amount, currency, reason="terminal offline"
                )
            known = self._ops.get(operation_id)
            if known is not None and known.status in _MONEY_HELD:
                return known.result()
            outcome = self.next_outcomes.pop(0) if self.next_outcomes else Outcome.APPROVE
            op = known or _Operation(operation_id, PaymentStatus.DECLINED, amount, currency, "")
            op.amount, op.currency, op.description = amount, currency, description
            op.attempts += 1
            takes_money = outcome is Outcome.APPROVE or (
                outcome is Outcome.TIMEOUT and self.timeout_takes_money
            )
            if takes_money:
                op.status, op.reason = PaymentStatus.APPROVED, ""
                op.transaction_id = self._new_txn()
                op.charges += 1
            elif outcome is Outcome.CANCEL:
                op.status, op.reason = PaymentStatus.CANCELLED, "cancelled on the terminal"
            else:
                op.status, op.reason = PaymentStatus.DECLINED, "declined by the issuer"
            self._ops[operation_id] = op
            self._save()
            if takes_money and self.hold_after_approve_s > 0:
                await asyncio.sleep(self.hold_after_approve_s)
            if outcome is Outcome.TIMEOUT:
                return PaymentResult(
                    operation_id,
                    PaymentStatus.TIMEOUT,
                    amount,
                    currency,
                    reason="no reply from the terminal in time",
                )
            return op.result()

    async def void(self, operation_id: str, transaction_id: str) -> ReversalResult:
        async with self._lock:
            await self._respond_delay()
            refused = self._check_reversal("void", operation_id, transaction_id)
            if refused is not None:
                return refused
            op = self._ops[operation_id]
            if op.status is PaymentStatus.VOIDED:
                return ReversalResult(
                    operation_id, "void", ReversalStatus.DONE, op.amount, transaction_id
                )
            if op.status is not PaymentStatus.APPROVED:
                return ReversalResult(
                    operation_id,
                    "void",
                    ReversalStatus.REJECTED,
                    reason=f"operation is {op.status}, not approved",
                )
            op.status, op.voids = PaymentStatus.VOIDED, op.voids + 1
            self._save()
            return ReversalResult(
                operation_id, "void", ReversalStatus.DONE, op.amount, transaction_id
            )

    async def refund(
        self, operation_id: str, transaction_id: str, amount: int | None = None
    ) -> ReversalResult:
        async with self._lock:
            await self._respond_delay()
            refused = self._check_reversal("refund", operation_id, transaction_id)
            if refused is not None:
                return refused
            op = self._ops[operation_id]
            if op.status is PaymentStatus.REFUNDED and amount is None and op.refunded >= op.amount:
                # A repeated full refund: everything was given back already.
                return ReversalResult(
                    operation_id, "refund", ReversalStatus.DONE, op.refunded, transaction_id
                )
            if op.status not in (PaymentStatus.APPROVED, PaymentStatus.REFUNDED):
                return ReversalResult(
                    operation_id,
                    "refund",
                    ReversalStatus.REJECTED,
                    reason=f"operation is {op.status}, nothing to refund",
                )
            left = op.amount - op.refunded
            wanted = left if amount is None else amount
            if isinstance(wanted, bool) or not isinstance(wanted, int) or not 0 < wanted <= left:
                return ReversalResult(
                    operation_id,
                    "refund",
                    ReversalStatus.REJECTED,
                    reason=f"refund must be 1..{left} minor units, got {amount}",
                )
            op.status = PaymentStatus.REFUNDED
            op.refunded += wanted
            op.refunds += 1
            self._save()
            return ReversalResult(
                operation_id, "refund", ReversalStatus.DONE, wanted, transaction_id
            )

    async def status(self, operation_id: str) -> PaymentResult | None:
        async with self._lock:
            await self._respond_delay()
            op = self._ops.get(operation_id)
            if self.offline:
                amount, currency = (op.amount, op.currency) if op else (0, "")
                return PaymentResult(
                    operation_id, PaymentStatus.OFFLINE, amount, currency, reason="terminal offline"
                )
            return op.result() if op is not None else None

    # -- internals ------------------------------------------------------------------------------

    async def _respond_delay(self) -> None:
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)

    def _check_reversal(
        self, kind: Literal["void", "refund"], operation_id: str, transaction_id: str
    ) -> ReversalResult | None:
        if self.offline:
            return ReversalResult(
                operation_id, kind, ReversalStatus.OFFLINE, reason="terminal offline"
            )
        op = self._ops.get(operation_id)
        if op is None or op.transaction_id is None:
            return ReversalResult(
                operation_id,
                kind,
                ReversalStatus.REJECTED,
                reason="no approved charge for this operation",
            )
        if op.transaction_id != transaction_id:
            return ReversalResult(
                operation_id,
                kind,
                ReversalStatus.REJECTED,
                reason="transaction id does not match the operation's charge",
            )
        return None

    def _new_txn(self) -> str:
        txn = f"SIM-{self._next_txn:06d}"
        self._next_txn += 1
        return txn

    def _load(self) -> None:
        if self.journal is None or not self.journal.exists():
            return
        try:
            doc = json.loads(self.journal.read_bytes())
            self._next_txn = int(doc["next_txn"])
            for raw in doc["operations"]:
                op = _Operation(**{**raw, "status": PaymentStatus(raw["status"])})
                self._ops[op.operation_id] = op
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalCorrupt(f"payment journal {self.journal} is unreadable: {exc}") from exc

    def _save(self) -> None:
        if self.journal is None:
            return
        doc = {
            "v": 1,
            "next_txn": self._next_txn,
            "operations": [asdict(op) for op in self._ops.values()],
        }
        write_atomically(self.journal, json.dumps(doc, ensure_ascii=False, indent=1).encode())
