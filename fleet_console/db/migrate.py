"""Bring the console database to the newest schema with Alembic, once, whoever starts first.

The revisions are in fleet_console/db/migrations/versions/ (shipped in the package, so an
installed console migrates itself). `upgrade` runs at every start (`open_database`): a database at
SCHEMA_HEAD costs one look at `alembic_version` (Alembic is not even imported); otherwise the
migrations run in one transaction under a lock that every console takes (SQLite: BEGIN IMMEDIATE;
PostgreSQL: an advisory transaction lock), so an ingest and operators' commands that start together
on a fresh database migrate it once and the others wait, then find it done. The first revision is
the schema of the consoles before migrations; it adopts a database they created (tables and the
nullable columns it lacks are added, rows kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision (tests/test_console_migrations.py checks it is Alembic's only head).
SCHEMA_HEAD = "0005"

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"

#: pg_advisory_xact_lock key of console migrations (any constant shared by every console).
_PG_LOCK_KEY = 0x10C4E5DB


class DatabaseTooNew(SQLAlchemyError):
    """The database was migrated by a newer console (a revision this one does not know).

    A SQLAlchemyError, so every command reports it as a database it cannot open (exit 1).
    """


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def alembic_config() -> Config:
    """Alembic's configuration of the console's migrations (no .ini file: the package's own)."""
    from alembic.config import Config  # imported here: only a migration needs Alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Migrate the database of `engine` to SCHEMA_HEAD; DatabaseTooNew if it is past it."""
    with engine.connect() as conn:
        if current_revision(conn) == SCHEMA_HEAD:
            return
    with engine.connect() as conn:
        _lock(conn)
        revision = current_revision(conn)
        if revision != SCHEMA_HEAD:
            _run_migrations(conn, revision)
        conn.commit()


def _lock(conn: Connection) -> None:
    """Begin the migration's transaction holding the lock that other consoles wait for."""
    if conn.dialect.name == "sqlite":
        # pysqlite begins no transaction before DDL; an explicit one makes the migration atomic
        # and takes the write lock now (waiting up to the busy timeout for another writer).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _run_migrations(conn: Connection, revision: str | None) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if revision is not None and revision not in known:
        raise DatabaseTooNew(
            f"the database is at schema revision {revision!r}, newer than this console's "
            f"{SCHEMA_HEAD!r}: it was migrated by a newer locker-console; run that one"
        )
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
