"""The parcel tables, kept in step with the events the ingest stores (in its transaction).

The decisions are fleet_console/parcel_records.py's; here only the reads of the rows a batch may
change and the writes. The ingest calls `store_parcel_facts` with the event rows it inserts;
replicas serialise per locker (the batch holds the locker's row lock), so reading then writing a
parcel's row cannot race another replica's batch of the same locker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from fleet_console.db.models import (
    KioskRecipientRow,
    ParcelReturnRow,
    ParcelRow,
    StaffLoginRow,
)
from fleet_console.db.writes import insert_for, upsert
from fleet_console.parcel_records import (
    PROJECTED_TYPES,
    ParcelKey,
    Row,
    StoredEvent,
    keys_needed,
    project,
)

_PARCEL_COLUMNS = tuple(c.name for c in ParcelRow.__table__.columns if c.name != "id")
_RETURN_COLUMNS = tuple(c.name for c in ParcelReturnRow.__table__.columns if c.name != "id")


def store_parcel_facts(session: Session, events: Sequence[Mapping[str, Any]]) -> None:
    """Fold these event rows (`events` columns: locker, seq, at, type, data) into the parcel
    tables; events of other types pass by at the cost of one look at their type."""
    facts = [StoredEvent(e["locker"], e["seq"], e["at"], e["type"], e["data"])
             for e in events if e["type"] in PROJECTED_TYPES]
    if not facts:
        return
    parcel_keys, return_keys = keys_needed(facts)
    changes = project(
        facts,
        _current(session, ParcelRow, ParcelRow.parcel_id, parcel_keys, _PARCEL_COLUMNS),
        _current(session, ParcelReturnRow, ParcelReturnRow.return_id, return_keys,
                 _RETURN_COLUMNS),
    )
    if changes.empty:
        return
    upsert(session, ParcelRow, [changes.parcels[k] for k in sorted(changes.parcels)],
           ["locker", "parcel_id"])
    upsert(session, ParcelReturnRow, [changes.returns[k] for k in sorted(changes.returns)],
           ["locker", "return_id"])
    upsert(session, KioskRecipientRow,
           [changes.kiosk_recipients[k] for k in sorted(changes.kiosk_recipients)],
           ["locker", "recipient_id"], [])
    if changes.staff_logins:
        session.execute(
            insert_for(session, StaffLoginRow).on_conflict_do_nothing(
                index_elements=["locker", "seq"]),
            changes.staff_logins,
        )


def _current(session: Session, model: Any, id_column: Any, keys: Iterable[ParcelKey],
             columns: Sequence[str]) -> dict[ParcelKey, Row]:
    wanted = sorted(keys)
    found: dict[ParcelKey, Row] = {}
    for i in range(0, len(wanted), 200):
        chunk = wanted[i : i + 200]
        query = select(*(getattr(model, c) for c in columns)).where(
            or_(*(and_(model.locker == lk, id_column == key) for lk, key in chunk)))
        for r in session.execute(query):
            row = dict(r._mapping)
            found[(row["locker"], row[id_column.key])] = row
    return found
