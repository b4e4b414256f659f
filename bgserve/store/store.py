"""State on disk: releases, deployments and their append-only history (SQLAlchemy Core).

SQLite by default, any SQLAlchemy URL (PostgreSQL) in production. A deployment row
carries a version: a write whose version is not the stored one is a
:class:`~bgserve.errors.StaleWrite`, never a silent overwrite. A state change and
its history event are written in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bgserve.domain.release import Release, ResolvedRelease
from bgserve.domain.rollout import DeploymentState, Gate
from bgserve.errors import Conflict, NotFound, StaleWrite, Unavailable

metadata = MetaData()

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False, index=True),
    Column("model_name", String(256), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("prompt_name", String(256), nullable=False),
    Column("prompt_version", Integer, nullable=False),
    Column("bundle_name", String(256), nullable=False),
    Column("bundle_version", Integer, nullable=False),
    Column("model_ref", String(600), nullable=False),
    Column("prompt_ref", String(600), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("blue", Integer, ForeignKey("releases.id"), nullable=False),
    Column("green", Integer, ForeignKey("releases.id")),
    Column("green_weight", Integer, nullable=False, default=0),
    Column("standby", Integer, ForeignKey("releases.id")),
    Column("reverted", Boolean, nullable=False, default=False),
    Column("gate", JSON),
    Column("plan", JSON, nullable=False, default=list),
    Column("last_comparison", JSON),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(63), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("principal", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("weights_before", JSON),
    Column("weights_after", JSON),
    Column("details", JSON),
)


@dataclass(frozen=True)
class StoredDeployment:
    """A deployment's state plus what the store keeps beside it."""

    state: DeploymentState
    last_comparison: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    """One entry of a deployment's history: who did what, when, weights before and after."""

    id: int
    deployment: str
    at: datetime
    principal: str
    action: str
    reason: str
    weights_before: dict[str, int] | None
    weights_after: dict[str, int] | None
    details: dict[str, Any] | None


