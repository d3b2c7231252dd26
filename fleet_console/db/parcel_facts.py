"""The parcel tables, kept in step with the events the ingest stores (in its transaction).

The decisions are fleet_console/parcel_records.py's; here only the reads of the rows a batch may
change and the writes. The ingest calls `store_parcel_facts` with the event rows it inserts;
replicas serialise per locker (the batch holds the locker's row lock), so reading then writing a
parcel's row cannot race another replica's batch of the same locker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from fleet_console.db.models import (
    KioskRecipientRow,
    ParcelReturnRow,
    ParcelRow,
    StaffLoginRow,
)
from fleet_console.parcel_records import (
    PROJECTED_TYPES,
    ParcelKey,
    Row,
    StoredEvent,
    keys_needed,
    project,
)

log = logging.getLogger("fleet_console.parcel_facts")

_PARCEL_COLUMNS = tuple(c.name for c in ParcelRow.__table__.columns if c.name != "id")
_RETURN_COLUMNS = tuple(c.name for c in ParcelReturnRow.__table__.columns if c.name != "id")


def store_parcel_facts(session: Session, events: Sequence[Mapping[str, Any]]) -> None:
    """Fold these event rows (`events` columns: locker, seq, at, type, data) into the parcel
    tables; events of other types pass by at the cost of one look at their type.

    In a savepoint: the events are what must be stored (the parcel tables can be rebuilt from
    them), so a failure here is logged and leaves the parcel tables as they were, never the
    batch unstored. A database error that may pass (connection lost, locked) is raised: the
    ingest retries the whole batch."""
    facts = [StoredEvent(e["locker"], e["seq"], e["at"], e["type"], e["data"])
             for e in events if e["type"] in PROJECTED_TYPES]
    if not facts:
        return
    try:
        with session.begin_nested():
            _fold(session, facts)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("parcel tables not updated for %d events (%s); the events are stored",
                      len(facts), ", ".join(sorted({f.locker for f in facts}))[:200])


def _fold(session: Session, facts: list[StoredEvent]) -> None:
    parcel_keys, return_keys = keys_needed(facts)
    changes = project(
        facts,
        _current(session, ParcelRow, ParcelRow.parcel_id, parcel_keys, _PARCEL_COLUMNS),
        _current(session, ParcelReturnRow, ParcelReturnRow.return_id, return_keys,
                 _RETURN_COLUMNS),
    )
    if changes.empty:
        return
    conn = session.connection()
    _execute(conn, ParcelRow, [changes.parcels[k] for k in sorted(changes.parcels)],
             ("locker", "parcel_id"), update=True)
    _execute(conn, ParcelReturnRow, [changes.returns[k] for k in sorted(changes.returns)],
             ("locker", "return_id"), update=True)
    _execute(conn, KioskRecipientRow,
             [changes.kiosk_recipients[k] for k in sorted(changes.kiosk_recipients)],
             ("locker", "recipient_id"), update=False)
    _execute(conn, StaffLoginRow, changes.staff_logins, ("locker", "seq"), update=False)


def _execute(conn: Connection, model: Any, rows: list[Row], keys: Sequence[str],
             update: bool) -> None:
    """Insert `rows` (unique by `keys` within the list), updating the row of a key that exists
    (`update`) or leaving it: one Core executemany (the ORM's bulk path ran this upsert row by
    row, 4x slower; multi-row VALUES, compiled per batch, and RETURNING to get SQLAlchemy's
    "insertmanyvalues" were both slower on PostgreSQL than psycopg's pipelined executemany)."""
    if not rows:
        return
    table = model.__table__
    pg = conn.dialect.name == "postgresql"
    stmt = postgresql.insert(table) if pg else sqlite.insert(table)
    if update:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: stmt.excluded[c] for c in rows[0] if c not in keys})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, rows)


def _current(session: Session, model: Any, id_column: Any, keys: Iterable[ParcelKey],
             columns: Sequence[str]) -> dict[ParcelKey, Row]:
    """The rows of these (locker, id) keys, found by id (its own index: one probe per id,
    where a row-value IN scans the whole table on SQLite); rows of other lockers dropped."""
    wanted = set(keys)
    ids = sorted({key for _, key in wanted})
    found: dict[ParcelKey, Row] = {}
    for i in range(0, len(ids), 500):
        query = select(*(getattr(model, c) for c in columns)).where(
            id_column.in_(ids[i : i + 500]))
        for r in session.execute(query):
            row = dict(r._mapping)
            key = (row["locker"], row[id_column.key])
            if key in wanted:
                found[key] = row
    return found
