"""Ingest lag and freshness: `ingest_replicas`, per-locker freshness columns, alarms that end.

`ingest_replicas` has one row per ingest process (its heartbeat: inbox depth, lag p50/max, rates);
`lockers` gains when the console last heard of each locker, its newest stored event and seq, and
the outbox its status reported; `alarms` gains `ended_at` (an `ingest_lag` episode that is over).
Self-contained: only adds (nullable columns, one table).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_LOCKER_COLUMNS = ("last_heard_at", "last_event_at", "stored_seq", "outbox_depth",
                   "outbox_oldest_at")


def upgrade() -> None:
    op.create_table(
        "ingest_replicas",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("last_beat_at", sa.BigInteger, nullable=False),
        sa.Column("beat_interval_ms", sa.BigInteger, nullable=False),
        sa.Column("inbox_depth", sa.BigInteger, nullable=False),
        sa.Column("lag_p50_ms", sa.BigInteger, nullable=True),
        sa.Column("lag_max_ms", sa.BigInteger, nullable=True),
        sa.Column("events_per_s", sa.Float, nullable=False),
        sa.Column("batches_per_s", sa.Float, nullable=False),
        sa.Column("lagging_since", sa.BigInteger, nullable=True),
        sa.Column("lag_alarm_id", sa.BigInteger, nullable=True),
        sa.Column("stopped_at", sa.BigInteger, nullable=True),
    )
    with op.batch_alter_table("lockers") as batch:
        for name in _LOCKER_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=True))
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(sa.Column("ended_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("ended_at")
    with op.batch_alter_table("lockers") as batch:
        for name in reversed(_LOCKER_COLUMNS):
            batch.drop_column(name)
    op.drop_table("ingest_replicas")
