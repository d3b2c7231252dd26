"""The payment terminal port and a simulated terminal that keeps the port's promises.

Contract of the port (every adapter must hold it, the daemon relies on it):

* **One charge per operation.** ``operation_id`` names one thing the client pays for. Once money
  was taken for it (``approved``, also when the approval's reply was lost in a ``timeout``),
  every further ``charge`` with that id takes no money and returns the operation's current
  record (``approved``, or ``voided``/``refunded`` after a reversal). A charge that took no
  money (``declined``, ``cancelled``, ``offline``) leaves the operation open: charging it again
  is a new attempt for the same operation (the client may try another card).
* **An unknown outcome is asked, never guessed.** ``timeout`` means the daemon does not know
  whether money was taken; after it (or after a crash mid-charge) the daemon asks ``status``:
  ``None`` means the terminal never heard of the operation (no money taken), otherwise the
  operation's current record; a result with status ``offline`` means "ask again later".
* **Reversals are idempotent too.** Voiding twice, or asking twice for the full refund
  (``amount=None``), moves money once. A partial refund (an explicit amount) moves that amount
  each time, never past what was charged.

Amounts are integer minor units with an ISO 4217 currency code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from contract.money import check_currency


class PaymentStatus(StrEnum):
    """What happened to an operation's money, as the terminal reports it."""

    APPROVED = "approved"
    DECLINED = "declined"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    OFFLINE = "offline"
    VOIDED = "voided"
    REFUNDED = "refunded"


class ReversalStatus(StrEnum):
    """Outcome of a void or refund request."""

    DONE = "done"
    REJECTED = "rejected"
    OFFLINE = "offline"


@dataclass(frozen=True)
class PaymentResult:
    """The terminal's answer about one operation; ``transaction_id`` is set once money moved."""

    operation_id: str
    status: PaymentStatus
    amount: int
    currency: str
    transaction_id: str | None = None
    reason: str = ""
    refunded: int = 0

    @property
    def approved(self) -> bool:
        return self.status is PaymentStatus.APPROVED

    @property
    def money_taken(self) -> bool:
        """True while the client's money is held: approved and not fully given back."""
        return self.status is PaymentStatus.APPROVED or (
            self.status is PaymentStatus.REFUNDED and self.refunded < self.amount
        )


@dataclass(frozen=True)
class ReversalResult:
    """The terminal's answer to a void or refund."""

    operation_id: str
    kind: Literal["void", "refund"]
    status: ReversalStatus
    amount: int = 0
    transaction_id: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is ReversalStatus.DONE


class PaymentTerminal(Protocol):
    """A card terminal as the daemon sees it (see the module docstring for the contract)."""

    async def charge(
        self, operation_id: str, amount: int, currency: str, description: str
    ) -> PaymentResult: ...

    async def void(self, operation_id: str, transaction_id: str) -> ReversalResult: ...

    async def refund(
        self, operation_id: str, transaction_id: str, amount: int | None = None
    ) -> ReversalResult: ...

    async def status(self, operation_id: str) -> PaymentResult | None: ...


def check_charge(operation_id: str, amount: int, currency: str) -> None:
    """Reject a malformed charge before it reaches any terminal."""
    if not operation_id or not isinstance(operation_id, str):
        raise ValueError("operation_id must be a non-empty string")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive integer of minor units, got {amount!r}")
    check_currency(currency)
