"""The parts the executor and rollout engine tests share: an injected clock, a memory
backend whose routing can fail, an alias mover that can fail, a traffic source the
test sets, and a deployment brought to a weight."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from bgserve.app.engine import RolloutEngine
from bgserve.app.executor import Executor
from bgserve.backends.memory import MemoryBackend
from bgserve.domain import rollout
from bgserve.domain.release import Release
from bgserve.domain.rollout import Gate, Route
from bgserve.domain.window import SideWindow, histogram
from bgserve.errors import BackendError, RegistryUnavailable


class Clock:
    """An injected clock that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Aliases:
    """Records alias moves; can be told to fail, as an unreachable MLflow would."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, int, int | None]] = []
        self.fail = False

    def move_aliases(self, deployment: str, live: Release, previous: Release | None) -> None:
        if self.fail:
            raise RegistryUnavailable("MLflow is down (injected)")
        self.moves.append((deployment, live.id, previous.id if previous else None))


class FlakyRoutes(MemoryBackend):
    """A memory backend whose next ``set_routes`` calls can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.route_failures = 0

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        if self.route_failures:
            self.route_failures -= 1
            raise BackendError("the route object belongs to someone else (injected)")
        super().set_routes(deployment, routes)


def shifted_to(executor: Executor, weight: int) -> None:
    executor.create(rollout.create("chat", 1), "alice")
    executor.run("chat", "alice", lambda s: rollout.stage_green(s, 2))
    passed = Gate(1, 2, True)
    executor.run("chat", "alice", lambda s: rollout.record_gate(s, passed, {"cases": []}))
    executor.run("chat", "alice", lambda s: rollout.shift(s, weight))


class Traffic:
    """A traffic source the test sets: cumulative counts per release."""

    def __init__(self) -> None:
        self.counts: dict[int, SideWindow] = {}

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        return dict(self.counts)

    def add(self, release_id: int, requests: int, errors: int = 0) -> None:
        now = self.counts.get(release_id, SideWindow())
        more = SideWindow(requests, errors, histogram([10.0] * requests))
        self.counts[release_id] = now.plus(more)

    def adding(self, per_tick: dict[int, int]) -> Callable[[], None]:
        """One tick's traffic for :func:`bake_in_ticks`: each release answers its count."""

        def one_tick() -> None:
            for release_id, requests in per_tick.items():
                self.add(release_id, requests)

        return one_tick


def bake_in_ticks(
    engine: RolloutEngine,
    now: list[float],
    until: float,
    one_tick: Callable[[], None],
    ticks: int = 10,
) -> None:
    """Move the injected clock to ``until`` in ``ticks`` even steps, ``one_tick`` adding
    one tick's traffic before each look of the engine: the window comes in slices, as the
    data plane's counts do under the engine's interval (the latency checks pair them)."""
    start = now[0]
    for tick in range(1, ticks + 1):
        one_tick()
        now[0] = start + (until - start) * tick / ticks
        engine.tick()
