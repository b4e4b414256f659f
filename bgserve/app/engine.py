"""The rollout engine: the one loop that advances promotion plans.

Every ``interval`` seconds it looks at each stored deployment with a plan, reads the
traffic of the plan's current step from the :class:`~bgserve.app.ports.TrafficSource`
(the counts since the step's weight was applied), and hands
:func:`bgserve.domain.promotion.advance` to the executor, which decides on the fresh
state under the deployment's lock: nothing, the next step, a hold, an automatic revert,
or the cutover. When shadow traffic runs for the current pair, its comparison is one more
check (the only one at a 0% step). Nothing sleeps in a request and nothing else advances
a plan.

A plan whose green needs a warm-up (before its first step) is handed to the
:class:`~bgserve.app.warmup.GreenWarmer` on a thread of its own, so a slow warm-up never
delays the other deployments' plans; when it is done the first step is applied.

Each step's window starts at the engine's first reading of the counts after the step's
initial delay. After a restart or a leader change the counts of the process that served
the first part of the bake are gone, so the window starts at the new leader's first
reading and the step bakes its full ``bake_s`` from there (the bake clock counts only
watched time; :func:`bgserve.domain.plan.due`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, Protocol

from bgserve.app.executor import SYSTEM, Executor
from bgserve.app.ports import DeploymentReader, ShadowChecks, TrafficSource
from bgserve.domain import promotion
from bgserve.domain.analysis import Check
from bgserve.domain.state import DeploymentState, Transition
from bgserve.domain.window import SideWindow
from bgserve.errors import BgserveError
from bgserve.store import StoredDeployment

log = logging.getLogger("bgserve.engine")

StepKey = tuple[int, float | None]


class Warmer(Protocol):
    """Warms a plan's green before its first step (:class:`bgserve.app.warmup.GreenWarmer`)."""

    def warm(self, state: DeploymentState) -> dict[str, Any]:
        """What the warm-up did, for the history. Never raises."""
        ...


SLICE_S = 0.2
"""How long a slice of a window is at least: the latency checks pair green with blue over
the same slices (:mod:`bgserve.domain.analysis`). Under the engine's default interval
(0.25 s) every reading is a boundary, so a short bake still holds enough slices."""
MAX_MARKS = 1200


@dataclass(frozen=True)
class StepWindow:
    """Where one step's window starts: the first reading's time and its counts (None
    when the traffic source could not be read then), and the readings since, at least
    :data:`SLICE_S` apart, that cut the window into slices."""

    key: StepKey
    since: float
    counts: Mapping[int, SideWindow] | None
    marks: list[tuple[float, Mapping[int, SideWindow]]] = field(default_factory=list)

    def mark(self, now: float, counts: Mapping[int, SideWindow]) -> None:
        """Keep this reading as a slice boundary if the last one is old enough; past
        :data:`MAX_MARKS`, every other boundary goes (slices twice as long)."""
        if self.marks and now - self.marks[-1][0] < SLICE_S:
            return
        self.marks.append((now, counts))
        if len(self.marks) > MAX_MARKS:
            del self.marks[::2]

    def slices(self, release_id: int) -> tuple[SideWindow, ...]:
        """``release_id``'s traffic in each slice of the window so far."""
        if self.counts is None:
            return ()
        empty = SideWindow()
        points = [self.counts.get(release_id, empty)]
        points += [counts.get(release_id, empty) for _, counts in self.marks]
        return tuple(later.minus(earlier) for earlier, later in pairwise(points))


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
        warmer: Warmer | None = None,
    ) -> None:
        self.executor = executor
        self.deployments = deployments
        self.traffic = traffic
        self.shadow = shadow
        self.warmer = warmer
        self.interval = interval
        self.clock = clock
        self._windows: dict[str, StepWindow] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warming: dict[str, Future[None]] = {}
        self._warm_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bgserve-warmup")

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
        self._warm_pool.shutdown(wait=False, cancel_futures=True)
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
        """Advance one deployment's plan if something is due; None if it failed (logged).

        A warm-up due is started in the background (once) and changes nothing here."""
        name = stored.state.name
        plan = stored.state.plan
        if plan is not None and plan.needs_warmup:
            self._start_warmup(stored.state)
            return stored
        counts = self._counts(name)
        now = self.clock()

        def decide(state: DeploymentState) -> Transition:
            blue, green, since = self._window(state, counts, now)
            extra = self._extra(name, state)
            return promotion.advance(state, blue, green, now, extra, since)

        try:
            return self.executor.run(name, SYSTEM, decide)
        except BgserveError as exc:
            log.error("advancing the plan of %s failed: %s", name, exc.message)
            return None

    def wait_warmups(self, timeout: float | None = None) -> None:
        """Wait for the warm-ups under way (tests and shutdown). Idempotent."""
        for future in list(self._warming.values()):
            future.exception(timeout)

    def _start_warmup(self, state: DeploymentState) -> None:
        running = self._warming.get(state.name)
        if running is not None and not running.done():
            return
        self._warming[state.name] = self._warm_pool.submit(self._warm, state)

    def _warm(self, state: DeploymentState) -> None:
        """Warm green, then apply the first step (if the plan still waits for it)."""
        name = state.name
        summary: dict[str, Any] = {"requests": 0, "skipped": "no warmer on this backend"}
        if self.warmer is not None:
            try:
                summary = self.warmer.warm(state)
            except Exception as exc:  # a warm-up must never keep the plan from going on
                log.exception("the warm-up of %s failed", name)
                summary = {"requests": 0, "skipped": f"the warm-up failed: {exc!r}"}
        try:
            self.executor.run(name, SYSTEM, lambda s: promotion.warmed_up(s, self.clock(), summary))
        except BgserveError as exc:
            log.error("the first step of %s after its warm-up failed: %s", name, exc.message)

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
        self, state: DeploymentState, counts: Mapping[int, SideWindow] | None, now: float
    ) -> tuple[SideWindow | None, SideWindow | None, float | None]:
        """Blue's and green's traffic since the current step's window began (None if
        unknown), and when this engine first read it (None before the initial delay).

        The first reading at or after the initial delay is the window's baseline, so the
        window starts within one interval of the delay's end (or of a restart).
        """
        plan = state.plan
        window_from = None if plan is None else plan.window_from
        if plan is None or state.green is None or window_from is None or now < window_from:
            return None, None, None
        key: StepKey = (plan.step_index, plan.step_started_at)
        known = self._windows.get(state.name)
        if known is None or known.key != key or (known.counts is None and counts is not None):
            # A window first read without counts starts again once they can be read.
            known = StepWindow(key, now, counts)
            self._windows[state.name] = known
        if counts is None or known.counts is None:
            return None, None, known.since
        known.mark(now, counts)
        empty = SideWindow()
        # Green is judged against its baseline when the plan runs one (same age, same
        # share), else against blue.
        reference = state.blue if state.baseline is None else state.baseline
        blue = counts.get(reference, empty).minus(known.counts.get(reference, empty))
        green = counts.get(state.green, empty).minus(known.counts.get(state.green, empty))
        blue = replace(blue, slices=known.slices(reference))
        green = replace(green, slices=known.slices(state.green))
        return blue, green, known.since
