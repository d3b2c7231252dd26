"""The event types of the contract: every `type` a locker records on `lockers/{id}/events`.

Each type has a data model naming the fields its `data` carries (docs/asyncapi.yaml,
`x-event-types`). The models allow extra keys: a tenancy or a bill is free-form today and a newer
locker may add a field, which a console shows as it is. Every cell event carries `cell`, `board`
and `lock`; an alarm carries `alarm: true`. tests/test_contract_vocabulary.py fails when the
locker records a type this table lacks, when the table has one nothing records, or when
docs/asyncapi.yaml disagrees with it.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """Base of the data models: the fields every event may carry; more keys allowed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    #: The cell the event is about (absent for locker-wide events).
    cell: int | None = None
    #: Set (true) on alarms.
    alarm: bool | None = None


class CellData(EventData):
    """A cell's event: where its lock is, and the command or open it belongs to."""

    board: str | None = None
    lock: int | None = None
    #: The cmd_id of the remote command, or the kiosk operation's id, that caused it.
    ref: str | None = None
    tenancy_id: str | None = None


class OpenStarted(CellData):
    #: deposit_started: the tenancy that the deposit will create (never its secrets).
    tenancy: dict[str, Any] | None = None
    #: eviction_started: what was found and who witnessed it.
    note: str | None = None


class OpenCompleted(CellData):
    item_present: bool | None = None
    #: The cell's state afterwards (open, temporary access).
    state: str | None = None
    #: The tenancy created (deposit) or closed (pickup, eviction: `outcome: seized`).
    tenancy: dict[str, Any] | None = None
    #: pickup_completed: the tenancy was overdue.
    overdue: bool | None = None
    #: eviction_completed: the state the cell was in.
    was: str | None = None


class OpenCancelled(CellData):
    #: What the open was for (deposit, pickup, temporary, open, evict).
    purpose: str | None = None
    reason: str | None = None
    #: deposit_cancelled: the payment for it is to be voided.
    void_payment: bool | None = None


class DoorData(CellData):
    purpose: str | None = None
    #: door_opened, unlock_retry: the unlock attempt (1, or 2 for the retry).
    attempt: int | None = None
    #: door_closed: how long it was open.
    open_ms: int | None = None
    #: door_left_open: open since (epoch ms).
    open_since: int | None = None
    #: lock_fault: unlock attempts made.
    attempts: int | None = None
    #: forced_open: the state the cell was in, and whether it was found open at boot.
    state: str | None = None
    at_boot: bool | None = None


class BlockData(CellData):
    reason: str | None = None
    #: unblocked: the state the tenancy implies.
    state: str | None = None


class OverdueData(CellData):
    due_at: int | None = None
    state: str | None = None


class BoardData(EventData):
    board: str
    #: board_offline: consecutive failed polls.
    failures: int | None = None


class PaymentData(CellData):
    """Every payment event: the operation, what it paid for, the amount and the terminal's txn."""

    op_id: str | None = None
    #: rent, extend, pickup, temporary.
    payment_for: str | None = None
    amount: int | None = None
    currency: str | None = None
    txn: str | None = None
    reason: str | None = None


class BookedPayment(PaymentData):
    """debt_paid, rental_extended, payment_recovered: a payment booked on the tenancy."""

    paid_total: int | None = None
    due_at: int | None = None


class WaiverData(CellData):
    amount: int | None = None
    currency: str | None = None
    reason: str | None = None
    operator: str | None = None


class PinData(CellData):
    #: pin_issued: how the PIN went out (never the PIN itself).
    channels: list[str] | None = None
    #: pin_revealed: why and by whom.
    reason: str | None = None
    operator: str | None = None
    #: pin_locked: PIN entry refused until (epoch ms).
    until: int | None = None


class BillData(CellData):
    currency: str | None = None
    price: int | None = None
    paid: int | None = None
    waived: int | None = None
    due: int | None = None
    elapsed_ms: int | None = None
    paid_until: int | None = None


class ReceiptData(CellData):
    number: int | None = None
    operation: str | None = None
    op_id: str | None = None
    payment_for: str | None = None
    total: int | None = None
    currency: str | None = None
    transaction_id: str | None = None
    printed: bool | None = None
    emailed: bool | None = None


class ChargingData(CellData):
    #: charging_failed: whether it was switching on, and the error.
    on: bool | None = None
    error: str | None = None


class CommandData(EventData):
    #: Absent when the command could not be attributed (no usable cmd_id).
    cmd_id: str | None = None
    reason: str | None = None


class ConfigData(EventData):
    version: int | None = None
    #: config_applied: contract.signing.config_hash of the body.
    hash: str | None = None
    reason: str | None = None
    running_version: int | None = None
    #: config_rejected (bad_profile): what is wrong with the body.
    detail: str | None = None


class ClockData(EventData):
    delta_ms: int


