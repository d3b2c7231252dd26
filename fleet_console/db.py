"""The console's database: SQLAlchemy 2 models and engine setup, SQLite by default, PostgreSQL too.

The URL comes from the configuration (`[database] url`). SQLite gets WAL and `synchronous=NORMAL`
(a commit survives a process crash; the last commits may be lost only on power loss, which the
lockers' outboxes cover since they keep events until acknowledged) and a busy timeout, so the
ingest and an operator's CLI can write at the same time. PostgreSQL goes through psycopg 3
(`postgresql+psycopg://`). The schema is created at start (`create_all`); there are no migrations
yet. Times are Unix epoch milliseconds (BIGINT), as on the wire.

Tables: `lockers` (presence, applied config, the event ack watermark), `cells` (latest snapshot),
`events` (UNIQUE (locker, seq)), `alarms` (raised by the console itself, e.g. `seq_gap`),
`commands` (the audit trail of every remote command issued and its results), `notifications`
(each SMS / e-mail relayed by a locker and sent by the console: UNIQUE (locker, notification_id),
masked recipient, outcome; never the text) and `quarantine` (messages the ingest could not store:
locker, topic, reason, a bounded excerpt; see fleet_console/quarantine.py).

A SQLite file and its `-wal`/`-shm` are private to the console's user (0600): they hold the
fleet's events and the audit trail. A column added after a table was first created is added at
start (`ALTER TABLE ... ADD COLUMN`, nullable), so an existing database keeps working.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    inspect,
    or_,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

#: An auto-increment key that is BIGINT on PostgreSQL and SQLite's rowid alias on SQLite.
_RowId = BigInteger().with_variant(Integer(), "sqlite")

#: Final command statuses: a late `accepted` never overwrites one of these.
FINAL_STATUSES = ("done", "failed", "rejected")

#: Result data fields that are secrets (the PIN of a `reveal-pin`): the audit trail keeps that
#: the act happened, who asked and why, never the secret itself.
SECRET_RESULT_FIELDS = ("pin",)
REDACTED = "redacted"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: BigInteger,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Locker(Base):
    """One locker as last heard of. `acked_seq` is the ingest's ack watermark (None: no event
    seen yet); `gap_since` is when the current gap in its events was first seen."""

    __tablename__ = "lockers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    online: Mapped[bool | None]
    version: Mapped[str | None] = mapped_column(Text)
    boot_id: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[int | None]
    last_status_at: Mapped[int | None]
    boards: Mapped[list[Any] | None]
    config_version: Mapped[int | None]
    config_hash: Mapped[str | None] = mapped_column(String(64))
    config_applied_at: Mapped[int | None]
    acked_seq: Mapped[int | None]
    gap_since: Mapped[int | None]
    #: The cell ids its last online status declared (None: it declares none, an older lockerd);
    #: the ingest stores snapshots of these cells only.
    declared_cells: Mapped[list[Any] | None]


class Cell(Base):
    """The latest retained snapshot of one cell."""

    __tablename__ = "cells"

    locker: Mapped[str] = mapped_column(String(128), primary_key=True)
    cell: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    door: Mapped[str] = mapped_column(String(16))
    size: Mapped[str] = mapped_column(String(4))
    since: Mapped[int]
    updated_at: Mapped[int]


class EventRow(Base):
    """One event from a locker's outbox, stored once per (locker, seq)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("locker", "seq", name="uq_events_locker_seq"),)

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int]
    event_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[int]
    type: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    received_at: Mapped[int]


class Alarm(Base):
    """Something the console noticed about a locker (kind `seq_gap`, `seq_gap_permanent`)."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_locker_at", "locker", "at"),)

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    at: Mapped[int]
    received_at: Mapped[int]


class QuarantineRow(Base):
    """A message from a locker that could not be stored: kept for an operator to look at
    (`reason`: fleet_console.quarantine.QuarantineReason; `excerpt`: its first bytes, none for a
    relayed notification; `size`: its whole length)."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_locker_at", "locker", "at"),)

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    topic: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int]
    at: Mapped[int]


