"""Bring the state database's schema to the one this bgserve reads (Alembic, run in code).

Every start runs :func:`upgrade`: a fresh database gets the whole schema, a database
at an older revision gets the missing revisions, one at head is left alone. A
database made by a bgserve from before the migrations (tables, no version table)
is recognised and stamped at the baseline first, so it upgrades in place.

The upgrade runs in one transaction that also serialises concurrent starts:
``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL.

To write a revision after changing :mod:`bgserve.store.tables`::

    from alembic import command
    from sqlalchemy import create_engine
    from bgserve.store.migrate import alembic_config

    with create_engine("sqlite:///at-head.db").begin() as conn:
        command.revision(alembic_config(conn), "what changed", autogenerate=True)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from bgserve.errors import Unavailable

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
VERSION_TABLE = "bgserve_alembic_version"
"""Not Alembic's default name, so that MLflow's own ``alembic_version`` can share the database."""
BASELINE = "0001"
"""The revision whose schema is the one ``metadata.create_all`` made before migrations."""
TABLES = frozenset({"releases", "deployments", "events"})
_ADVISORY_LOCK_KEY = 0x62677365  # "bgse": one key for every bgserve on the database


def alembic_config(connection: Connection) -> Config:
    """An Alembic config for the packaged migrations, running on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this bgserve knows."""
    head = ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or pre-migration database."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine) -> str:
    """Migrate the database to head and return the revision it was at (or ``"none"``).

    Raises Unavailable when the database holds a revision this bgserve does not know
    (written by a newer bgserve) or tables that bgserve did not create.
    """
    with _locked(engine) as conn:
        before = _stamp_pre_migration(conn)
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:
            raise Unavailable(
                f"the state database is at a schema revision this bgserve does not know ({exc}): "
                "it was upgraded by a newer bgserve; run that version or restore a backup"
            ) from exc
    return before or "none"


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction on ``engine``, held by no other bgserve upgrading the same database."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite opens no transaction before DDL: open one ourselves, taking the
            # write lock now so two starts cannot interleave their CREATE TABLEs.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        yield conn
        conn.commit()


def _stamp_pre_migration(conn: Connection) -> str | None:
    """Stamp a database made before migrations at the baseline; return its revision."""
    existing = set(inspect(conn).get_table_names())
    if VERSION_TABLE in existing:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
    ours = existing & TABLES
    if not ours:
        return None
    if ours != TABLES:
        raise Unavailable(
            f"the state database has the tables {sorted(ours)} but not {sorted(TABLES - ours)} "
            "and no schema version: it was not made by bgserve; point the state URL at an "
            "empty database or at bgserve's own"
        )
    command.stamp(alembic_config(conn), BASELINE)
    return "pre-migration"
