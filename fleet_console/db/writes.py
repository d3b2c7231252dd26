"""The console's writes that need more than `session.add`: dialect upserts and the command audit
trail (issued, then results that never go back from final to `accepted`, secrets redacted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, case, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fleet_console.db.models import Base, CommandRow

#: Final command statuses: a late `accepted` never overwrites one of these.
FINAL_STATUSES = ("done", "failed", "rejected")

#: Result data fields that are secrets (the PIN of a `reveal-pin`, the return code of a
#: `create-return`): the audit trail keeps that the act happened, who asked and why, never the
#: secret itself.
SECRET_RESULT_FIELDS = ("pin", "return_code")
REDACTED = "redacted"


def insert_for(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) into `model`'s table.

    A Core statement on the table, not the ORM entity: executed with a list of rows, the ORM's
    bulk insert builds a parameter set per row in Python (a third of the ingest's database
    time per event); Core hands the rows to the driver's executemany as they are. The rows are
    dicts keyed by column name (the models' attribute names are their column names).
    """
    name = session.get_bind().dialect.name
    table = cast(Table, model.__table__)
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
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
