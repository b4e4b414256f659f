"""The rollout engine: the one loop that advances promotion plans.

Every ``interval`` seconds it looks at each stored deployment with a plan, reads the
traffic of the plan's current step from the :class:`~bgserve.app.ports.TrafficSource`
(the counts since the step's weight was applied), and hands
:func:`bgserve.domain.promotion.advance` to the executor, which decides on the fresh
state under the deployment's lock: nothing, the next step, a hold, an automatic revert,
or the cutover. When shadow traffic runs for the current pair, its comparison is one more
check (the only one at a 0% step). Nothing sleeps in a request and nothing else advances
a plan.

After a restart a plan resumes where it was, with the bake time it had left (the step's
start is stored); its window then counts from the restart, since the counts of the
data plane that served the first part of the bake died with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from bgserve.app.executor import SYSTEM, Executor
from bgserve.app.ports import DeploymentReader, ShadowChecks, TrafficSource
from bgserve.domain import promotion
from bgserve.domain.analysis import Check, SideWindow
from bgserve.domain.state import DeploymentState, Transition
from bgserve.errors import BgserveError
from bgserve.store import StoredDeployment

log = logging.getLogger("bgserve.engine")

StepKey = tuple[int, float | None]


class RolloutEngine:
    """Advances every plan that has something due, on a thread of its own."""

    def __init__(
        self,
        executor: Executor,
        deployments: DeploymentReader,
        traffic: TrafficSource | None,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
        shadow: ShadowChecks | None = None,
    ) -> None:
        self.executor = executor
        self.deployments = deployments
        self.traffic = traffic
        self.shadow = shadow
        self.interval = interval
        self.clock = clock
        self._baselines: dict[str, tuple[StepKey, Mapping[int, SideWindow]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the loop in the background until :meth:`stop`. Idempotent."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bgserve-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for the pass under way. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop the loop and release the traffic source (a Prometheus client). Idempotent."""
        self.stop()
        close = getattr(self.traffic, "close", None)
        if callable(close):
            close()

    def tick(self) -> None:
        """One pass over every deployment with a plan. Never raises (logs instead)."""
        try:
            planned = [d for d in self.deployments.list_deployments() if d.state.plan]
        except BgserveError as exc:
            log.error("the rollout engine cannot read deployments: %s", exc.message)
            return
        for stored in planned:
            self.advance(stored)

    def advance(self, stored: StoredDeployment) -> StoredDeployment | None:
        """Advance one deployment's plan if something is due; None if it failed (logged)."""
        name = stored.state.name
        counts = self._counts(name)
        now = self.clock()

        def decide(state: DeploymentState) -> Transition:
            blue, green = self._window(state, counts)
            return promotion.advance(state, blue, green, now, self._extra(name, state))

        try:
            return self.executor.run(name, SYSTEM, decide)
        except BgserveError as exc:
            log.error("advancing the plan of %s failed: %s", name, exc.message)
            return None

    def _extra(self, name: str, state: DeploymentState) -> tuple[Check, ...]:
        """The shadow comparison's check, when shadow traffic runs for the current pair."""
        check = None if self.shadow is None else self.shadow.check(name, state)
        return () if check is None else (check,)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def _counts(self, name: str) -> Mapping[int, SideWindow] | None:
        if self.traffic is None:
            return None
        try:
            return self.traffic.windows(name)
        except BgserveError as exc:
            log.warning("no traffic counts for %s: %s", name, exc.message)
            return None

    def _window(
        self, state: DeploymentState, counts: Mapping[int, SideWindow] | None
    ) -> tuple[SideWindow | None, SideWindow | None]:
        """Blue's and green's traffic since the current step began (None if unknown).

        The first reading of a step is its baseline, so the window starts within one
        interval of the step's weight being applied.
        """
        plan = state.plan
        if plan is None or counts is None or state.green is None:
            return None, None
        key: StepKey = (plan.step_index, plan.step_started_at)
        known = self._baselines.get(state.name)
        if known is None or known[0] != key:
            self._baselines[state.name] = (key, counts)
            known = (key, counts)
        baseline = known[1]
        empty = SideWindow()
        blue = counts.get(state.blue, empty).minus(baseline.get(state.blue, empty))
        green = counts.get(state.green, empty).minus(baseline.get(state.green, empty))
        return blue, green
