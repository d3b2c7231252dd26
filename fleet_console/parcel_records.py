"""What a parcel locker's events make of the console's parcel tables: a pure projection.

The ingest stores every event in `events`; the parcel events are also folded, in the same
transaction, into `parcels` (one row per locker and parcel), `parcel_returns`,
`kiosk_recipients` and `staff_logins` (fleet_console/db/parcel_facts.py does the reads and
writes). This module only decides: given the rows as they are and a batch of events, which rows
to write. Two promises, whatever the order and number of deliveries:

* idempotent: an event folded twice changes nothing the second time;
* never backwards: a parcel's status only moves up its steps (announced < deposited < expired <
  picked_up / returned_to_sender / cancelled), so an older event arriving late (a hole filled
  after a resend, another replica's batch) only fills in what the row still lacks.

Nothing secret is ever here: the locker's events carry no code, PIN, phone or e-mail, and a
field the contract does not expect, or a value too long for its column, is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from contract.events import ParcelData, RecipientAddedData, StaffData, event_data

#: Parcel event type -> the status it brings.
PARCEL_STEPS = {
    "parcel_announced": "announced",
    "parcel_deposited": "deposited",
    "parcel_expired": "expired",
    "parcel_picked_up": "picked_up",
    "parcel_returned_to_sender": "returned_to_sender",
    "parcel_cancelled": "cancelled",
}
#: How far along each status is: a parcel never goes back to a lower one.
STATUS_RANK = {"announced": 0, "deposited": 1, "expired": 2, "picked_up": 3,
               "returned_to_sender": 3, "cancelled": 3}
#: Return event type -> the status it brings, and their order.
RETURN_STEPS = {"return_deposited": "deposited", "return_collected": "collected"}
RETURN_RANK = {"deposited": 0, "collected": 1}
#: Staff event type -> the outcome a `staff_logins` row records.
LOGIN_OUTCOMES = {"staff_login": "ok", "staff_login_locked": "locked"}

#: Every event type this projection reads (the others pass by).
PROJECTED_TYPES = frozenset(
    {*PARCEL_STEPS, *RETURN_STEPS, *LOGIN_OUTCOMES, "recipient_added"})

#: Column widths (fleet_console/db/models.py): a longer value is left out, never truncated,
#: so that a hostile locker's values never make the database refuse the batch (its events with
#: it: the ingest would quarantine them as `store_failed`).
ID_MAX = 64
SIZE_MAX = 4

ParcelKey = tuple[str, str]
Row = dict[str, Any]


@dataclass(frozen=True)
class StoredEvent:
    """An event as the ingest stores it (a row of `events`)."""

    locker: str
    seq: int
    at: int
    type: str
    data: Mapping[str, Any]

    @cached_property
    def parsed(self) -> Any:
        """`data` read through the contract's model of its type; None if it does not fit."""
        try:
            return event_data(self.type, dict(self.data))
        except ValidationError:
            return None


@dataclass
class Changes:
    """The rows to write: parcels and returns replaced whole, logins and kiosk recipients
    inserted unless present."""

    parcels: dict[ParcelKey, Row] = field(default_factory=dict)
    returns: dict[ParcelKey, Row] = field(default_factory=dict)
    kiosk_recipients: dict[ParcelKey, Row] = field(default_factory=dict)
    staff_logins: list[Row] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.parcels or self.returns or self.kiosk_recipients or self.staff_logins)


#: The largest BIGINT (times, counts) and INTEGER (cell ids) the columns hold.
BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


def _text(value: Any, limit: int = ID_MAX) -> str | None:
    """A string that fits its column (PostgreSQL text holds no NUL), else None."""
    ok = isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value
    return value if ok else None


def _int(value: Any, limit: int = BIGINT_MAX) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
    return value if ok else None


def keys_needed(events: Iterable[StoredEvent]) -> tuple[set[ParcelKey], set[ParcelKey]]:
    """The (locker, parcel_id) and (locker, return_id) rows the batch may change: read them
    before `project`."""
    parcels: set[ParcelKey] = set()
    returns: set[ParcelKey] = set()
    for ev in events:
        if ev.type in PARCEL_STEPS or ev.type in RETURN_STEPS:
            data = ev.parsed
            if isinstance(data, ParcelData):
                if ev.type in PARCEL_STEPS and _text(data.parcel_id):
                    parcels.add((ev.locker, str(data.parcel_id)))
                    parcels.update((ev.locker, p) for p in data.parcels or () if _text(p))
                elif ev.type in RETURN_STEPS and _text(data.return_id):
                    returns.add((ev.locker, str(data.return_id)))
    return parcels, returns


def project(
    events: Iterable[StoredEvent],
    parcels: Mapping[ParcelKey, Row],
    returns: Mapping[ParcelKey, Row],
) -> Changes:
    """The rows the batch changes, given the current rows of `keys_needed` (absent: none)."""
    out = Changes()
    for ev in sorted(events, key=lambda e: (e.locker, e.seq)):
        if ev.type not in PROJECTED_TYPES:
            continue
        data = ev.parsed
        if isinstance(data, ParcelData) and ev.type in PARCEL_STEPS:
            _fold_parcel(ev, data, parcels, out)
        elif isinstance(data, ParcelData) and ev.type in RETURN_STEPS:
            _fold_return(ev, data, returns, out)
        elif isinstance(data, RecipientAddedData):
            _kiosk_recipient(ev, data, out)
        elif isinstance(data, StaffData):
            _staff_login(ev, data, out)
    return out


