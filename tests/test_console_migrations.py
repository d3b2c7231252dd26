"""The console database is migrated by Alembic, on SQLite and PostgreSQL.

`open_database` brings any database to the newest revision: an empty one, one created by the
console before migrations existed (today's `create_all` schema, frozen below as its DDL), and one
created by the first release (no `quarantine`, no `notifications`, no `lockers.declared_cells`).
Each ends equal to the models (Alembic's `compare_metadata` finds no difference) with its rows
kept. Consoles that start together on a fresh database migrate it once; a database migrated by a
newer console is refused with a clear message (exit 1), never used blindly.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, func, inspect, select, text

from fleet_console.db.engine import open_database
from fleet_console.db.migrate import SCHEMA_HEAD, DatabaseTooNew, alembic_config
from fleet_console.db.models import Base, CommandRow, EventRow, Locker, QuarantineRow
from tests.fixtures.postgres import PrivatePostgres

#: The schema as `Base.metadata.create_all` made it before migrations (the console of issue 10),
#: for SQLite and PostgreSQL: `{serial}` is INTEGER / BIGSERIAL, `{blob}` BLOB / BYTEA.
TODAY_DDL = """
CREATE TABLE alarms (
    id {serial} NOT NULL, locker VARCHAR(128) NOT NULL, kind VARCHAR(64) NOT NULL,
    data JSON NOT NULL, at BIGINT NOT NULL, received_at BIGINT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_alarms_locker_at ON alarms (locker, at);
CREATE TABLE cells (
    locker VARCHAR(128) NOT NULL, cell INTEGER NOT NULL, state VARCHAR(16) NOT NULL,
    door VARCHAR(16) NOT NULL, size VARCHAR(4) NOT NULL, since BIGINT NOT NULL,
    updated_at BIGINT NOT NULL, PRIMARY KEY (locker, cell));
CREATE TABLE commands (
    cmd_id VARCHAR(36) NOT NULL, locker VARCHAR(128) NOT NULL, type TEXT, args JSON,
    operator TEXT, reason TEXT, issued_at BIGINT, expires_at BIGINT, status VARCHAR(16) NOT NULL,
    result_reason TEXT, result_data JSON, updated_at BIGINT NOT NULL, PRIMARY KEY (cmd_id));
CREATE INDEX ix_commands_locker_issued ON commands (locker, issued_at);
CREATE TABLE events (
    id {serial} NOT NULL, locker VARCHAR(128) NOT NULL, seq BIGINT NOT NULL,
    event_id VARCHAR(36) NOT NULL, at BIGINT NOT NULL, type TEXT NOT NULL, data JSON NOT NULL,
    received_at BIGINT NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_events_locker_seq UNIQUE (locker, seq));
CREATE TABLE lockers (
    id VARCHAR(128) NOT NULL, online BOOLEAN, version TEXT, boot_id TEXT, started_at BIGINT,
    last_status_at BIGINT, boards JSON, config_version BIGINT, config_hash VARCHAR(64),
    config_applied_at BIGINT, acked_seq BIGINT, gap_since BIGINT,
    declared_cells JSON,
    PRIMARY KEY (id));
CREATE TABLE notifications (
    id {serial} NOT NULL, locker VARCHAR(128) NOT NULL, notification_id TEXT NOT NULL,
    channel VARCHAR(16) NOT NULL, recipient TEXT NOT NULL, status VARCHAR(16) NOT NULL,
    detail TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_notifications_locker_id UNIQUE (locker, notification_id));
CREATE INDEX ix_notifications_locker_at ON notifications (locker, at);
CREATE TABLE quarantine (
    id {serial} NOT NULL, locker VARCHAR(128) NOT NULL, topic TEXT NOT NULL,
    reason VARCHAR(32) NOT NULL, detail TEXT NOT NULL, excerpt {blob}, size BIGINT NOT NULL,
    at BIGINT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_quarantine_locker_at ON quarantine (locker, at);
"""


def _statements(*, first_release: bool, dialect: str) -> list[str]:
    """Today's DDL, or the first release's (without the tables and column added since)."""
    serial, blob = ("BIGSERIAL", "BYTEA") if dialect == "postgresql" else ("INTEGER", "BLOB")
    out = []
    for stmt in TODAY_DDL.format(serial=serial, blob=blob).split(";"):
        if not stmt.strip():
            continue
        if first_release and ("notifications" in stmt or "quarantine" in stmt):
            continue
        if first_release:
            stmt = stmt.replace("declared_cells JSON,", "")
        out.append(stmt)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """The URL of a database that does not exist yet (SQLite) or is empty (PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/console/console.db"
        return
    cluster: PrivatePostgres = request.getfixturevalue("postgres_cluster")
    yield cluster.create_database(f"migrate_{uuid.uuid4().hex[:12]}")


def _create_legacy(url: str, *, first_release: bool) -> None:
    """A database as an earlier console left it, with a locker, an event and a command."""
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    with engine.begin() as conn:
        for stmt in _statements(first_release=first_release, dialect=engine.dialect.name):
            conn.exec_driver_sql(stmt)
        conn.execute(text("INSERT INTO lockers (id, online, acked_seq) VALUES ('L1', true, 7)"))
        conn.execute(text(
            "INSERT INTO events (locker, seq, event_id, at, type, data, received_at) "
            "VALUES ('L1', 7, 'e7', 1000, 'cell_opened', '{\"cell\": 3}', 1001)"
        ))
        conn.execute(text(
            "INSERT INTO commands (cmd_id, locker, type, status, updated_at) "
            "VALUES ('c1', 'L1', 'open', 'done', 1002)"
        ))
    engine.dispose()


def _revision_and_diff(engine: Engine) -> tuple[str | None, list[object]]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        return context.get_current_revision(), list(compare_metadata(context, Base.metadata))


def test_the_head_constant_is_the_newest_migration() -> None:
    """open_database skips Alembic when the database is at SCHEMA_HEAD: it must be the head."""
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_HEAD]


def test_an_empty_database_is_migrated_to_the_models(fresh_url: str) -> None:
    db = open_database(fresh_url)
    try:
        revision, diff = _revision_and_diff(db.engine)
        assert (revision, diff) == (SCHEMA_HEAD, [])
    finally:
        db.dispose()


@pytest.mark.parametrize("first_release", [False, True], ids=["todays_code", "first_release"])
def test_a_database_of_an_earlier_console_is_migrated_and_keeps_its_rows(
    fresh_url: str, first_release: bool
) -> None:
    _create_legacy(fresh_url, first_release=first_release)
    db = open_database(fresh_url)
    try:
        revision, diff = _revision_and_diff(db.engine)
        assert (revision, diff) == (SCHEMA_HEAD, [])
        with db.transaction() as s:
            locker = s.get(Locker, "L1")
            assert locker is not None and (locker.acked_seq, locker.declared_cells) == (7, None)
            assert s.scalars(select(EventRow.data)).all() == [{"cell": 3}]
            assert s.scalars(select(CommandRow.status)).all() == ["done"]
            s.add(QuarantineRow(locker="L1", topic="t", reason="r", detail="d", excerpt=b"x",
                                size=1, at=1))
            locker.declared_cells = [1, 2]
        with db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(QuarantineRow)) == 1
            assert s.get(Locker, "L1").declared_cells == [1, 2]  # type: ignore[union-attr]
    finally:
        db.dispose()
    db = open_database(fresh_url)  # a second start: nothing to do, nothing changed
    try:
        assert _revision_and_diff(db.engine) == (SCHEMA_HEAD, [])
    finally:
        db.dispose()


def _open_when_all_ready(url: str, ready: Barrier) -> None:
    """A console process: wait for the others, then open the database at the same instant."""
    ready.wait(timeout=30)
    open_database(url).dispose()


def test_consoles_starting_together_migrate_a_fresh_database_once(fresh_url: str) -> None:
    """Four processes (an ingest, operators' commands) open the same fresh database at once."""
    fork = multiprocessing.get_context("fork")  # children start with the modules loaded
    ready = fork.Barrier(4)
    procs = [fork.Process(target=_open_when_all_ready, args=(fresh_url, ready)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
                (SCHEMA_HEAD,)
            ]
        assert _revision_and_diff(engine) == (SCHEMA_HEAD, [])
    finally:
        engine.dispose()


def test_a_database_of_a_newer_console_is_refused(fresh_url: str, tmp_path: Path) -> None:
    open_database(fresh_url).dispose()
    engine = create_engine(fresh_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    with pytest.raises(DatabaseTooNew, match="f00d"):
        open_database(fresh_url)
    config = tmp_path / "console.toml"
    config.write_text(f'[database]\nurl = "{fresh_url}"\n')
    out = subprocess.run(
        [str(Path(sys.executable).with_name("locker-console")), "--config", str(config),
         "alarms"], capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1, out
    assert "newer" in out.stderr and "f00d" in out.stderr, out.stderr
    engine = create_engine(fresh_url)
    try:
        assert set(inspect(engine).get_table_names()) == tables  # left as it was
    finally:
        engine.dispose()
