"""Replica sequencing (issue 16 item 5): `lockers.gap_asked_at`, when a hole was last asked for.

The watermark and the hole of each locker already live in `lockers` (`acked_seq`, `gap_since`);
with several ingest replicas the time a hole was last asked for again on `events/resend` must be
there too, or every replica (and every restart) asks at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("lockers", sa.Column("gap_asked_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lockers") as batch:
        batch.drop_column("gap_asked_at")
