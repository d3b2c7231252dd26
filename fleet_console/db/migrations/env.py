"""Alembic's environment: migrations run on the connection fleet_console/db/migrate.py hands
over, inside its transaction and lock. A developer's `alembic -x url=URL ...` (in the repository:
pyproject.toml's [tool.alembic]) connects to URL instead, to autogenerate a new revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from fleet_console.db.models import Base


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


_given = context.config.attributes.get("connection")
if _given is not None:
    _run(_given)
else:
    _url = context.get_x_argument(as_dictionary=True).get("url")
    if not _url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path/console.db ...")
    _engine = create_engine(_url)
    try:
        with _engine.connect() as _conn:
            _run(_conn)
    finally:
        _engine.dispose()
