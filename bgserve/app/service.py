"""The one place that sequences side effects: domain + store + registry + backend.

Every change to a deployment follows the same path (:meth:`Service.apply`): under the
deployment's lock, read the stored state, let the pure state machine decide, perform
the actions that must succeed before the change is true (start slots, move weights),
persist the new state with its history event, then perform the follow-ups that must
not undo it (retire slots, move registry aliases). A failure before persisting leaves
traffic where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from bgserve.app.recovery import Recovery
from bgserve.backends.base import Backend, SlotInfo, SlotWatcher
from bgserve.domain import rollout, slots
from bgserve.domain.release import Release, ResolvedRelease, validate_name
from bgserve.domain.rollout import (
    DeploymentState,
    EnsureSlot,
    MoveAliases,
    RetireSlot,
    SetRoutes,
    Transition,
)
from bgserve.errors import (
    BgserveError,
    Conflict,
    IllegalTransition,
    NotFound,
    StaleWrite,
)
from bgserve.settings import Settings
from bgserve.store import Event, Store, StoredDeployment

log = logging.getLogger("bgserve.app.service")


class Registry(Protocol):
    """What the service needs from the model and prompt registry."""

    def register_release(self, name: str, model_uri: str, prompt_uri: str) -> ResolvedRelease:
        """Validate the name and URIs, resolve both to fixed versions, register the bundle.

        Raises InvalidInput (naming the field), NotFound, RegistryUnavailable.
        """
        ...

    def move_aliases(self, deployment: str, live: Release, previous: Release | None) -> None:
        """Point ``<deployment>-live`` / ``-previous`` at these releases' three parts."""
        ...

    def get_prompt_template(self, name: str, version: int) -> str:
        """The template text of one prompt version."""
        ...


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Service:
    """Releases and deployments: every operation the API and the CLI offer."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        backend: Backend,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.backend = backend
        self.clock = clock
        self.sleep = sleep
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._running_plans: set[str] = set()
        self.recovery = Recovery(self)
        if isinstance(backend, SlotWatcher):
            backend.watch_slots(self.recovery.slot_lost)

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

    def history(self, name: str) -> list[Event]:
        """The deployment's audit events, oldest first."""
        return self.store.history(name)

    # deployments: changes

    def create_deployment(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as blue at weight 100 of a new deployment ``name``."""
        validate_name(name, "name")
        release = self.store.get_release(release_id)
        with self.locked(name):
            self._refuse_existing(name)
            transition = rollout.create(name, release.id)
            self._perform_before_commit(name, transition)
            stored = self.store.create_deployment(
                transition.state, self.clock(), principal, transition.reason
            )
            self._follow_up(stored, transition, principal)
            return stored

    def _refuse_existing(self, name: str) -> None:
        try:
            self.store.get_deployment(name)
        except NotFound:
            return
        raise Conflict(
            f"deployment {name!r} already exists: stage a new release on it with "
            f"POST /deployments/{name}/green, or choose another name"
        )

    def stage_green(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as green at weight 0."""
        self.store.get_release(release_id)
        return self._transition(name, principal, lambda s: rollout.stage_green(s, release_id))

    def shift(
        self, name: str, weight: int, principal: str, force: bool = False
    ) -> StoredDeployment:
        """Move green to ``weight`` percent in one step (100 cuts over)."""
        details = {"force": True} if force else None
        return self._transition(
            name, principal, lambda s: rollout.shift(s, weight, force=force), details
        )

    def revert(self, name: str, principal: str) -> StoredDeployment:
        """All traffic back to the last good release. Idempotent."""
        return self._transition(name, principal, rollout.revert)

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
                details = {"force": True} if force else None
                steps = list(self.settings.promote_steps)
                stored = self._transition(
                    name, principal, lambda s: rollout.start_plan(s, steps, force=force), details
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
            stored = self._transition(name, principal, rollout.next_plan_step)
            if on_step:
                on_step(stored)
            if not stored.state.plan:
                break
            self.sleep(self.settings.promote_step_pause_seconds)
            stored = self.store.get_deployment(name)
        if stored.state.green is not None:
            raise Conflict(
                f"the promotion of {name} was interrupted (revert): green release "
                f"{stored.state.green} is at {stored.state.green_weight}%",
            )
        return stored

    def reconcile(self) -> None:
        """Make the backend serve every stored deployment as stored (used at start-up).

        Slots are started (or re-adopted) and weights applied; a persisted plan is recorded
        as interrupted, to be resumed or reverted by an operator.
        """
        self.recovery.reconcile()

    def plan_running(self, name: str) -> bool:
        """Whether this process is walking a promotion plan of ``name`` now."""
        with self._locks_guard:
            return name in self._running_plans

    def retire_standby(self, name: str, principal: str) -> StoredDeployment:
        """Stop the standby slot early; revert to it is no longer possible afterwards."""
        return self._transition(name, principal, slots.retire_standby)

    # the one path every change takes

    def _transition(
        self,
        name: str,
        principal: str,
        decide: Callable[[DeploymentState], Transition],
        details: dict[str, Any] | None = None,
    ) -> StoredDeployment:
        with self.locked(name):
            stored = self.store.get_deployment(name)
            transition = decide(stored.state)
            if not transition.changed:
                return stored
            return self.apply(stored, transition, principal, details)

    def apply(
        self,
        stored: StoredDeployment,
        transition: Transition,
        principal: str,
        details: dict[str, Any] | None,
    ) -> StoredDeployment:
        """Perform, persist and follow up ``transition``; the caller holds :meth:`locked`.

        Raises StaleWrite (traffic put back as stored) or the backend's errors.
        """
        name = stored.state.name
        self._perform_before_commit(name, transition)
        after = transition.state
        try:
            saved = self.store.save_deployment(
                stored.state,
                after,
                now=self.clock(),
                principal=principal,
                action=transition.action,
                reason=transition.reason,
                details=details,
            )
        except StaleWrite:
            # Another writer won: put traffic back where the stored state says it is.
            self.backend.set_routes(name, self.store.get_deployment(name).state.routes())
            raise
        except Exception:
            # Nothing was persisted: traffic goes back to the state we started from.
            self.backend.set_routes(name, stored.state.routes())
            raise
        self._follow_up(saved, transition, principal)
        return saved

    def _perform_before_commit(self, name: str, transition: Transition) -> None:
        for action in transition.actions:
            if isinstance(action, EnsureSlot):
                self.backend.ensure_slot(name, self.store.get_release(action.release_id))
            elif isinstance(action, SetRoutes):
                self.backend.set_routes(name, action.routes)

    def _follow_up(self, saved: StoredDeployment, transition: Transition, principal: str) -> None:
        name = saved.state.name
        follow_ups = [a for a in transition.actions if isinstance(a, RetireSlot | MoveAliases)]
        for action in follow_ups:
            try:
                if isinstance(action, RetireSlot):
                    self.backend.retire_slot(name, action.release_id)
                else:
                    self._move_aliases(name, action)
            except BgserveError as exc:
                # The change is already true; a lingering slot or stale alias is recorded,
                # never a reason to undo it.
                log.warning("%s on %s: %s failed: %s", principal, name, action, exc.message)
                self._record_failed_follow_up(saved, action, exc)

    def _record_failed_follow_up(
        self, saved: StoredDeployment, action: RetireSlot | MoveAliases, exc: BgserveError
    ) -> None:
        what = "retire slot" if isinstance(action, RetireSlot) else "move MLflow aliases"
        try:
            self.store.append_event(
                saved.state,
                now=self.clock(),
                principal="bgserve",
                action="follow-up-failed",
                reason=f"could not {what}: {exc.message}",
                details={"action": repr(action)},
            )
        except BgserveError:
            log.exception("could not record the failed follow-up on %s", saved.state.name)

    def _move_aliases(self, name: str, action: MoveAliases) -> None:
        live = self.store.get_release(action.live)
        previous = None if action.previous is None else self.store.get_release(action.previous)
        self.registry.move_aliases(name, live, previous)

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the deployment's in-process lock. Raises Conflict after the lock timeout."""
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=self.settings.lock_timeout_seconds):
            raise Conflict(
                f"another operation on {name!r} has held it for over "
                f"{self.settings.lock_timeout_seconds:g}s: retry later"
            )
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def _plan_running(self, name: str) -> Iterator[None]:
        with self._locks_guard:
            if name in self._running_plans:
                raise IllegalTransition(
                    f"a promotion of {name} is already under way: wait for it, or revert"
                )
            self._running_plans.add(name)
        try:
            yield
        finally:
            with self._locks_guard:
                self._running_plans.discard(name)