def fold_parcel(row: Mapping[str, Any] | None, ev: StoredEvent, data: ParcelData) -> Row | None:
    """The parcel's row after `ev` (its own step), or None when `ev` changes nothing."""
    pid = _text(data.parcel_id)
    if pid is None:
        return None
    status = PARCEL_STEPS[ev.type]
    new: Row = dict(row) if row else {
        "locker": ev.locker, "parcel_id": pid, "barcode": None, "cell": None, "size": None,
        "recipient_id": None, "courier_id": None, "status": status, "announced_at": None,
        "deposited_at": None, "picked_up_at": None, "expires_at": None, "updated_at": ev.at,
        "updated_seq": ev.seq}
    newer = row is None or ev.seq > int(row["updated_seq"])
    found = {"barcode": _text(data.barcode), "cell": _int(data.cell, INT_MAX),
             "size": _text(data.size, SIZE_MAX), "recipient_id": _text(data.recipient_id),
             "courier_id": _text(data.courier_id),
             "announced_at": _int(data.announced_at) or (
                 ev.at if status == "announced" else None),
             "deposited_at": _int(data.deposited_at) or (
                 ev.at if status == "deposited" else None),
             "picked_up_at": ev.at if status == "picked_up" else None}
    for column, value in found.items():
        # The newest event's word wins; an older one only fills in what is missing.
        if value is not None and (new[column] is None or newer):
            new[column] = value
    due = _int(data.due_at)
    if due is not None and (new["expires_at"] is None or due > new["expires_at"]):
        new["expires_at"] = due
    if (STATUS_RANK[status], ev.seq) > (STATUS_RANK[str(new["status"])], int(new["updated_seq"])):
        new["status"] = status
    if newer:
        new["updated_at"], new["updated_seq"] = ev.at, ev.seq
    return None if row is not None and new == dict(row) else new


def _fold_parcel(ev: StoredEvent, data: ParcelData, current: Mapping[ParcelKey, Row],
                 out: Changes) -> None:
    pid = _text(data.parcel_id)
    if pid is None:
        return
    key = (ev.locker, pid)
    row = out.parcels.get(key) or current.get(key)
    new = fold_parcel(row, ev, data)
    if new is not None:
        out.parcels[key] = new
    due = _int(data.due_at)
    if ev.type == "parcel_deposited" and due is not None:
        # A parcel added to the cell restarts the pickup window of those it shares it with.
        for other in data.parcels or ():
            okey = (ev.locker, other)
            orow = out.parcels.get(okey) or current.get(okey)
            if other != pid and orow is not None and orow["status"] == "deposited" and (
                    orow["expires_at"] is None or due > orow["expires_at"]):
                out.parcels[okey] = {**orow, "expires_at": due}


def _fold_return(ev: StoredEvent, data: ParcelData, current: Mapping[ParcelKey, Row],
                 out: Changes) -> None:
    rid = _text(data.return_id)
    if rid is None:
        return
    key = (ev.locker, rid)
    row = out.returns.get(key) or current.get(key)
    status = RETURN_STEPS[ev.type]
    new: Row = dict(row) if row else {
        "locker": ev.locker, "return_id": rid, "cell": None, "size": None,
        "recipient_id": None, "status": status, "deposited_at": None, "collected_at": None,
        "collected_by": None, "updated_at": ev.at, "updated_seq": ev.seq}
    newer = row is None or ev.seq > int(row["updated_seq"])
    found = {"cell": _int(data.cell, INT_MAX), "size": _text(data.size, SIZE_MAX),
             "recipient_id": _text(data.recipient_id),
             "deposited_at": _int(data.deposited_at) or (
                 ev.at if status == "deposited" else None),
             "collected_at": ev.at if status == "collected" else None,
             "collected_by": _text(data.staff_id) if status == "collected" else None}
    for column, value in found.items():
        if value is not None and (new[column] is None or newer):
            new[column] = value
    if (RETURN_RANK[status], ev.seq) > (RETURN_RANK[str(new["status"])], int(new["updated_seq"])):
        new["status"] = status
    if newer:
        new["updated_at"], new["updated_seq"] = ev.at, ev.seq
    if row is None or new != dict(row):
        out.returns[key] = new


def _kiosk_recipient(ev: StoredEvent, data: RecipientAddedData, out: Changes) -> None:
    rid = _text(data.recipient_id)
    if rid is None or (ev.locker, rid) in out.kiosk_recipients:
        return
    out.kiosk_recipients[(ev.locker, rid)] = {
        "locker": ev.locker, "recipient_id": rid, "name": _text(data.name, 200),
        "department": _text(data.department, 200), "courier_id": _text(data.courier_id),
        "has_phone": data.has_phone if isinstance(data.has_phone, bool) else None,
        "has_email": data.has_email if isinstance(data.has_email, bool) else None,
        "added_at": ev.at}


def _staff_login(ev: StoredEvent, data: StaffData, out: Changes) -> None:
    out.staff_logins.append({
        "locker": ev.locker, "seq": ev.seq, "staff_id": _text(data.staff_id),
        "role": _text(data.role, 16), "outcome": LOGIN_OUTCOMES[ev.type],
        "failures": _int(data.failures), "locked_until": _int(data.until), "at": ev.at})
