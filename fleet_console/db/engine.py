"""Connecting to the console database: engine setup and `open_database`, which migrates it.

The URL comes from the configuration (`[database] url`). SQLite gets WAL and `synchronous=NORMAL`
(a commit survives a process crash; the last commits may be lost only on power loss, which the
lockers' outboxes cover since they keep events until acknowledged) and a busy timeout, so the
ingest and an operator's CLI can write at the same time. PostgreSQL goes through psycopg 3
(`postgresql+psycopg://`).

A SQLite file and its `-wal`/`-shm` are private to the console's user (0600): they hold the
fleet's events and the audit trail.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from fleet_console.db.migrate import upgrade


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Connect-time settings of a SQLite connection (the busy timeout first: switching a new
    database to WAL waits for another process that holds it instead of failing)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor, patience_s: float = 10.0) -> None:
    """`PRAGMA journal_mode=WAL`, tried again while another process holds the database: SQLite
    may answer "database is locked" at once, without calling its busy handler, while a second
    connection converts a fresh database to WAL (consoles starting together)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


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

    @property
    def shared_across_threads(self) -> bool:
        """Another thread's connection sees the same data (not an in-memory SQLite database,
        which is one per connection, and each thread has its own)."""
        database = self.engine.url.database
        return self.dialect != "sqlite" or (bool(database) and database != ":memory:" and (
            "mode=memory" not in str(self.engine.url)))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose transaction commits on exit (rolls back on error)."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Connect and bring the schema to the newest migration (fleet_console/db/migrate.py); a
    database that a newer console migrated is refused (migrate.DatabaseTooNew)."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
