"""Baseline: the console's schema before migrations (issue 10), adopting a database it made.

A database created by an earlier console (`create_all`, no `alembic_version`) gets the tables and
the nullable columns it lacks: the first release had no `notifications`, no `quarantine` and no
`lockers.declared_cells`; its rows are kept. The tables are frozen here: later model changes go in
later revisions, never in this one.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tables() -> sa.MetaData:
    """The seven tables as the consoles before migrations created them."""
    meta = sa.MetaData()
    sa.Table(
        "lockers", meta,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("online", sa.Boolean, nullable=True),
        sa.Column("version", sa.Text, nullable=True),
        sa.Column("boot_id", sa.Text, nullable=True),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("last_status_at", sa.BigInteger, nullable=True),
        sa.Column("boards", sa.JSON, nullable=True),
        sa.Column("config_version", sa.BigInteger, nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("config_applied_at", sa.BigInteger, nullable=True),
        sa.Column("acked_seq", sa.BigInteger, nullable=True),
        sa.Column("gap_since", sa.BigInteger, nullable=True),
        sa.Column("declared_cells", sa.JSON, nullable=True),
    )
    sa.Table(
        "cells", meta,
        sa.Column("locker", sa.String(128), primary_key=True),
        sa.Column("cell", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("size", sa.String(4), nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "events", meta,
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("locker", "seq", name="uq_events_locker_seq"),
    )
    sa.Table(
        "alarms", meta,
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Index("ix_alarms_locker_at", "locker", "at"),
    )
    sa.Table(
        "quarantine", meta,
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("excerpt", sa.LargeBinary, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Index("ix_quarantine_locker_at", "locker", "at"),
    )
    sa.Table(
        "commands", meta,
        sa.Column("cmd_id", sa.String(36), primary_key=True),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("type", sa.Text, nullable=True),
        sa.Column("args", sa.JSON, nullable=True),
        sa.Column("operator", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("issued_at", sa.BigInteger, nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result_reason", sa.Text, nullable=True),
        sa.Column("result_data", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Index("ix_commands_locker_issued", "locker", "issued_at"),
    )
    sa.Table(
        "notifications", meta,
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("notification_id", sa.Text, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("locker", "notification_id", name="uq_notifications_locker_id"),
        sa.Index("ix_notifications_locker_at", "locker", "at"),
    )
    return meta


def upgrade() -> None:
    """Create each missing table; add the missing (always nullable) columns of existing ones."""
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in _tables().sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {column["name"] for column in sa.inspect(bind).get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name} is missing and not nullable")
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    """Drop every table (the console's data with them)."""
    for table in reversed(_tables().sorted_tables):
        op.drop_table(table.name)