def weights_of(state: DeploymentState | None) -> dict[str, int] | None:
    """Weights per release id (as strings, for JSON) of a state, or None."""
    if state is None:
        return None
    return {str(r.release_id): r.weight for r in state.routes()}


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _enable_sqlite_wal(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise Unavailable(f"the state database failed: {exc.__class__.__name__}: {exc}") from exc


class Store:
    """Releases, deployments and history in one SQLAlchemy database."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            _enable_sqlite_wal(self.engine)
        try:
            metadata.create_all(self.engine)
        except OperationalError as exc:
            raise Unavailable(f"cannot open the state database {url!r}: {exc.orig}") from exc

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction; database failures become Unavailable (integrity errors pass)."""
        with _translated(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A read connection; database failures become Unavailable."""
        with _translated(), self.engine.connect() as conn:
            yield conn

    # releases

    def add_release(
        self, name: str, resolved: ResolvedRelease, model_ref: str, prompt_ref: str, now: datetime
    ) -> Release:
        """Store a new release and return it with its id."""
        values = {
            "name": name,
            "model_name": resolved.model_name,
            "model_version": resolved.model_version,
            "prompt_name": resolved.prompt_name,
            "prompt_version": resolved.prompt_version,
            "bundle_name": resolved.bundle_name,
            "bundle_version": resolved.bundle_version,
            "model_ref": model_ref,
            "prompt_ref": prompt_ref,
            "created_at": now,
        }
        with self._begin() as conn:
            new_id = conn.execute(insert(releases).values(**values)).inserted_primary_key
        assert new_id is not None
        return self.get_release(int(new_id[0]))

    def get_release(self, release_id: int) -> Release:
        """The release with this id. Raises NotFound."""
        with self._connect() as conn:
            row = conn.execute(select(releases).where(releases.c.id == release_id)).first()
        if row is None:
            raise NotFound(f"release {release_id} does not exist: list releases with GET /releases")
        return self._release(row._mapping)

    def list_releases(self) -> list[Release]:
        """All releases, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(select(releases).order_by(releases.c.id)).all()
        return [self._release(row._mapping) for row in rows]

    @staticmethod
    def _release(row: Any) -> Release:
        fields = dict(row)
        fields["created_at"] = _utc(fields["created_at"])
        return Release(**fields)

    # deployments

    def create_deployment(
        self, state: DeploymentState, now: datetime, principal: str, reason: str
    ) -> StoredDeployment:
        """Store a new deployment (version 1) and its creation event.

        Raises Conflict if a deployment of that name exists.
        """
        created = DeploymentState(name=state.name, blue=state.blue, version=1)
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(deployments).values(
                        **self._state_columns(created), created_at=now, updated_at=now
                    )
                )
                self._append(conn, state.name, now, principal, "create", reason, None, created)
        except IntegrityError as exc:
            raise Conflict(
                f"deployment {state.name!r} already exists: stage a new release on it with "
                f"POST /deployments/{state.name}/green, or choose another name"
            ) from exc
        return self.get_deployment(state.name)

    def get_deployment(self, name: str) -> StoredDeployment:
        """The deployment called ``name``. Raises NotFound."""
        with self._connect() as conn:
            row = conn.execute(select(deployments).where(deployments.c.name == name)).first()
        if row is None:
            raise NotFound(f"deployment {name!r} does not exist: create it with POST /deployments")
        return self._deployment(row._mapping)

    def list_deployments(self) -> list[StoredDeployment]:
        """All deployments, by name."""
        with self._connect() as conn:
            rows = conn.execute(select(deployments).order_by(deployments.c.name)).all()
        return [self._deployment(row._mapping) for row in rows]

    def save_deployment(
        self,
        before: DeploymentState,
        after: DeploymentState,
        *,
        now: datetime,
        principal: str,
        action: str,
        reason: str,
        details: dict[str, Any] | None = None,
        last_comparison: dict[str, Any] | None = None,
    ) -> StoredDeployment:
        """Write ``after`` if the stored version is still ``before.version``; log the event.

        Raises StaleWrite if someone else wrote in between (nothing is changed then).
        """
        values = self._state_columns(after) | {"version": before.version + 1, "updated_at": now}
        if last_comparison is not None:
            values["last_comparison"] = last_comparison
        with self._begin() as conn:
            result = conn.execute(
                update(deployments)
                .where(deployments.c.name == before.name)
                .where(deployments.c.version == before.version)
                .values(**values)
            )
            if result.rowcount != 1:
                raise StaleWrite(
                    f"deployment {before.name!r} was changed by another operation since it was "
                    "read: fetch it again and retry"
                )
            self._append(conn, before.name, now, principal, action, reason, before, after, details)
        return self.get_deployment(before.name)

    def append_event(
        self,
        state: DeploymentState,
        *,
        now: datetime,
        principal: str,
        action: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record an event that changes no stored state (a slot lost or restarted)."""
        with self._begin() as conn:
            self._append(conn, state.name, now, principal, action, reason, state, state, details)

    def history(self, name: str) -> list[Event]:
        """The deployment's events, oldest first. Raises NotFound for an unknown deployment."""
        self.get_deployment(name)
        with self._connect() as conn:
            rows = conn.execute(
                select(events).where(events.c.deployment == name).order_by(events.c.id)
            ).all()
        return [Event(**(dict(r._mapping) | {"at": _utc(r.at)})) for r in rows]

    @staticmethod
    def _append(
        conn: Any,
        deployment: str,
        now: datetime,
        principal: str,
        action: str,
        reason: str,
        before: DeploymentState | None,
        after: DeploymentState,
        details: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            insert(events).values(
                deployment=deployment,
                at=now,
                principal=principal,
                action=action,
                reason=reason,
                weights_before=weights_of(before),
                weights_after=weights_of(after),
                details=details,
            )
        )

    @staticmethod
    def _state_columns(state: DeploymentState) -> dict[str, Any]:
        gate = state.gate
        return {
            "name": state.name,
            "blue": state.blue,
            "green": state.green,
            "green_weight": state.green_weight,
            "standby": state.standby,
            "reverted": state.reverted,
            "gate": None
            if gate is None
            else {
                "blue": gate.blue,
                "green": gate.green,
                "passed": gate.passed,
                "reasons": list(gate.reasons),
            },
            "plan": list(state.plan),
            "version": state.version,
        }

    @staticmethod
    def _deployment(row: Any) -> StoredDeployment:
        gate = row["gate"]
        if isinstance(gate, str):  # some drivers hand JSON back as text
            gate = json.loads(gate)
        state = DeploymentState(
            name=row["name"],
            blue=row["blue"],
            green=row["green"],
            green_weight=row["green_weight"],
            standby=row["standby"],
            reverted=bool(row["reverted"]),
            gate=None
            if gate is None
            else Gate(gate["blue"], gate["green"], gate["passed"], tuple(gate["reasons"])),
            plan=tuple(row["plan"] or ()),
            version=row["version"],
        )
        return StoredDeployment(
            state=state,
            last_comparison=row["last_comparison"],
            created_at=_utc(row["created_at"]),
            updated_at=_utc(row["updated_at"]),
        )
