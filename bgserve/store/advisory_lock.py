"""PostgreSQL advisory locks: leader election without Kubernetes, and one operation at a
time on a deployment across replicas.

A lock belongs to one open connection (or its transaction): PostgreSQL frees it the moment
the connection ends, a killed process included (its socket closes). Renewing the leader lock
is checking the connection still answers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from bgserve.errors import Conflict, Unavailable
from bgserve.store.database import parse_state_url

log = logging.getLogger("bgserve.leader")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are keyed by bigint)."""
    digest = hashlib.sha256(f"bgserve:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLease:
    """A named advisory lock; see :class:`bgserve.app.leadership.Lease`."""

    def __init__(self, url: str, name: str, identity: str) -> None:
        self.identity = identity
        self._engine = create_engine(
            parse_state_url(url),
            poolclass=NullPool,
            connect_args={"application_name": identity[:63]},
        )
        self._key = lock_key(name)
        self._connection: Connection | None = None

    def try_acquire_or_renew(self) -> bool:
        """Raises Unavailable when the database cannot be reached."""
        try:
            if self._connection is not None:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()  # never idle in a transaction while holding it
                return True
            return self._acquire()
        except SQLAlchemyError as exc:
            self._drop()
            raise Unavailable(
                "the state database cannot be reached for the leader lock",
                details={"cause": str(exc).splitlines()[0]},
            ) from exc

    def holder(self) -> str | None:
        """The identity (connection application name) of the session holding the lock."""
        if self._connection is not None:
            return self.identity
        try:
            with self._engine.connect() as connection:
                return connection.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l"
                        " JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.classid::bigint = :high AND l.objid::bigint = :low"
                        " AND l.objsubid = 1"
                    ),
                    {"high": (self._key >> 32) & 0xFFFFFFFF, "low": self._key & 0xFFFFFFFF},
                ).scalar_one_or_none()
        except SQLAlchemyError:
            return None

    def release(self) -> None:
        """Close the connection, which frees the lock. Idempotent; never raises."""
        self._drop()
        self._engine.dispose()

    def _acquire(self) -> bool:
        connection = self._engine.connect()
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            ).scalar_one()
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close()
        except SQLAlchemyError as exc:
            log.debug("closing the leader lock's connection: %s", exc)


@contextmanager
def deployment_lock(engine: Engine, name: str, timeout: float) -> Iterator[None]:
    """Hold deployment ``name`` against every other process on this PostgreSQL database.

    A transaction-level advisory lock: freed when the block ends, or when the holder's
    connection does (a killed replica). Another database has one process only and needs
    none. Raises Conflict after ``timeout`` seconds, Unavailable when the database fails.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:
        raise Unavailable(f"cannot lock {name!r} in the state database: {exc}") from exc
    with connection, connection.begin():
        _take(connection, name, timeout)
        yield


def _take(connection: Connection, name: str, timeout: float) -> None:
    wait = f"{max(1, round(timeout * 1000))}ms"
    try:
        connection.execute(text("SELECT set_config('lock_timeout', :wait, true)"), {"wait": wait})
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(f"deployment:{name}")}
        )
    except OperationalError as exc:
        if "lock timeout" in str(exc.orig):
            raise Conflict(
                f"another operation on {name!r} (on another replica) has held it for over "
                f"{timeout:g}s: retry later",
                hint="retry",
            ) from exc
        raise Unavailable(f"cannot lock {name!r} in the state database: {exc.orig}") from exc
