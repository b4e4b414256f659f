"""Follow rules and accepted webhook deliveries in the state database (SQLAlchemy Core).

A rule row holds the rule and its progress as JSON, its last trigger, and two counters:
``pending_seq`` (bumped by every trigger) and ``handled_seq`` (the trigger a handling
settled). A trigger and the handling run in different processes (any replica receives a
webhook, the leader handles), so neither overwrites the other's fields. SQLAlchemy's
errors end here: every one leaves as a :class:`~bgserve.errors.BgserveError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bgserve.errors import BgserveError, Conflict, NotFound
from bgserve.store.database import Refusal, reading, transaction
from bgserve.store.records import utc
from bgserve.store.tables import follow_rules, webhook_deliveries

Json = dict[str, Any]


class StoredRule(NamedTuple):
    """One deployment's follow rule as stored."""

    deployment: str
    rule: Json
    progress: Json
    trigger: Json | None
    pending_seq: int
    handled_seq: int
    updated_at: datetime


def _stored(row: Any) -> StoredRule:
    return StoredRule(
        str(row.deployment),
        dict(row.rule),
        dict(row.progress or {}),
        None if row.trigger is None else dict(row.trigger),
        int(row.pending_seq),
        int(row.handled_seq),
        utc(row.updated_at),
    )


class FollowStore:
    """Follow rules and the replay record of webhook deliveries, on the state database's
    engine (the :class:`~bgserve.store.Store` opened and migrated it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _begin(self, refused: Refusal) -> AbstractContextManager[Connection]:
        return transaction(self.engine, refused)

    def _connect(self) -> AbstractContextManager[Connection]:
        return reading(self.engine)

    # rules

    def put_rule(self, deployment: str, rule: Json, trigger: Json, now: datetime) -> StoredRule:
        """Store ``rule`` for ``deployment`` (replacing its rule, keeping its progress) as
        due, with ``trigger``. Raises NotFound for an unknown deployment."""

        def refused(exc: IntegrityError) -> BgserveError:
            return NotFound(f"deployment {deployment!r} does not exist")

        with self._begin(refused) as conn:
            found = conn.execute(
                select(follow_rules.c.pending_seq).where(follow_rules.c.deployment == deployment)
            ).first()
            if found is None:
                conn.execute(
                    insert(follow_rules).values(
                        deployment=deployment,
                        rule=rule,
                        progress={},
                        trigger=trigger,
                        pending_seq=1,
                        handled_seq=0,
                        updated_at=now,
                    )
                )
            else:
                conn.execute(
                    update(follow_rules)
                    .where(follow_rules.c.deployment == deployment)
                    .values(
                        rule=rule,
                        trigger=trigger,
                        pending_seq=follow_rules.c.pending_seq + 1,
                        updated_at=now,
                    )
                )
        stored = self.get_rule(deployment)
        assert stored is not None
        return stored

    def get_rule(self, deployment: str) -> StoredRule | None:
        """The rule of ``deployment``, None when it follows nothing."""
        with self._connect() as conn:
            row = conn.execute(
                select(follow_rules).where(follow_rules.c.deployment == deployment)
            ).first()
        return None if row is None else _stored(row)

    def list_rules(self) -> list[StoredRule]:
        """Every rule, by deployment name."""
        with self._connect() as conn:
            rows = conn.execute(select(follow_rules).order_by(follow_rules.c.deployment)).all()
        return [_stored(row) for row in rows]

    def delete_rule(self, deployment: str) -> bool:
        """Forget the rule of ``deployment``; whether there was one. Idempotent."""
        with self._begin(self._conflict) as conn:
            result = conn.execute(
                delete(follow_rules).where(follow_rules.c.deployment == deployment)
            )
        return bool(result.rowcount)

    def trigger(self, deployment: str, trigger: Json, now: datetime) -> None:
        """Mark the rule of ``deployment`` due with ``trigger``; nothing if it has none."""
        with self._begin(self._conflict) as conn:
            self._bump(conn, [deployment], trigger, now)

    def save_progress(
        self, deployment: str, progress: Json, handled_seq: int, now: datetime
    ) -> None:
        """Store what the handling did, settling the triggers up to ``handled_seq`` (never
        moving it back); nothing if the rule was deleted meanwhile."""
        with self._begin(self._conflict) as conn:
            row = conn.execute(
                select(follow_rules.c.handled_seq).where(follow_rules.c.deployment == deployment)
            ).first()
            if row is None:
                return
            conn.execute(
                update(follow_rules)
                .where(follow_rules.c.deployment == deployment)
                .values(
                    progress=progress,
                    handled_seq=max(int(row.handled_seq), handled_seq),
                    updated_at=now,
                )
            )

    # webhook deliveries

    def receive(
        self,
        delivery_id: str,
        now: datetime,
        forget_before: datetime,
        triggers: Callable[[list[StoredRule]], Mapping[str, Json]],
    ) -> list[str]:
        """Record delivery ``delivery_id`` and mark the rules it concerns due, in one
        transaction; the deployments marked. ``triggers`` picks the rules from every
        stored one and gives each its trigger. Deliveries received before
        ``forget_before`` are forgotten first (their timestamps no longer pass).

        Raises Conflict when ``delivery_id`` was accepted already (a replay): nothing is
        changed then.
        """

        def refused(exc: IntegrityError) -> BgserveError:
            return Conflict(
                f"webhook delivery {delivery_id!r} was accepted already: a replay is refused"
            )

        with self._begin(refused) as conn:
            conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.received_at < forget_before)
            )
            conn.execute(
                insert(webhook_deliveries).values(delivery_id=delivery_id, received_at=now)
            )
            rows = conn.execute(select(follow_rules).order_by(follow_rules.c.deployment)).all()
            chosen = triggers([_stored(row) for row in rows])
            for deployment, trigger in chosen.items():
                self._bump(conn, [deployment], trigger, now)
        return sorted(chosen)

    def deliveries(self) -> int:
        """How many deliveries the replay record holds now."""
        with self._connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one()
            )

    @staticmethod
    def _bump(conn: Connection, deployments: list[str], trigger: Json, now: datetime) -> None:
        conn.execute(
            update(follow_rules)
            .where(follow_rules.c.deployment.in_(deployments))
            .values(trigger=trigger, pending_seq=follow_rules.c.pending_seq + 1, updated_at=now)
        )

    @staticmethod
    def _conflict(exc: IntegrityError) -> BgserveError:
        return Conflict(f"the state database refused the follow rule's write: {exc.orig}")
