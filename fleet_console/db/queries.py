"""What the operator's commands read from the console database (`status`, `alarms`, a command's
check that a locker is known); the web back office reads through the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal_column, or_, select
from sqlalchemy.orm import Session

from fleet_console.db.models import Alarm, Cell, IngestReplica, Locker, ParcelRow, QuarantineRow

#: Alarms count as open on a locker for this long after they were raised, unless ended.
OPEN_ALARM_MS = 24 * 3600 * 1000


def is_known_locker(session: Session, locker: str) -> bool:
    """True when the ingest stored something of `locker`."""
    return session.get(Locker, locker) is not None


def fleet_rows(
    session: Session, locker: str | None = None
) -> tuple[Sequence[Locker], Sequence[Cell]]:
    """Every locker (or the one named) and its cells' snapshots, by id."""
    lockers = select(Locker).order_by(Locker.id)
    cells = select(Cell).order_by(Cell.locker, Cell.cell)
    if locker:
        lockers, cells = lockers.where(Locker.id == locker), cells.where(Cell.locker == locker)
    return session.scalars(lockers).all(), session.scalars(cells).all()


def latest_alarms(session: Session, *, last: int, locker: str | None = None) -> list[Alarm]:
    """The `last` (at least one) alarms, of one locker or all, oldest first."""
    query = select(Alarm).order_by(Alarm.id.desc()).limit(max(last, 1))
    if locker:
        query = query.where(Alarm.locker == locker)
    return list(reversed(session.scalars(query).all()))


def latest_quarantine(
    session: Session, *, last: int, locker: str | None = None
) -> list[QuarantineRow]:
    """The `last` (at least one) quarantined messages, of one locker or all, oldest first."""
    query = select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(max(last, 1))
    if locker:
        query = query.where(QuarantineRow.locker == locker)
    return list(reversed(session.scalars(query).all()))


# -- `status` at fleet scale: counted in SQL, one page of lockers loaded ------------------------
@dataclass(frozen=True)
class FleetFilter:
    """Which lockers a `status` page lists (the totals are always the whole fleet's)."""

    locker: str | None = None
    offline: bool = False
    alarms: bool = False
    incomplete: bool = False


def _declared_count(session: Session) -> ColumnElement[Any]:
    """The length of `declared_cells` (NULL when it is no array: a locker declaring none)."""
    typeof = "json_typeof" if session.get_bind().dialect.name == "postgresql" else "json_type"
    return case(
        (getattr(func, typeof)(Locker.declared_cells) == "array",
         func.json_array_length(Locker.declared_cells)),
        else_=None,
    )


def _fleet(session: Session, now: int) -> Any:
    """Every locker with its counts (cells stored, cells declared, open alarms): a subquery."""
    cells = (select(func.count()).select_from(Cell).where(Cell.locker == Locker.id)
             .correlate(Locker).scalar_subquery())
    alarms = (select(func.count()).select_from(Alarm)
              .where(Alarm.locker == Locker.id, Alarm.at >= now - OPEN_ALARM_MS,
                     Alarm.ended_at.is_(None))
              .correlate(Locker).scalar_subquery())
    return select(
        Locker.id, Locker.online, Locker.version, Locker.boot_id, Locker.started_at,
        Locker.boards, Locker.last_status_at, Locker.config_version, Locker.declared_cells,
        Locker.last_heard_at, Locker.last_event_at, Locker.stored_seq, Locker.acked_seq,
        Locker.gap_since, Locker.outbox_depth, Locker.outbox_oldest_at,
        cells.label("cells_known"), _declared_count(session).label("cells_declared"),
        alarms.label("alarms_open"),
    ).subquery("fleet")


def _incomplete(f: Any) -> ColumnElement[bool]:
    return and_(f.c.cells_declared.is_not(None), f.c.cells_known < f.c.cells_declared)


