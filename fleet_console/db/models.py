"""The console database's tables: SQLAlchemy 2 models, the schema every migration leads to.

Times are Unix epoch milliseconds (BIGINT), as on the wire. Tables: `lockers` (presence, applied
config, the event ack watermark), `cells` (latest snapshot), `events` (UNIQUE (locker, seq)),
`alarms` (raised by the console itself, e.g. `seq_gap`), `ingest_replicas` (each ingest's
heartbeat and lag), `commands` (the audit trail of every
remote command issued and its results), `notifications` (each SMS / e-mail relayed by a locker and
sent by the console: UNIQUE (locker, notification_id), masked recipient, outcome; never the text)
`quarantine` (messages the ingest could not store: locker, topic, reason, a bounded excerpt;
see fleet_console/quarantine.py); for parcel lockers `parcel_recipients` and `parcel_staff` (the
directory the console publishes in each locker's `parcels` section: personal data and PIN
hashes, never PINs) and `config_bodies` (the body of the configuration last published to each
locker, so one section can be replaced while the others are kept); and what parcel lockers'
events tell (fleet_console/parcel_records.py): `parcels`, `parcel_returns`, `kiosk_recipients`
(added at a kiosk: no phone or e-mail) and `staff_logins` (never a code, PIN or return code).

A change here needs a migration in fleet_console/db/migrations/versions/ (see docs/architecture.md,
"Console database"): tests/test_console_migrations.py fails when the migrated schema and these
models differ.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: An auto-increment key that is BIGINT on PostgreSQL and SQLite's rowid alias on SQLite.
_RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """The console's tables; Python `int` is BIGINT (milliseconds and seqs need 64 bits)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: BigInteger,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Locker(Base):
    """One locker as last heard of. `acked_seq` is the ingest's ack watermark (None: no event
    seen yet); `gap_since` is when the current gap in its events was first seen. Ingest
    replicas lock this row while they sequence the locker's events (fleet_console/ingest.py)."""

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
    #: When the current gap was last asked for again on `events/resend` (None: not yet), so
    #: a restarted ingest or another replica waits the gap timeout before asking again.
    gap_asked_at: Mapped[int | None]
    #: The cell ids its last online status declared (None: it declares none, an older lockerd);
    #: the ingest stores snapshots of these cells only.
    declared_cells: Mapped[list[Any] | None]
    #: Freshness, written by the ingest's heartbeat (fleet_console/lag.py): when a committed
    #: batch last held a message of it, the newest `at` and highest seq of its stored events.
    last_heard_at: Mapped[int | None]
    last_event_at: Mapped[int | None]
    stored_seq: Mapped[int | None]
    #: Its outbox as its last status reported it (None: not reported, an older lockerd).
    outbox_depth: Mapped[int | None]
    outbox_oldest_at: Mapped[int | None]


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
    #: When the condition ended (an `ingest_lag` episode); None: not ended, or a one-off.
    ended_at: Mapped[int | None]


class IngestReplica(Base):
    """One ingest process's heartbeat (fleet_console/lag.py): what `status` shows of the ingest.

    A row whose `last_beat_at` is older than three `beat_interval_ms` is a stale replica (stopped,
    hung, or cut from the database). `lag_alarm_id` is its open `ingest_lag` alarm, if any."""

    __tablename__ = "ingest_replicas"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int]
    started_at: Mapped[int]
    last_beat_at: Mapped[int]
    beat_interval_ms: Mapped[int]
    inbox_depth: Mapped[int]
    lag_p50_ms: Mapped[int | None]
    lag_max_ms: Mapped[int | None]
    events_per_s: Mapped[float] = mapped_column(Float)
    batches_per_s: Mapped[float] = mapped_column(Float)
    lagging_since: Mapped[int | None]
    lag_alarm_id: Mapped[int | None]
    #: When it stopped cleanly (None: running, or it died without stopping: then stale).
    stopped_at: Mapped[int | None]


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


class RecipientRow(Base):
    """One recipient of a parcel locker, as the last `recipients import` gave it (the fields of
    contract.recipients.Recipient)."""

    __tablename__ = "parcel_recipients"

    locker: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(Text)
    number: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str | None] = mapped_column(String(8))
    imported_at: Mapped[int]


