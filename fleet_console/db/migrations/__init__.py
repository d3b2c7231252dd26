"""Alembic's migration environment of the console database (see fleet_console/db/migrate.py)."""
