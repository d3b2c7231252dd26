"""Parcel facts (issue 12): what parcel lockers' events tell the console.

`parcels` (one row per locker and parcel: where, for whom, its status and the times of its
steps), `parcel_returns` (items dropped for return, and their collection), `kiosk_recipients`
(recipients a courier added at a kiosk: id and name, no phone or e-mail) and `staff_logins`
(kiosk logins and lockouts). Filled by the ingest (fleet_console/parcel_records.py); never a
code, PIN or return code. Self-contained: only adds tables.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", _RowId, primary_key=True, autoincrement=True)


def _big(name: str, nullable: bool = True) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "parcels",
        _id(),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("parcel_id", sa.String(64), nullable=False),
        sa.Column("barcode", sa.String(64), nullable=True),
        sa.Column("cell", sa.Integer, nullable=True),
        sa.Column("size", sa.String(4), nullable=True),
        sa.Column("recipient_id", sa.String(64), nullable=True),
        sa.Column("courier_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        _big("announced_at"), _big("deposited_at"), _big("picked_up_at"), _big("expires_at"),
        _big("updated_at", False), _big("updated_seq", False),
        sa.UniqueConstraint("locker", "parcel_id", name="uq_parcels_locker_parcel"),
        sa.Index("ix_parcels_parcel_id", "parcel_id"),
        sa.Index("ix_parcels_barcode", "barcode"),
        sa.Index("ix_parcels_status", "status"),
    )
    op.create_table(
        "parcel_returns",
        _id(),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("return_id", sa.String(64), nullable=False),
        sa.Column("cell", sa.Integer, nullable=True),
        sa.Column("size", sa.String(4), nullable=True),
        sa.Column("recipient_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        _big("deposited_at"), _big("collected_at"),
        sa.Column("collected_by", sa.String(64), nullable=True),
        _big("updated_at", False), _big("updated_seq", False),
        sa.UniqueConstraint("locker", "return_id", name="uq_parcel_returns_locker_id"),
        sa.Index("ix_parcel_returns_return_id", "return_id"),
    )
    op.create_table(
        "kiosk_recipients",
        _id(),
        sa.Column("locker", sa.String(128), nullable=False),
        sa.Column("recipient_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("department", sa.Text, nullable=True),
        sa.Column("courier_id", sa.String(64), nullable=True),
        sa.Column("has_phone", sa.Boolean, nullable=True),
        sa.Column("has_email", sa.Boolean, nullable=True),
        _big("added_at", False),
        sa.UniqueConstraint("locker", "recipient_id", name="uq_kiosk_recipients_locker_id"),
    )
    op.create_table(
        "staff_logins",
        _id(),
        sa.Column("locker", sa.String(128), nullable=False),
        _big("seq", False),
        sa.Column("staff_id", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        _big("failures"), _big("locked_until"), _big("at", False),
        sa.UniqueConstraint("locker", "seq", name="uq_staff_logins_locker_seq"),
        sa.Index("ix_staff_logins_locker_at", "locker", "at"),
    )


def downgrade() -> None:
    for table in ("staff_logins", "kiosk_recipients", "parcel_returns", "parcels"):
        op.drop_table(table)
