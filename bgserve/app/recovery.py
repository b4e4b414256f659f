"""What bgserve does on its own when something dies: a slot, or bgserve itself.

A slot lost while serving (reported by a :class:`~bgserve.backends.base.SlotWatcher`):
the pure rule :func:`bgserve.domain.slots.on_slot_lost` decides (revert if green dies
while it takes traffic or a plan runs, otherwise no change), the service applies it,
then the slot is restarted in the background and routed by the stored weights again.

A restart of bgserve: every stored deployment is realised as stored (slots started,
weights applied); a promotion plan found persisted is recorded as interrupted and left
for an operator to resume (``POST .../promote {}``) or revert.

Every automatic change or observation goes into the history with the principal
``bgserve``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bgserve.domain import slots
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BgserveError, NotFound

if TYPE_CHECKING:
    from bgserve.app.service import Service

log = logging.getLogger("bgserve.app.recovery")

SYSTEM = "bgserve"


def routed_releases(state: DeploymentState) -> set[int]:
    """Release ids with a slot in the deployment (blue, green and standby)."""
    return {route.release_id for route in state.routes()}


class Recovery:
    """Applies the slot-loss rule and restarts lost slots; restores state at start-up."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.clock = clock
        settings = service.settings
        self.budget = slots.RestartBudget(
            settings.slot_restart_limit, settings.slot_restart_window_seconds
        )
        self._threads: list[threading.Thread] = []

    # slots lost while serving

    def slot_lost(self, deployment: str, release_id: int) -> None:
        """The backend's callback: handle the loss on a thread of its own, return at once."""
        thread = threading.Thread(
            target=self.recover,
            args=(deployment, release_id),
            name=f"bgserve-recover-{deployment}-{release_id}",
            daemon=True,
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def recover(self, deployment: str, release_id: int) -> None:
        """Apply the slot-loss rule, then restart the slot. Never raises (logs instead)."""
        try:
            self._apply_rule(deployment, release_id)
            self._restart(deployment, release_id)
        except NotFound:
            return  # the deployment is gone; nothing to restore
        except BgserveError as exc:
            log.error("recovering slot %s of %s failed: %s", release_id, deployment, exc.message)
            self._record(deployment, "restart-failed", f"restart failed: {exc.message}", release_id)

    def wait_idle(self, timeout: float) -> bool:
        """Wait for every recovery under way (for tests and shutdown); True if none is left."""
        for thread in list(self._threads):
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def _apply_rule(self, deployment: str, release_id: int) -> None:
        service = self.service
        with service.locked(deployment):
            stored = service.store.get_deployment(deployment)
            transition = slots.on_slot_lost(stored.state, release_id)
            details = {"slot_lost": release_id}
            if transition.changed:
                service.apply(stored, transition, SYSTEM, details)
            else:
                self._record(deployment, transition.action, transition.reason, release_id)
        log.warning("%s: %s", deployment, transition.reason)

    def _restart(self, deployment: str, release_id: int) -> None:
        service = self.service
        if release_id not in routed_releases(service.store.get_deployment(deployment).state):
            return
        if not self.budget.allow(deployment, release_id, self.clock()):
            reason = (
                f"slot of release {release_id} died {self.budget.limit} times within "
                f"{self.budget.window:g}s: not restarted again (a crash loop); its logs tell "
                "why, and staging or reverting starts it afresh"
            )
            self._record(deployment, "restart-abandoned", reason, release_id)
            return
        info = service.backend.ensure_slot(deployment, service.store.get_release(release_id))
        with service.locked(deployment):
            state = service.store.get_deployment(deployment).state
            if release_id not in routed_releases(state):
                service.backend.retire_slot(deployment, release_id)  # retired meanwhile
                return
            service.backend.set_routes(deployment, state.routes())
        self._record(deployment, "slot-restarted", f"slot restarted at {info.endpoint}", release_id)

    def _record(self, deployment: str, action: str, reason: str, release_id: int) -> None:
        service = self.service
        try:
            state = service.store.get_deployment(deployment).state
            service.store.append_event(
                state,
                now=service.clock(),
                principal=SYSTEM,
                action=action,
                reason=reason,
                details={"release_id": release_id},
            )
        except BgserveError as exc:
            log.error("could not record %s on %s: %s", action, deployment, exc.message)

    # a restart of bgserve

    def reconcile(self) -> None:
        """Realise every stored deployment and mark interrupted promotions (start-up).

        Slots are started (or re-adopted) and weights applied as stored; no state changes.
        """
        for stored in self.service.store.list_deployments():
            state = stored.state
            try:
                self._realise(state)
            except BgserveError as exc:
                log.error("could not restore deployment %s: %s", state.name, exc.message)
            if state.plan and not self.service.plan_running(state.name):
                reason = (
                    f"promotion plan {list(state.plan)} interrupted (bgserve restarted) with "
                    f"green at {state.green_weight}%: resume it with POST "
                    f"/deployments/{state.name}/promote {{}}, or revert"
                )
                self._record(state.name, "interrupted", reason, state.green or state.blue)

    def _realise(self, state: DeploymentState) -> None:
        service = self.service
        routes = state.routes()
        for route in routes:
            release = service.store.get_release(route.release_id)
            service.backend.ensure_slot(state.name, release)
        service.backend.set_routes(state.name, routes)