class StorageFullData(EventData):
    since: int | None = None
    until: int | None = None
    errno: int | None = None
    error: str | None = None
    #: Operations refused meanwhile.
    refused: int | None = None
    #: Events held in memory meanwhile, committed with this alarm.
    held_events: int | None = None


class ParcelData(EventData):
    """A parcel's step: who, what, where and when; never its code, nor a phone or e-mail."""

    parcel_id: str | None = None
    barcode: str | None = None
    size: str | None = None
    recipient_id: str | None = None
    courier_id: str | None = None
    #: The parcels sharing the cell (one code opens it for all of them).
    parcels: list[str] | None = None
    #: parcel_deposited: added to a cell that already held parcels for this recipient.
    added: bool | None = None
    #: Epoch ms of the steps so far, and when the (fault-paused) pickup window ends.
    announced_at: int | None = None
    deposited_at: int | None = None
    due_at: int | None = None
    #: parcel_cancelled: never_opened, closed_empty, refused.
    reason: str | None = None
    #: return_deposited, return_collected: the return and who collected it.
    return_id: str | None = None
    staff_id: str | None = None


class RecipientAddedData(EventData):
    """A courier added a recipient at the kiosk: the id and name only (phone/e-mail stay put)."""

    recipient_id: str
    name: str | None = None
    department: str | None = None
    courier_id: str | None = None
    has_phone: bool | None = None
    has_email: bool | None = None


class StaffData(EventData):
    """A staff member at the kiosk (never a code or PIN)."""

    staff_id: str | None = None
    role: str | None = None
    #: staff_logout: logout, idle, door_closed; cell_opened_by_staff: the reason typed.
    reason: str | None = None
    #: staff_login_locked: wrong PINs in a row, and PIN entry refused until (epoch ms).
    failures: int | None = None
    until: int | None = None
    #: cell_opened_by_staff: what the cell held (parcel, rental, return, nothing).
    holds: str | None = None
    parcels: list[str] | None = None


class NoticeData(EventData):
    """A parcel notification that left the outbox, or a cell report queued (never its text,
    code, phone or address)."""

    #: parcel_arrived, parcel_added, parcel_reminder, parcel_expired, pickup_report, cell_report.
    notice: str | None = None
    parcels: list[str] | None = None
    #: The channels it went through (`email,sms`).
    channels: str | None = None
    #: cell_report_queued: kiosk, console or daily; and to how many addresses.
    why: str | None = None
    emails: int | None = None


class ParcelSettingData(EventData):
    """An administrator changed a parcel setting at the kiosk."""

    language: str | None = None


class CodeGuardData(EventData):
    """The kiosk's one-time code entry was paused (guessing) or resumed."""

    failures: int | None = None
    until: int | None = None
    staff_id: str | None = None


@dataclass(frozen=True)
class EventSpec:
    """One row of the event table."""

    type: str
    # `builtins.type`: the field `type` above shadows the builtin in the class body.
    data: builtins.type[EventData]
    #: Recorded as an alarm (`data.alarm` true).
    alarm: bool = False
    summary: str = ""


def _opens(purpose: str, noun: str) -> list[EventSpec]:
    return [
        EventSpec(f"{purpose}_started", OpenStarted, summary=f"{noun}: the lock was released"),
        EventSpec(f"{purpose}_completed", OpenCompleted,
                  summary=f"{noun}: the door was seen open and closed again"),
        EventSpec(f"{purpose}_cancelled", OpenCancelled,
                  summary=f"{noun}: the door was never opened, or the open failed"),
    ]


