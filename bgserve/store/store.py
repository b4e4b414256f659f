"""State on disk: releases, deployments and their append-only history (SQLAlchemy Core).

SQLite by default, any SQLAlchemy URL (PostgreSQL) in production; the schema is
brought to head by the migrations when the store opens. A deployment row carries a
version: a write whose version is not the stored one is a
:class:`~bgserve.errors.StaleWrite`, never a silent overwrite. A state change and
its history event are written in one transaction. SQLAlchemy's errors end here:
every one leaves as a :class:`~bgserve.errors.BgserveError`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bgserve.domain.release import Release, ResolvedRelease
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BgserveError, Conflict, NotFound, StaleWrite
from bgserve.store.advisory_lock import deployment_lock
from bgserve.store.database import (
    Refusal,
    driver_says,
    open_engine,
    reading,
    transaction,
    upgrade_database,
)
from bgserve.store.records import (
    Event,
    StoredDeployment,
    deployment_from_row,
    event_from_row,
    release_from_row,
    state_columns,
    weights_of,
)
from bgserve.store.tables import deployments, events, releases, shadows


class StoredShadow(NamedTuple):
    """One deployment's stored shadow traffic: its configuration, which ``revision``
    counts the changes of, and the report so far (None before one was saved)."""

    config: dict[str, Any]
    report: dict[str, Any] | None
    revision: int


class Store:
    """Releases, deployments, history and shadow traffic in one SQLAlchemy database.

    Opening a store migrates its database to the newest schema. Raises InvalidInput
    for a malformed URL and Unavailable when the database cannot be reached.
    """

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        try:
            upgrade_database(self.engine)
        except BgserveError:
            self.engine.dispose()
            raise

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def hold(self, name: str, timeout: float) -> AbstractContextManager[None]:
        """Hold deployment ``name`` against other processes on this database (replicas on
        one PostgreSQL); a no-op on SQLite, which one process uses. Raises Conflict after
        ``timeout`` seconds."""
        return deployment_lock(self.engine, name, timeout)

    def _begin(self, refused: Refusal | None = None) -> AbstractContextManager[Connection]:
        """A transaction; the database's refusals and failures become bgserve errors."""
        return transaction(self.engine, refused or self._refused)

    def _connect(self) -> AbstractContextManager[Connection]:
        """A read connection; database failures become Unavailable."""
        return reading(self.engine)

    @staticmethod
    def _refused(exc: IntegrityError) -> BgserveError:
        return Conflict(f"the state database refused the write: {driver_says(exc)}")

    # releases

    def add_release(
        self, name: str, resolved: ResolvedRelease, model_ref: str, prompt_ref: str, now: datetime
    ) -> Release:
        """Store a new release and return it with its id. Raises Conflict if refused."""
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

        def refused(exc: IntegrityError) -> BgserveError:
            return Conflict(
                f"release {name!r} was not stored: the state database refused it as a "
                f"duplicate or incomplete row ({driver_says(exc)})"
            )

        with self._begin(refused) as conn:
            new_id = conn.execute(insert(releases).values(**values)).inserted_primary_key
        assert new_id is not None
        return self.get_release(int(new_id[0]))

    def get_release(self, release_id: int) -> Release:
        """The release with this id. Raises NotFound."""
        with self._connect() as conn:
            row = conn.execute(select(releases).where(releases.c.id == release_id)).first()
        if row is None:
            raise NotFound(f"release {release_id} does not exist")
        return release_from_row(row._mapping)

    def list_releases(self) -> list[Release]:
        """All releases, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(select(releases).order_by(releases.c.id)).all()
        return [release_from_row(row._mapping) for row in rows]

    # deployments

    def create_deployment(
        self,
        state: DeploymentState,
        now: datetime,
        principal: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> StoredDeployment:
        """Store a new deployment (version 1) and its creation event (with ``details``).

        Raises Conflict if a deployment of that name exists, NotFound if its release does not.
        """
        created = DeploymentState(name=state.name, blue=state.blue, version=1)
        with self._begin(self._deployment_refused(created, creating=True)) as conn:
            conn.execute(
                insert(deployments).values(**state_columns(created), created_at=now, updated_at=now)
            )
            self._append(conn, state.name, now, principal, "create", reason, None, created, details)
        return self.get_deployment(state.name)

    def get_deployment(self, name: str) -> StoredDeployment:
        """The deployment called ``name``. Raises NotFound."""
        with self._connect() as conn:
            row = conn.execute(select(deployments).where(deployments.c.name == name)).first()
        if row is None:
            raise NotFound(f"deployment {name!r} does not exist")
        return deployment_from_row(row._mapping)

    def list_deployments(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[StoredDeployment]:
        """All deployments by name; or the first ``limit`` named after ``after``."""
        query = select(deployments).order_by(deployments.c.name).limit(limit)
        if after is not None:
            query = query.where(deployments.c.name > after)
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [deployment_from_row(row._mapping) for row in rows]

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

        Raises StaleWrite if someone else wrote in between (nothing is changed then), and
        NotFound if ``after`` names a release that does not exist.
        """
        values = state_columns(after) | {"version": before.version + 1, "updated_at": now}
        if last_comparison is not None:
            values["last_comparison"] = last_comparison
        with self._begin(self._deployment_refused(after, creating=False)) as conn:
            result = conn.execute(
                update(deployments)
                .where(deployments.c.name == before.name)
                .where(deployments.c.version == before.version)
                .values(**values)
            )
            if result.rowcount != 1:
                raise StaleWrite(
                    f"deployment {before.name!r} was changed by another operation since it was "
                    "read: read it again and retry",
                    hint="retry",
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

    def history(
        self, name: str, *, after_id: int | None = None, limit: int | None = None
    ) -> list[Event]:
        """The deployment's events, oldest first; or the first ``limit`` of those with an id
        above ``after_id``. Raises NotFound for an unknown deployment."""
        self.get_deployment(name)
        query = select(events).where(events.c.deployment == name).order_by(events.c.id)
        if after_id is not None:
            query = query.where(events.c.id > after_id)
        with self._connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [event_from_row(r._mapping) for r in rows]

    # shadow traffic

    def save_shadow(
        self,
        name: str,
        now: datetime,
        *,
        config: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
    ) -> int:
        """Store the deployment's shadow ``config`` (a new revision) and/or ``report``,
        keeping the stored one of whichever is None; return the revision now stored.
        Raises NotFound for a deployment that does not exist (or, with no config given,
        has none stored yet)."""
        values: dict[str, Any] = {"updated_at": now}
        if report is not None:
            values["report"] = report
        with self._begin(self._shadow_refused(name)) as conn:
            row = conn.execute(
                select(shadows.c.revision).where(shadows.c.deployment == name)
            ).first()
            if row is None:
                if config is None:
                    raise NotFound(f"deployment {name!r} has no stored shadow traffic")
                conn.execute(
                    insert(shadows).values(deployment=name, config=config, revision=1, **values)
                )
                return 1
            revision = int(row.revision) + (config is not None)
            if config is not None:
                values |= {"config": config, "revision": revision}
            conn.execute(update(shadows).where(shadows.c.deployment == name).values(**values))
        return revision

    def get_shadow(self, name: str) -> StoredShadow | None:
        """The deployment's stored shadow traffic, None when there is none."""
        with self._connect() as conn:
            row = conn.execute(select(shadows).where(shadows.c.deployment == name)).first()
        if row is None:
            return None
        return StoredShadow(dict(row.config), row.report, int(row.revision))

    def shadow_revisions(self) -> dict[str, int]:
        """Every deployment with stored shadow traffic and its configuration's revision."""
        with self._connect() as conn:
            rows = conn.execute(select(shadows.c.deployment, shadows.c.revision)).all()
        return {str(row.deployment): int(row.revision) for row in rows}

    def delete_shadow(self, name: str) -> None:
        """Forget the deployment's shadow traffic. Idempotent."""
        with self._begin() as conn:
            conn.execute(delete(shadows).where(shadows.c.deployment == name))

    def _shadow_refused(self, name: str) -> Refusal:
        def refused(exc: IntegrityError) -> BgserveError:
            try:
                self.get_deployment(name)
            except NotFound as missing:
                return missing
            return Conflict(
                f"the shadow traffic of {name!r} was changed by another replica at the same "
                "time: retry",
                hint="retry",
            )

        return refused

    def _deployment_refused(self, state: DeploymentState, *, creating: bool) -> Refusal:
        """Why the database refused to write ``state``, found by reading it afterwards."""

        def refused(exc: IntegrityError) -> BgserveError:
            for release_id in (state.blue, state.green, state.standby):
                if release_id is not None and not self._release_exists(release_id):
                    return NotFound(
                        f"release {release_id} does not exist: deployment {state.name!r} "
                        "cannot route to it",
                        details={"release_id": release_id},
                    )
            if creating:
                return Conflict(
                    f"deployment {state.name!r} already exists: stage a new release on it, "
                    "or choose another name",
                    hint="other-name",
                )
            return Conflict(
                f"the state database refused the change to deployment {state.name!r}: "
                f"{driver_says(exc)}"
            )

        return refused

    def _release_exists(self, release_id: int) -> bool:
        with self._connect() as conn:
            found = conn.execute(select(releases.c.id).where(releases.c.id == release_id))
            return found.first() is not None

    @staticmethod
    def _append(
        conn: Connection,
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
