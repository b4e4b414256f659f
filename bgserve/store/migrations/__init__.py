"""Alembic migrations of the state database (run by :mod:`bgserve.store.migrate`)."""
