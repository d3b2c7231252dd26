"""The payment port's promises, held by the simulated terminal: one charge per operation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from daemon.io.payment.port import PaymentStatus, PaymentTerminal, ReversalStatus
from daemon.io.payment.simulator import JournalCorrupt, Outcome, SimulatedTerminal


@pytest.fixture
def terminal(tmp_path: Path) -> SimulatedTerminal:
    return SimulatedTerminal(tmp_path / "terminal.json")


async def test_approve_takes_money_once(terminal: SimulatedTerminal) -> None:
    port: PaymentTerminal = terminal
    result = await port.charge("op-1", 10_000, "RUB", "cell 3, 1 h")
    assert result.status is PaymentStatus.APPROVED and result.approved and result.money_taken
    assert result.transaction_id and (result.amount, result.currency) == (10_000, "RUB")
    assert terminal.charges("op-1") == 1


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(Outcome.DECLINE, PaymentStatus.DECLINED), (Outcome.CANCEL, PaymentStatus.CANCELLED)],
)
async def test_refusals_take_no_money(
    terminal: SimulatedTerminal, outcome: Outcome, status: PaymentStatus
) -> None:
    terminal.set_next(outcome)
    result = await terminal.charge("op-1", 500, "RUB", "x")
    assert result.status is status and result.reason and result.transaction_id is None
    assert not result.money_taken and terminal.charges("op-1") == 0
    # The operation stays open: the client may try again (another card) under the same id.
    again = await terminal.charge("op-1", 500, "RUB", "x")
    assert again.approved and terminal.charges("op-1") == 1


async def test_same_operation_twice_charges_once(terminal: SimulatedTerminal) -> None:
    first = await terminal.charge("op-1", 10_000, "RUB", "x")
    terminal.set_next(Outcome.DECLINE)  # would decline a new charge: proves none is made
    second = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert second == first
    assert terminal.charges("op-1") == 1 and terminal.next_outcomes == [Outcome.DECLINE]


async def test_concurrent_duplicates_charge_once(terminal: SimulatedTerminal) -> None:
    terminal.delay_s = 0.01
    results = await asyncio.gather(*(terminal.charge("op-1", 100, "EUR", "x") for _ in range(5)))
    assert len({r.transaction_id for r in results}) == 1
    assert terminal.charges("op-1") == 1


async def test_idempotent_across_restart(tmp_path: Path) -> None:
    journal = tmp_path / "terminal.json"
    first = await SimulatedTerminal(journal).charge("op-1", 10_000, "RUB", "x")
    restarted = SimulatedTerminal(journal)
    assert await restarted.status("op-1") == first
    again = await restarted.charge("op-1", 10_000, "RUB", "x")
    assert again == first and restarted.charges("op-1") == 1
    other = await restarted.charge("op-2", 100, "RUB", "x")
    assert other.transaction_id != first.transaction_id  # ids keep counting after a restart


async def test_timeout_then_status_tells_the_truth(terminal: SimulatedTerminal) -> None:
    terminal.set_next(Outcome.TIMEOUT)
    lost = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert lost.status is PaymentStatus.TIMEOUT and lost.transaction_id is None
    truth = await terminal.status("op-1")
    assert truth is not None and truth.approved and truth.transaction_id
    retry = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert retry == truth and terminal.charges("op-1") == 1


async def test_timeout_without_money(tmp_path: Path) -> None:
    terminal = SimulatedTerminal(tmp_path / "t.json", timeout_takes_money=False)
    terminal.set_next(Outcome.TIMEOUT)
    assert (await terminal.charge("op-1", 100, "RUB", "x")).status is PaymentStatus.TIMEOUT
    truth = await terminal.status("op-1")
    assert truth is not None and truth.status is PaymentStatus.DECLINED
    assert not truth.money_taken and terminal.charges("op-1") == 0


async def test_status_of_unknown_operation_is_none(terminal: SimulatedTerminal) -> None:
    assert await terminal.status("never-seen") is None


async def test_void_after_approve(terminal: SimulatedTerminal) -> None:
    paid = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert paid.transaction_id
    voided = await terminal.void("op-1", paid.transaction_id)
    assert voided.ok and voided.kind == "void" and voided.amount == 10_000
    assert await terminal.void("op-1", paid.transaction_id) == voided  # idempotent
    assert terminal.voids("op-1") == 1
    state = await terminal.status("op-1")
    assert state is not None and state.status is PaymentStatus.VOIDED and not state.money_taken
    # A voided operation is never charged again.
    again = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert again.status is PaymentStatus.VOIDED and terminal.charges("op-1") == 1


async def test_refund_full_and_partial(terminal: SimulatedTerminal) -> None:
    paid = await terminal.charge("op-1", 10_000, "RUB", "x")
    assert paid.transaction_id
    part = await terminal.refund("op-1", paid.transaction_id, 3_000)
    assert part.ok and part.amount == 3_000
    state = await terminal.status("op-1")
    assert state is not None and state.status is PaymentStatus.REFUNDED and state.money_taken
    too_much = await terminal.refund("op-1", paid.transaction_id, 8_000)
    assert too_much.status is ReversalStatus.REJECTED and "1..7000" in too_much.reason
    rest = await terminal.refund("op-1", paid.transaction_id)
    assert rest.ok and rest.amount == 7_000
    assert (await terminal.refund("op-1", paid.transaction_id)).ok  # repeated: no money moves
    assert terminal.refunds("op-1") == 2
    state = await terminal.status("op-1")
    assert state is not None and state.refunded == 10_000 and not state.money_taken


async def test_reversal_checks_the_transaction(terminal: SimulatedTerminal) -> None:
    assert (await terminal.void("op-1", "SIM-1")).status is ReversalStatus.REJECTED
    await terminal.charge("op-1", 100, "RUB", "x")
    wrong = await terminal.refund("op-1", "SIM-999999")
    assert wrong.status is ReversalStatus.REJECTED and "does not match" in wrong.reason
    assert terminal.refunds("op-1") == 0


async def test_offline_terminal(terminal: SimulatedTerminal) -> None:
    terminal.offline = True
    result = await terminal.charge("op-1", 100, "RUB", "x")
    assert result.status is PaymentStatus.OFFLINE and terminal.charges("op-1") == 0
    state = await terminal.status("op-1")
    assert state is not None and state.status is PaymentStatus.OFFLINE  # "ask again", not None
    assert (await terminal.void("op-1", "SIM-000001")).status is ReversalStatus.OFFLINE
    terminal.offline = False
    assert await terminal.status("op-1") is None
    assert (await terminal.charge("op-1", 100, "RUB", "x")).approved


async def test_approved_but_door_failed_is_voided(terminal: SimulatedTerminal) -> None:
    """The daemon's recovery path in miniature: paid, door did not open, money goes back."""
    paid = await terminal.charge("rent-7", 10_000, "RUB", "cell 7")
    door_opened = False
    if paid.approved and not door_opened and paid.transaction_id:
        assert (await terminal.void("rent-7", paid.transaction_id)).ok
    state = await terminal.status("rent-7")
    assert state is not None and not state.money_taken


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 100, "RUB"), "operation_id"),
        (("op", 0, "RUB"), "positive integer"),
        (("op", 1.5, "RUB"), "positive integer"),
        (("op", 100, "rub"), "ISO 4217"),
    ],
)
async def test_bad_charge_is_refused(
    terminal: SimulatedTerminal, args: tuple, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await terminal.charge(*args, "x")
    assert terminal.next_outcomes == []


def test_corrupt_journal_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "t.json"
    journal.write_text("{not json")
    with pytest.raises(JournalCorrupt, match="unreadable"):
        SimulatedTerminal(journal)


async def test_journal_is_written_before_the_answer(tmp_path: Path) -> None:
    journal = tmp_path / "t.json"
    result = await SimulatedTerminal(journal).charge("op-1", 100, "RUB", "x")
    doc = json.loads(journal.read_text())
    assert doc["operations"][0]["transaction_id"] == result.transaction_id
    assert not list(tmp_path.glob(".*.tmp"))
