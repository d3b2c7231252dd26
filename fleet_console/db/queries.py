"""What the operator's commands read from the console database (`status`, `alarms`, a command's
check that a locker is known); the web back office reads through the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_console.db.models import Alarm, Cell, Locker, QuarantineRow


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