class CommandRow(Base):
    """Audit trail of a remote command: who issued what, why, and what the locker answered.

    `status` is `issued` until the locker answers, then its last result status; rows may also
    be created by the ingest from a result alone (a command issued without database access).
    """

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_locker_issued", "locker", "issued_at"),)

    cmd_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    locker: Mapped[str] = mapped_column(String(128))
    type: Mapped[str | None] = mapped_column(Text)
    args: Mapped[dict[str, Any] | None]
    operator: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[int | None]
    expires_at: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16))
    result_reason: Mapped[str | None] = mapped_column(Text)
    result_data: Mapped[dict[str, Any] | None]
    updated_at: Mapped[int]


class NotificationRow(Base):
    """One SMS / e-mail a locker relayed (`lockers/{id}/notify`) and what became of it.

    Never the text (it holds codes and PINs) and only a masked recipient (`+7900***4567`,
    `c***@example.org`). `status`: `sent`, `failed` or `no_channel` (the console has no such
    channel configured). One row per (locker, notification_id): a re-delivery is not sent again.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("locker", "notification_id", name="uq_notifications_locker_id"),
        Index("ix_notifications_locker_at", "locker", "at"),
    )

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    notification_id: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    at: Mapped[int]


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the same mode), and take
    group and others' access away from one created before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never open (and close) an existing database file: closing any descriptor of a file drops
    # every POSIX lock this process holds on it, SQLite's included (a corrupted database).
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except FileNotFoundError:
            pass


def make_engine(url: str, *, connect_timeout_s: float = 5.0) -> Engine:
    """An engine for `url`; a SQLite file is created private (0600), parent folders too."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith(
            "file:"
        ):
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": int(connect_timeout_s)}
        )
    return create_engine(parsed)


@dataclass
class Database:
    """An engine with the schema in place and a session factory."""

    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose transaction commits on exit (rolls back on error)."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Connect and create the tables that do not exist yet."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))


def _add_missing_columns(engine: Engine) -> None:
    """Add the (nullable) columns a newer release added to an existing table."""
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(text(
                        f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
                    ))


def insert_for(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for `model`."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise RuntimeError(f"unsupported database {name!r}: use SQLite or PostgreSQL")


def upsert(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | None = None,
) -> None:
    """Insert `rows` (all with the same columns); on a key conflict update `update` columns
    (default: every non-key column given), or do nothing when `update` is empty."""
    if not rows:
        return
    stmt = insert_for(session, model)
    columns = update if update is not None else [c for c in rows[0] if c not in keys]
    if columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(stmt, list(rows))


def record_command_issued(session: Session, command: dict[str, Any], now_ms: int) -> None:
    """Audit a signed command about to be published (status `issued`); a result that the ingest
    stored first is kept."""
    row = {
        "cmd_id": command["cmd_id"],
        "locker": command["locker"],
        "type": command["type"],
        "args": command["args"],
        "operator": command["operator"],
        "reason": command["reason"],
        "issued_at": command["issued_at"],
        "expires_at": command["expires_at"],
        "status": "issued",
        "updated_at": now_ms,
    }
    keep = ("cmd_id", "status", "result_reason", "result_data", "updated_at")
    upsert(session, CommandRow, [row], ["cmd_id"], [c for c in row if c not in keep])


def redact_result_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a command's result data without its secrets (see SECRET_RESULT_FIELDS)."""
    if not data:
        return data
    return {k: REDACTED if k in SECRET_RESULT_FIELDS else v for k, v in data.items()}


def record_command_results(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Store results: dicts of cmd_id, locker, status, result_reason, result_data, updated_at.

    One row per cmd_id per call. A late or duplicated `accepted` never replaces a final status.
    Secret fields of result_data (SECRET_RESULT_FIELDS) are stored as `"redacted"`.
    """
    if not rows:
        return
    rows = [{**row, "result_data": redact_result_data(row.get("result_data"))} for row in rows]
    stmt = insert_for(session, CommandRow)
    table = CommandRow.__table__
    # Equalities, not IN: an expanding IN cannot run as executemany, so a batch holding the
    # results of two commands failed, and was retried, for ever.
    final = or_(*(table.c.status == status for status in FINAL_STATUSES))
    stale = final & (stmt.excluded.status == "accepted")
    set_ = {
        c: case((stale, table.c[c]), else_=stmt.excluded[c])
        for c in ("status", "result_reason", "result_data", "updated_at")
    }
    session.execute(stmt.on_conflict_do_update(index_elements=["cmd_id"], set_=set_), list(rows))
