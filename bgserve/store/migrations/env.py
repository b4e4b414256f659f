"""Alembic environment: runs on the connection :mod:`bgserve.store.migrate` hands over.

There is no ``alembic.ini`` and no offline (SQL script) mode: bgserve migrates the
database it is about to use, inside the transaction that holds the migration lock.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from bgserve.store.migrate import VERSION_TABLE
from bgserve.store.tables import metadata


def run_migrations() -> None:
    """Run the pending revisions on the caller's connection and transaction."""
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "bgserve migrations run through bgserve.store.migrate, not alembic's CLI"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
