"""The console database, SQLite by default, PostgreSQL too.

models.py: the tables; engine.py: connecting (`open_database`); migrate.py and migrations/: the
Alembic revisions that bring any database to the models; writes.py: the upserts and the command
audit trail; queries.py: what the operator's commands read.
"""
