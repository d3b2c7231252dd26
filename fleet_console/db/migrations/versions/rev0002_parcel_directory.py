"""Parcel directory (issue 12): a locker's recipients and staff, and the last published body.

`parcel_recipients` and `parcel_staff` hold what `locker-console recipients import` and
`locker-console couriers` publish in the `parcels` section; `config_bodies` the body last
published to each locker, so a section can be replaced while the others are kept.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "parcel_recipients",
        sa.Column("locker", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("department", sa.Text, nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("imported_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "parcel_staff",
        sa.Column("locker", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("pin_hash", sa.Text, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("locker", "code", name="uq_parcel_staff_locker_code"),
    )
    op.create_table(
        "config_bodies",
        sa.Column("locker", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("published_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("config_bodies", "parcel_staff", "parcel_recipients"):
        op.drop_table(table)
