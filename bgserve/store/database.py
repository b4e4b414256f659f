"""Opening the state database: engine settings per dialect, schema upgrade, and the
translation of SQLAlchemy's errors into bgserve's where they enter."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from bgserve.errors import BgserveError, InvalidInput, Unavailable
from bgserve.store import migrate


def open_engine(url: str) -> Engine:
    """An engine on ``url`` (SQLite in WAL mode with foreign keys on). Raises InvalidInput."""
    parsed = parse_state_url(url)
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        _make_parent_dir(parsed)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise InvalidInput(
            f"the state URL names a database driver that is not installed ({exc}): for "
            "PostgreSQL install bgserve with its postgres extra and use postgresql+psycopg://",
            field="state_url",
        ) from exc
    if sqlite:
        _enable_sqlite_wal(engine)
    return engine


def upgrade_database(engine: Engine, attempts: int = 8) -> tuple[str, str]:
    """Migrate to head; return the revisions before and after. Raises Unavailable.

    SQLite answers "database is locked" at once, without waiting, when two first starts
    switch a new file to WAL mode together; that start is retried after a short pause.
    """
    for attempt in range(1, attempts):
        try:
            return _upgrade(engine)
        except Unavailable as exc:
            if not (engine.dialect.name == "sqlite" and "database is locked" in exc.message):
                raise
            time.sleep(0.05 * 2**attempt)
    return _upgrade(engine)


def _upgrade(engine: Engine) -> tuple[str, str]:
    try:
        before = migrate.upgrade(engine)
    except SQLAlchemyError as exc:
        raise unavailable(exc, f"cannot open the state database {shown(engine.url)}") from exc
    return before, migrate.head_revision()


def database_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None: empty or pre-migration)."""
    try:
        return migrate.current_revision(engine)
    except SQLAlchemyError as exc:
        raise unavailable(exc, f"cannot open the state database {shown(engine.url)}") from exc


def shown(url: URL) -> str:
    """The URL as it may appear in a message: without its password."""
    return url.render_as_string(hide_password=True)


def unavailable(exc: SQLAlchemyError, what: str = "the state database failed") -> Unavailable:
    """Unavailable for a database failure, with the driver's own first line."""
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return Unavailable(f"{what}: {cause}", hint="retry")


Refusal = Callable[[IntegrityError], BgserveError]
"""What a refused write (a constraint the database enforces) means to a caller."""


def driver_says(exc: SQLAlchemyError) -> str:
    """The database driver's own message, without SQLAlchemy's wrapping."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


@contextmanager
def transaction(engine: Engine, refused: Refusal) -> Iterator[Connection]:
    """A transaction whose failures leave as bgserve errors: a refused write as
    ``refused`` says, a value the database cannot hold as InvalidInput, any other
    failure as Unavailable."""
    try:
        with engine.begin() as conn:
            yield conn
    except IntegrityError as exc:
        raise refused(exc) from exc
    except DataError as exc:
        raise InvalidInput(
            f"the state database refused a value as too long or malformed: {driver_says(exc)}"
        ) from exc
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read connection; database failures become Unavailable."""
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc


def parse_state_url(url: str) -> URL:
    """``url`` as a SQLAlchemy URL; the plain ``postgresql://`` (or ``postgres://``) that
    PostgreSQL operators publish in their Secrets means psycopg 3. Raises InvalidInput."""
    parsed = _parse(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (any driver)."""
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(
            f"the state URL {url!r} is not a SQLAlchemy URL: use sqlite:///path/state.db "
            "or postgresql+psycopg://user@host/db",
            field="state_url",
        ) from exc


def _make_parent_dir(url: URL) -> None:
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        return
    parent = Path(url.database).expanduser().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Unavailable(
            f"cannot create the directory {str(parent)!r} of the state database: {exc.strerror}"
        ) from exc


def _enable_sqlite_wal(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