_ROWS: list[EventSpec] = [
    *_opens("deposit", "a deposit"),
    *_opens("pickup", "a pickup"),
    *_opens("temporary_access", "a temporary access"),
    *_opens("open", "an operator's open"),
    *_opens("eviction", "an eviction"),
    EventSpec("door_opened", DoorData, summary="the sensor saw an authorised open"),
    EventSpec("door_closed", DoorData, summary="the sensor saw the door close"),
    EventSpec("unlock_retry", DoorData, summary="the door was not seen open: one more pulse"),
    EventSpec("lock_fault", DoorData, True, "pulsed twice, never seen open: cell blocked"),
    EventSpec("forced_open", DoorData, True, "the door opened without an authorised open"),
    EventSpec("door_left_open", DoorData, True, "the door stayed open too long"),
    EventSpec("blocked", BlockData, summary="the cell was blocked"),
    EventSpec("unblocked", BlockData, summary="the cell was unblocked"),
    EventSpec("overdue", OverdueData, summary="the paid time or the storage limit ran out"),
    EventSpec("board_offline", BoardData, True, "a board stopped answering: its doors unknown"),
    EventSpec("board_online", BoardData, summary="a board answers again"),
    *(EventSpec(f"payment_{status}", PaymentData, status == "unknown", f"a payment {status}")
      for status in ("approved", "declined", "cancelled", "offline", "unknown", "voided",
                     "refunded")),
    EventSpec("payment_recovered", BookedPayment,
              summary="a payment found approved after a timeout, booked on its tenancy"),
    EventSpec("debt_paid", BookedPayment, summary="the debt of a tenancy was paid"),
    EventSpec("rental_extended", BookedPayment, summary="a rental was extended"),
    EventSpec("debt_waived", WaiverData, summary="an operator waived a tenancy's debt (`waive`)"),
    EventSpec("pin_issued", PinData, summary="a PIN was given out (never the PIN)"),
    EventSpec("pin_revealed", PinData,
              summary="an operator was shown a PIN (`reveal-pin`; never the PIN)"),
    EventSpec("pin_locked", PinData, True, "too many wrong PINs: PIN entry locked"),
    EventSpec("pickup_bill", BillData, summary="the bill at pickup"),
    EventSpec("receipt_issued", ReceiptData, summary="a receipt was printed and/or e-mailed"),
    EventSpec("charging_on", ChargingData, summary="a cell's phone socket was switched on"),
    EventSpec("charging_off", ChargingData, summary="a cell's phone socket was switched off"),
    EventSpec("charging_failed", ChargingData, summary="a phone socket could not be switched"),
    EventSpec("command_rejected", CommandData, summary="a remote command was refused"),
    EventSpec("command_failed", CommandData, summary="a remote command failed on the locker"),
    EventSpec("config_applied", ConfigData, summary="a signed configuration was applied"),
    EventSpec("config_rejected", ConfigData, summary="a signed configuration was refused"),
    EventSpec("clock_jumped", ClockData, True, "the wall clock stepped; stored times moved"),
    EventSpec("storage_full", StorageFullData, True,
              "the locker could not store for a while; what it held is committed with this"),
    EventSpec("parcel_announced", ParcelData, summary="the console said to expect a parcel"),
    EventSpec("parcel_deposited", ParcelData, summary="a courier closed a parcel in a cell"),
    EventSpec("parcel_picked_up", ParcelData, summary="the recipient took the parcel"),
    EventSpec("parcel_expired", ParcelData, summary="the pickup window ran out"),
    EventSpec("parcel_returned_to_sender", ParcelData,
              summary="a courier took an expired parcel back"),
    EventSpec("parcel_cancelled", ParcelData,
              summary="a deposit refused at the door: no code was sent"),
    EventSpec("return_deposited", ParcelData, summary="an item for return was dropped"),
    EventSpec("return_collected", ParcelData, summary="a courier or collector took a return"),
    EventSpec("recipient_added", RecipientAddedData,
              summary="a courier added a recipient at the kiosk (no phone or e-mail)"),
    EventSpec("staff_login", StaffData, summary="a courier or staff member logged in"),
    EventSpec("staff_logout", StaffData, summary="a kiosk session ended (logout, idle, door)"),
    EventSpec("staff_login_locked", StaffData, True,
              "too many wrong PINs: that login is locked for a while"),
    EventSpec("cell_opened_by_staff", StaffData,
              summary="an operator or collector opened a cell, with a reason"),
    EventSpec("code_entry_paused", CodeGuardData, True,
              "too many wrong pickup codes: code entry paused"),
    EventSpec("code_entry_resumed", CodeGuardData, summary="pickup code entry works again"),
    EventSpec("parcel_window_paused", ParcelData,
              summary="a fault blocked a cell with parcels: their pickup window stopped"),
    EventSpec("parcel_window_resumed", ParcelData,
              summary="the fault cleared: the pickup window runs again (`due_at`)"),
    EventSpec("return_issued", ParcelData, summary="a return code was issued (never the code)"),
    EventSpec("parcel_notice_sent", NoticeData,
              summary="a parcel notification left the outbox (once per parcel and kind)"),
    EventSpec("cell_report_queued", NoticeData, summary="a cell report e-mail was queued"),
    EventSpec("parcels_language_set", ParcelSettingData,
              summary="an administrator set the parcel kiosk's language"),
]

#: Every event type a locker records, with its data model.
EVENTS: dict[str, EventSpec] = {row.type: row for row in _ROWS}
assert len(EVENTS) == len(_ROWS), "an event type is listed twice"

#: The data fields every event may carry, whatever its type.
COMMON_FIELDS = tuple(EventData.model_fields)


def event_fields(type_: str) -> tuple[str, ...]:
    """The named data fields of `type_` (KeyError for a type not in the table)."""
    return tuple(EVENTS[type_].data.model_fields)


def event_data(type_: str, data: dict[str, Any]) -> EventData:
    """`data` read through its model (the base model for a type a newer locker added)."""
    spec = EVENTS.get(type_)
    return (spec.data if spec else EventData).model_validate(data)