def fleet_totals(session: Session, now: int) -> dict[str, int]:
    """The whole fleet's counts, in one query: lockers, online, offline, unknown (no status
    yet), incomplete (fewer cells stored than declared), with_alarms."""
    f = _fleet(session, now)
    one: ColumnElement[int] = literal_column("1")
    row = session.execute(select(
        func.count(),
        func.coalesce(func.sum(case((f.c.online.is_(True), one), else_=0)), 0),
        func.coalesce(func.sum(case((f.c.online.is_(False), one), else_=0)), 0),
        func.coalesce(func.sum(case((f.c.online.is_(None), one), else_=0)), 0),
        func.coalesce(func.sum(case((_incomplete(f), one), else_=0)), 0),
        func.coalesce(func.sum(case((f.c.alarms_open > 0, one), else_=0)), 0),
    ).select_from(f)).one()
    keys = ("lockers", "online", "offline", "unknown", "incomplete", "with_alarms")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def _filtered(session: Session, now: int, which: FleetFilter) -> tuple[Any, Select[Any]]:
    f = _fleet(session, now)
    query = select(f)
    if which.locker:
        query = query.where(f.c.id == which.locker)
    if which.offline:
        query = query.where(or_(f.c.online.is_(False), f.c.online.is_(None)))
    if which.alarms:
        query = query.where(f.c.alarms_open > 0)
    if which.incomplete:
        query = query.where(_incomplete(f))
    return f, query


def fleet_page(
    session: Session, now: int, which: FleetFilter, *, limit: int | None = None,
    after: str | None = None, offset: int = 0,
) -> tuple[list[Any], int]:
    """One page of the lockers `which` selects, by id (keyset: ids after `after`; or `offset`),
    with their counts; and how many lockers match in all."""
    f, query = _filtered(session, now, which)
    matching = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    query = query.order_by(f.c.id)
    if after is not None:
        query = query.where(f.c.id > after)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).all()), int(matching)


def cells_of(session: Session, lockers: Sequence[str]) -> list[Any]:
    """The cell snapshots of these lockers (a page's), by locker and cell."""
    out: list[Any] = []
    for i in range(0, len(lockers), 500):
        chunk = list(lockers[i:i + 500])
        out += session.execute(
            select(Cell.locker, Cell.cell, Cell.state, Cell.door, Cell.size, Cell.since)
            .where(Cell.locker.in_(chunk)).order_by(Cell.locker, Cell.cell)
        ).all()
    return out


def ingest_replicas(session: Session) -> list[IngestReplica]:
    """Every ingest that ever beat in this database, by client id."""
    return list(session.scalars(select(IngestReplica).order_by(IngestReplica.client_id)).all())


def open_console_alarms(session: Session) -> list[Alarm]:
    """The console's own alarms not ended (`ingest_lag`), oldest first."""
    return list(session.scalars(
        select(Alarm).where(Alarm.kind == "ingest_lag", Alarm.ended_at.is_(None))
        .order_by(Alarm.id)
    ).all())


# -- `parcels`: what parcel lockers' events told (fleet_console/parcel_records.py) -------------
def parcels_page(
    session: Session,
    *,
    locker: str | None = None,
    status: str | None = None,
    barcode: str | None = None,
    limit: int | None = None,
    after: tuple[str, str] | None = None,
) -> tuple[list[ParcelRow], int]:
    """One page of parcels by (locker, parcel_id), after the one named (a stable cursor while
    parcels are added), and how many match the filters in all."""
    where: list[ColumnElement[bool]] = []
    if locker:
        where.append(ParcelRow.locker == locker)
    if status:
        where.append(ParcelRow.status == status)
    if barcode:
        where.append(ParcelRow.barcode == barcode)
    matching = int(session.scalar(select(func.count()).select_from(ParcelRow).where(*where))
                   or 0)
    query = select(ParcelRow).where(*where).order_by(ParcelRow.locker, ParcelRow.parcel_id)
    if after is not None:
        lk, pid = after
        query = query.where(or_(ParcelRow.locker > lk,
                                and_(ParcelRow.locker == lk, ParcelRow.parcel_id > pid)))
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query).all()), matching
