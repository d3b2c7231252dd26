"""A parcel locker's directory in the console database: its recipients and staff logins, and
the configuration body last published to it (read to keep the sections one command does not
change).

Staff ids and login codes are unique per locker (staff are per locker: a courier serving two
lockers has a login at each). Only PIN hashes are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from contract.recipients import Recipient
from fleet_console.db.models import ConfigBodyRow, RecipientRow, StaffRow
from fleet_console.db.writes import upsert

ImportMode = Literal["replace", "merge"]
#: Roles of the `parcels.staff` entries (issue 12).
ROLES = ("courier", "operator", "collector", "administrator")
_RECIPIENT_FIELDS = ("name", "department", "number", "phone", "email", "language")


class DirectoryError(ValueError):
    """A change the directory refuses (a login code taken, an unknown staff id); str() says
    why."""


def store_recipients(session: Session, locker: str, recipients: Sequence[Recipient],
                     mode: ImportMode, now_ms: int) -> int:
    """Replace the locker's list by `recipients`, or merge them in by id; the count after."""
    if mode == "replace":
        session.execute(delete(RecipientRow).where(RecipientRow.locker == locker))
    rows = [{"locker": locker, "id": r.id, **{f: getattr(r, f) for f in _RECIPIENT_FIELDS},
             "imported_at": now_ms} for r in recipients]
    for start in range(0, len(rows), 1000):
        upsert(session, RecipientRow, rows[start:start + 1000], ["locker", "id"])
    return len(recipient_rows(session, locker))


def recipient_rows(session: Session, locker: str) -> Sequence[RecipientRow]:
    return session.scalars(select(RecipientRow).where(RecipientRow.locker == locker)
                           .order_by(RecipientRow.id)).all()


def recipients_section(session: Session, locker: str) -> list[dict[str, Any]]:
    """The locker's recipients as the `parcels.recipients` list (Recipient dicts)."""
    out = []
    for row in recipient_rows(session, locker):
        record = {"id": row.id, **{f: getattr(row, f) for f in _RECIPIENT_FIELDS}}
        out.append({k: v for k, v in record.items() if v is not None})
    return out


def add_staff(session: Session, locker: str, *, staff_id: str, name: str, role: str, code: str,
              pin_hash: str, now_ms: int) -> StaffRow:
    """A new login; DirectoryError if the id or the login code is taken at this locker."""
    if role not in ROLES:
        raise DirectoryError(f"role must be one of {', '.join(ROLES)}")
    if session.get(StaffRow, (locker, staff_id)) is not None:
        raise DirectoryError(f"{locker} already has staff id {staff_id!r}")
    taken = session.scalars(select(StaffRow).where(StaffRow.locker == locker,
                                                   StaffRow.code == code)).first()
    if taken is not None:
        raise DirectoryError(f"login code {code} is taken at {locker} (by {taken.id})")
    row = StaffRow(locker=locker, id=staff_id, name=name, role=role, code=code,
                   pin_hash=pin_hash, disabled=False, created_at=now_ms, updated_at=now_ms)
    session.add(row)
    return row


def disable_staff(session: Session, locker: str, staff_id: str, now_ms: int) -> StaffRow:
    """Mark a login disabled (the row stays); DirectoryError for an unknown id."""
    row = session.get(StaffRow, (locker, staff_id))
    if row is None:
        raise DirectoryError(f"{locker} has no staff id {staff_id!r}")
    row.disabled = True
    row.updated_at = now_ms
    return row


def staff_rows(session: Session, locker: str | None = None) -> Sequence[StaffRow]:
    query = select(StaffRow).order_by(StaffRow.locker, StaffRow.id)
    if locker is not None:
        query = query.where(StaffRow.locker == locker)
    return session.scalars(query).all()


def staff_section(session: Session, locker: str) -> list[dict[str, Any]]:
    """The locker's logins as the `parcels.staff` list."""
    return [{"id": r.id, "name": r.name, "role": r.role, "code": r.code,
             "pin_hash": r.pin_hash, "disabled": r.disabled} for r in staff_rows(session, locker)]


def last_body(session: Session, locker: str) -> dict[str, Any] | None:
    """The body last published to `locker` by a console using this database."""
    row = session.get(ConfigBodyRow, locker)
    return dict(row.body) if row is not None else None


def record_published_body(session: Session, locker: str, version: int, digest: str,
                          body: dict[str, Any], now_ms: int) -> None:
    upsert(session, ConfigBodyRow, [{"locker": locker, "version": version, "hash": digest,
                                     "body": body, "published_at": now_ms}], ["locker"])