class StaffRow(Base):
    """A courier, operator, collector or administrator of one locker: a login code unique in
    that locker and the scrypt hash of the PIN (the PIN itself is never stored). A disabled
    login keeps its row (who it was stays known) and is published with `disabled: true`."""

    __tablename__ = "parcel_staff"
    __table_args__ = (UniqueConstraint("locker", "code", name="uq_parcel_staff_locker_code"),)

    locker: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(16))
    pin_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[int]
    updated_at: Mapped[int]


class ConfigBodyRow(Base):
    """The body of the configuration this console last published to a locker (signed and
    retained on the broker), with its version and contract.signing.config_hash."""

    __tablename__ = "config_bodies"

    locker: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    published_at: Mapped[int]


class ParcelRow(Base):
    """A parcel at a locker as its events told (fleet_console/parcel_records.py): ids, where,
    for whom, its status and the times of its steps. Never its code, nor a phone or e-mail."""

    __tablename__ = "parcels"
    __table_args__ = (
        UniqueConstraint("locker", "parcel_id", name="uq_parcels_locker_parcel"),
        #: The ingest finds a batch's parcels by id (fleet_console/db/parcel_facts.py).
        Index("ix_parcels_parcel_id", "parcel_id"),
        Index("ix_parcels_barcode", "barcode"),
        Index("ix_parcels_status", "status"),
    )

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    parcel_id: Mapped[str] = mapped_column(String(64))
    barcode: Mapped[str | None] = mapped_column(String(64))
    cell: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[str | None] = mapped_column(String(4))
    recipient_id: Mapped[str | None] = mapped_column(String(64))
    courier_id: Mapped[str | None] = mapped_column(String(64))
    #: announced, deposited, expired, picked_up, returned_to_sender, cancelled.
    status: Mapped[str] = mapped_column(String(24))
    announced_at: Mapped[int | None]
    deposited_at: Mapped[int | None]
    picked_up_at: Mapped[int | None]
    expires_at: Mapped[int | None]
    #: When the step now shown happened (the event's `at`), and the seq of that event.
    updated_at: Mapped[int]
    updated_seq: Mapped[int]


class ParcelReturnRow(Base):
    """An item dropped at a locker for return, and its collection (never the return code)."""

    __tablename__ = "parcel_returns"
    __table_args__ = (
        UniqueConstraint("locker", "return_id", name="uq_parcel_returns_locker_id"),
        Index("ix_parcel_returns_return_id", "return_id"),
    )

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    return_id: Mapped[str] = mapped_column(String(64))
    cell: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[str | None] = mapped_column(String(4))
    recipient_id: Mapped[str | None] = mapped_column(String(64))
    #: deposited, collected.
    status: Mapped[str] = mapped_column(String(24))
    deposited_at: Mapped[int | None]
    collected_at: Mapped[int | None]
    collected_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[int]
    updated_seq: Mapped[int]


class KioskRecipientRow(Base):
    """A recipient a courier added at a locker's kiosk (`recipient_added`): id, name and
    whether a phone / e-mail was given; the phone and e-mail themselves stay on the locker."""

    __tablename__ = "kiosk_recipients"
    __table_args__ = (
        UniqueConstraint("locker", "recipient_id", name="uq_kiosk_recipients_locker_id"),)

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    recipient_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(Text)
    department: Mapped[str | None] = mapped_column(Text)
    courier_id: Mapped[str | None] = mapped_column(String(64))
    has_phone: Mapped[bool | None]
    has_email: Mapped[bool | None]
    added_at: Mapped[int]


class StaffLoginRow(Base):
    """A kiosk login of a courier or staff member (`staff_login`: ok) or its lockout after
    wrong PINs (`staff_login_locked`: locked, with the failures and until when); one row per
    event (UNIQUE (locker, seq)), never a code or PIN."""

    __tablename__ = "staff_logins"
    __table_args__ = (
        UniqueConstraint("locker", "seq", name="uq_staff_logins_locker_seq"),
        Index("ix_staff_logins_locker_at", "locker", "at"),
    )

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    locker: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int]
    staff_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(16))
    #: ok (logged in) or locked (PIN entry refused after wrong PINs).
    outcome: Mapped[str] = mapped_column(String(8))
    failures: Mapped[int | None]
    locked_until: Mapped[int | None]
    at: Mapped[int]
