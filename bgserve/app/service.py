"""Releases and deployments: every operation the API and the CLI offer.

Each change is a pure transition of :mod:`bgserve.domain.rollout` (or
:mod:`bgserve.domain.slots`) handed to the :class:`~bgserve.app.executor.Executor`,
which sequences the side effects. The service itself only reads and chooses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from bgserve.app.executor import Executor
from bgserve.app.ports import Registry
from bgserve.backends.base import Backend, SlotInfo
from bgserve.domain import rollout, slots
from bgserve.domain.release import Release, validate_name
from bgserve.errors import Conflict, IllegalTransition
from bgserve.store import Event, Store, StoredDeployment

log = logging.getLogger("bgserve.service")


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Service:
    """Releases and deployments: registration, reads, and the changes through the executor."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        backend: Backend,
        executor: Executor,
        *,
        promote_steps: list[int],
        step_pause_seconds: float,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.registry = registry
        self.backend = backend
        self.executor = executor
        self.promote_steps = promote_steps
        self.step_pause_seconds = step_pause_seconds
        self.clock = clock
        self.sleep = sleep
        self._running_plans: set[str] = set()
        self._plans_guard = threading.Lock()

    # releases

    def register_release(
        self, name: str, model_uri: str, prompt_uri: str, principal: str
    ) -> Release:
        """Resolve ``model_uri`` and ``prompt_uri``, build the bundle and store the release.

        The registry validates the name and both URIs before it touches anything.
        """
        resolved = self.registry.register_release(name, model_uri, prompt_uri)
        release = self.store.add_release(name, resolved, model_uri, prompt_uri, self.clock())
        log.info("release %s registered by %s: %s", release.id, principal, release.bundle_uri)
        return release

    def get_release(self, release_id: int) -> Release:
        """One release. Raises NotFound."""
        return self.store.get_release(release_id)

    def list_releases(self) -> list[Release]:
        """All releases, oldest first."""
        return self.store.list_releases()

    # deployments: reads

    def get_deployment(self, name: str) -> StoredDeployment:
        """The stored deployment. Raises NotFound."""
        return self.store.get_deployment(name)

    def list_deployments(self) -> list[StoredDeployment]:
        """All deployments."""
        return self.store.list_deployments()

    def slot_info(self, name: str, release_id: int) -> SlotInfo | None:
        """Endpoint and readiness of one slot, as the backend reports it."""
        return self.backend.slot_info(name, release_id)

    def data_plane_url(self, name: str) -> str | None:
        """The weighted entry point clients call for ``name``, if the backend has one."""
        return self.backend.data_plane_url(name)

    def history(self, name: str) -> list[Event]:
        """The deployment's audit events, oldest first."""
        return self.store.history(name)

    # deployments: changes

    def create_deployment(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as blue at weight 100 of a new deployment ``name``."""
        validate_name(name, "name")
        release = self.store.get_release(release_id)
        return self.executor.create(rollout.create(name, release.id), principal)

    def stage_green(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as green at weight 0."""
        self.store.get_release(release_id)
        return self.executor.run(name, principal, lambda s: rollout.stage_green(s, release_id))

    def shift(
        self, name: str, weight: int, principal: str, force: bool = False
    ) -> StoredDeployment:
        """Move green to ``weight`` percent in one step (100 cuts over)."""
        return self.executor.run(name, principal, lambda s: rollout.shift(s, weight, force=force))

    def revert(self, name: str, principal: str) -> StoredDeployment:
        """All traffic back to the last good release. Idempotent."""
        return self.executor.run(name, principal, rollout.revert)

    def retire_standby(self, name: str, principal: str) -> StoredDeployment:
        """Stop the standby slot early; revert to it is no longer possible afterwards."""
        return self.executor.run(name, principal, slots.retire_standby)

    def promote_plan(
        self,
        name: str,
        principal: str,
        force: bool = False,
        on_step: Callable[[StoredDeployment], None] | None = None,
    ) -> StoredDeployment:
        """Walk green through the configured steps to 100, pausing between steps.

        A plan left behind by an interrupted bgserve is resumed. A revert during the
        pauses stops the plan: the call then raises Conflict naming where it stopped.
        """
        with self._plan_running(name):
            stored = self.store.get_deployment(name)
            if not stored.state.plan:
                steps = list(self.promote_steps)
                stored = self.executor.run(
                    name, principal, lambda s: rollout.start_plan(s, steps, force=force)
                )
            return self._run_plan(name, principal, stored, on_step)

    def _run_plan(
        self,
        name: str,
        principal: str,
        stored: StoredDeployment,
        on_step: Callable[[StoredDeployment], None] | None,
    ) -> StoredDeployment:
        while stored.state.plan:
            stored = self.executor.run(name, principal, rollout.next_plan_step)
            if on_step:
                on_step(stored)
            if not stored.state.plan:
                break
            self.sleep(self.step_pause_seconds)
            stored = self.store.get_deployment(name)
        if stored.state.green is not None:
            raise Conflict(
                f"the promotion of {name} was interrupted (revert): green release "
                f"{stored.state.green} is at {stored.state.green_weight}%",
            )
        return stored

    def plan_running(self, name: str) -> bool:
        """Whether this process is walking a promotion plan of ``name`` now."""
        with self._plans_guard:
            return name in self._running_plans

    @contextmanager
    def _plan_running(self, name: str) -> Iterator[None]:
        with self._plans_guard:
            if name in self._running_plans:
                raise IllegalTransition(
                    f"a promotion of {name} is already under way: wait for it, or revert",
                    hint="wait",
                )
            self._running_plans.add(name)
        try:
            yield
        finally:
            with self._plans_guard:
                self._running_plans.discard(name)
