"""Revisions of the state database, oldest first (Alembic skips this file)."""
