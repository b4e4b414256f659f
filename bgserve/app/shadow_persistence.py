"""A deployment's shadow as a replica holds it, and how it is kept in the state store.

The store (:class:`ShadowStore`) keeps each deployment's shadow configuration (percent,
pair limit, assertions), whose every change is a new revision, and its report so far
(with its thresholds). :func:`load_shadow` reads one back; a stored shadow that cannot be
read is ignored, with a warning. :func:`save_shadow` writes the configuration and/or the
report; a failed write is logged and the next save tries again, unless the caller wants
the error. When each is called is :class:`~bgserve.app.shadow.ShadowCollector`'s to say.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bgserve.domain.shadow_aggregate import ShadowAggregate
from bgserve.errors import BgserveError
from bgserve.evaluation.assertions import Assertion
from bgserve.store import StoredShadow

__all__ = ["DeploymentShadow", "ShadowStore", "load_shadow", "save_shadow"]

log = logging.getLogger("bgserve.shadow")


class ShadowStore(Protocol):
    """Where each deployment's shadow state is kept (the state store)."""

    def save_shadow(
        self,
        name: str,
        now: datetime,
        *,
        config: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
    ) -> int:
        """Store ``config`` (a new revision) and/or ``report``; the revision stored.
        Raises NotFound for an unknown deployment, BgserveError on a store failure."""
        ...

    def get_shadow(self, name: str) -> StoredShadow | None:
        """The stored shadow of ``name``, None when there is none."""
        ...

    def shadow_revisions(self) -> dict[str, int]:
        """Every stored shadow's configuration revision, by deployment."""
        ...

    def delete_shadow(self, name: str) -> None:
        """Forget the shadow of ``name``. Idempotent."""
        ...


@dataclass
class DeploymentShadow:
    """One deployment's shadow as a replica holds it: its configuration, its report so
    far, and how much of them the store has (the configuration's ``revision``, when the
    report was ``saved``, whether it changed since: ``dirty``)."""

    percent: int
    max_pairs: int | None
    aggregate: ShadowAggregate
    assertions: tuple[Assertion, ...] = ()
    revision: int = 0
    saved: float = 0.0
    dirty: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def config(self) -> dict[str, Any]:
        """The configuration as it is stored."""
        return {
            "percent": self.percent,
            "max_pairs": self.max_pairs,
            "assertions": [a.model_dump(mode="json") for a in self.assertions],
        }


def load_shadow(store: ShadowStore | None, name: str) -> DeploymentShadow | None:
    """The stored shadow of ``name``; None when none is stored or it cannot be read."""
    if store is None:
        return None
    stored = store.get_shadow(name)
    if stored is None:
        return None
    config, report, revision = stored
    if report is None:
        return None
    try:
        aggregate = ShadowAggregate.from_state(report)
        assertions = tuple(Assertion.model_validate(a) for a in config["assertions"])
        return DeploymentShadow(
            int(config["percent"]),
            None if config["max_pairs"] is None else int(config["max_pairs"]),
            aggregate,
            assertions,
            revision,
            saved=time.monotonic(),
        )
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("the stored shadow state of %s cannot be read (%s): ignored", name, exc)
        return None


def save_shadow(
    store: ShadowStore | None,
    name: str,
    shadow: DeploymentShadow,
    *,
    config: bool,
    report: bool = True,
    quiet: bool = True,
) -> None:
    """Store the shadow's configuration (a new revision) and/or its report. Raises
    BgserveError unless ``quiet`` (then logged: the next save tries again)."""
    if store is None:
        return
    try:
        state = shadow.aggregate.to_state() if report else None
        revision = store.save_shadow(
            name,
            datetime.now(UTC),
            config=shadow.config() if config else None,
            report=state,
        )
    except BgserveError as exc:
        if not quiet:
            raise
        log.warning("could not store the shadow state of %s: %s", name, exc.message)
        return
    if config:
        shadow.revision = revision
    if report:
        shadow.saved, shadow.dirty = time.monotonic(), False
