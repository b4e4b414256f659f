"""What bgserve does on its own when something dies: a slot, or bgserve itself.

A slot lost while serving (reported by a :class:`~bgserve.backends.base.SlotWatcher`: its
process exited, or the router ejected it): the pure rule
:func:`bgserve.domain.slots.on_slot_lost` decides (revert if green dies while it takes
traffic or a plan runs, otherwise no change) and the executor applies it; then the slot is
restarted in the background and routed by the stored weights again, unless it crash-loops.

A restart of bgserve: every stored deployment is realised as stored (slots started,
weights applied); a promotion plan found persisted is resumed by the rollout engine.

Every automatic change or observation goes through the executor, with the principal
``bgserve``. On shutdown no new recovery starts, the ones under way are waited for, and
a restart cut short by the shutdown is not recorded as a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bgserve.app.executor import SYSTEM, Executor
from bgserve.app.ports import DeploymentReader, Releases, SlotStarter
from bgserve.domain import rollout, slots
from bgserve.errors import BgserveError, NotFound

log = logging.getLogger("bgserve.recovery")


class Recovery:
    """Applies the slot-loss rule and restarts lost slots; restores state at start-up."""

    def __init__(
        self,
        executor: Executor,
        deployments: DeploymentReader,
        releases: Releases,
        starter: SlotStarter,
        *,
        restart_limit: int,
        restart_window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executor = executor
        self.deployments = deployments
        self.releases = releases
        self.starter = starter
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self.clock = clock
        self._restarts: dict[tuple[str, int], tuple[float, ...]] = {}
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._closing = False

    # slots lost while serving

    def slot_lost(self, deployment: str, release_id: int) -> None:
        """The backend's callback: handle the loss on a thread of its own, return at once."""
        thread = threading.Thread(
            target=self.recover,
            args=(deployment, release_id),
            name=f"bgserve-recover-{deployment}-{release_id}",
            daemon=True,
        )
        with self._guard:
            if self._closing:
                return
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def recover(self, deployment: str, release_id: int) -> None:
        """Apply the slot-loss rule, then restart the slot. Never raises (logs instead)."""
        try:
            stored = self.executor.run(
                deployment, SYSTEM, lambda s: slots.on_slot_lost(s, release_id)
            )
            log.warning("%s: release %s's slot was lost", deployment, release_id)
            if slots.routed(stored.state, release_id) and not self._closing:
                self._restart(deployment, release_id)
        except NotFound:
            return  # the deployment is gone; nothing to restore
        except BgserveError as exc:
            if self._closing:
                log.info("restart of %s/%s cut short by shutdown", deployment, release_id)
                return
            message = exc.message
            log.error("recovering slot %s of %s failed: %s", release_id, deployment, message)
            self._observe(deployment, lambda s: slots.restart_failed(s, release_id, message))

    def close(self, timeout: float) -> bool:
        """Start no new recovery and wait for those under way; True if none is left."""
        with self._guard:
            self._closing = True
        return self.wait_idle(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait for every recovery under way (for tests and shutdown); True if none is left."""
        with self._guard:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _restart(self, deployment: str, release_id: int) -> None:
        key = (deployment, release_id)
        allowed, kept = slots.restart_allowed(
            self._restarts.get(key, ()), self.clock(), self.restart_limit, self.restart_window
        )
        self._restarts[key] = kept
        if not allowed:
            limit, window = self.restart_limit, self.restart_window
            self._observe(
                deployment, lambda s: slots.restart_abandoned(s, release_id, limit, window)
            )
            return
        # Started outside the deployment's lock: a revert must not wait for a slot to boot.
        info = self.starter.ensure_slot(deployment, self.releases.get_release(release_id))
        self.executor.run(
            deployment, SYSTEM, lambda s: slots.slot_restarted(s, release_id, info.endpoint)
        )

    def _observe(self, deployment: str, decide: Callable[..., rollout.Transition]) -> None:
        try:
            self.executor.run(deployment, SYSTEM, decide)
        except BgserveError as exc:
            log.error("could not record an event on %s: %s", deployment, exc.message)

    # a restart of bgserve

    def reconcile(self) -> None:
        """Realise every stored deployment as stored (start-up): slots started or re-adopted,
        weights applied; no state changes. A plan under way is the rollout engine's to resume.
        """
        for stored in self.deployments.list_deployments():
            state = stored.state
            try:
                self.executor.realise(state)
            except BgserveError as exc:
                log.error("could not restore deployment %s: %s", state.name, exc.message)
