"""Shadow state kept with the deployment: a restarted or new leader resumes mirroring with
the same settings and the report so far, a follower never mirrors, and pairs the data
plane took for another blue/green pair never count."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bgserve.app.executor import Executor
from bgserve.app.service import Service
from bgserve.app.shadow import ShadowCollector, ShadowSettings
from bgserve.backends.base import ShadowPair
from bgserve.backends.memory import MemoryBackend
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
from bgserve.evaluation.assertions import Assertion
from bgserve.evaluation.comparison import TextScorer
from bgserve.evaluation.verdict import Thresholds
from bgserve.store import Store
from tests.unit.test_shadow import NoAliases

THRESHOLDS = Thresholds(min_mean_similarity=0.5)


def settings() -> ShadowSettings:
    return ShadowSettings(THRESHOLDS, TextScorer(), min_pairs=4, keep=3)


def answer(text: str) -> str:
    return json.dumps({"outputs": [{"name": "output", "datatype": "BYTES", "data": [text]}]})


def pair(n: int, green: str, releases: tuple[int, int] | None = (1, 2)) -> ShadowPair:
    request = json.dumps({"inputs": [{"name": "text", "data": [f"in {n}"]}]})
    blue_release, green_release = releases or (None, None)
    return ShadowPair(
        f"q{n}", request, answer("yes"), answer(green), None, 5.0, 6.0, False,
        blue_release, green_release,
    )  # fmt: skip


@pytest.fixture
def service(store: Store) -> tuple[Service, MemoryBackend]:
    backend = MemoryBackend()
    executor = Executor(
        store, backend, NoAliases(), clock=lambda: datetime.now(UTC), lock_timeout=1
    )
    analysis = AnalysisSettings(50, 0.01, 0.05, 1.5, 300.0, "hold")
    service = Service(
        store, NoAliases(), backend, executor, default_plan=make_plan((10, 100), 1.0, analysis)
    )
    service.create_deployment("chat", 1, "alice")
    service.stage_green("chat", 2, "alice")
    return service, backend


def test_pairs_taken_for_another_pair_are_not_counted(
    service: tuple[Service, MemoryBackend], store: Store
) -> None:
    _, backend = service
    collector = ShadowCollector(backend, store, settings(), store)
    collector.start_shadow("chat", 100)
    for n in range(6):
        backend.push_pair("chat", pair(n, "yes", releases=(1, 9)))  # an older green's copies
    backend.push_pair("chat", pair(6, "yes"))
    backend.push_pair("chat", pair(7, "yes", releases=None))  # a source that does not say
    collector.collect_once()

    report = collector.report("chat")
    assert (report.pairs, report.conclusive) == (2, False)


def test_a_restarted_leader_resumes_mirroring_with_its_settings_and_report(
    service: tuple[Service, MemoryBackend], store: Store
) -> None:
    _, backend = service
    first = ShadowCollector(backend, store, settings(), store)
    checks = [Assertion(type="contains", value="yes")]
    first.start_shadow("chat", 40, max_pairs=500, assertions=checks)
    for n in range(5):
        backend.push_pair("chat", pair(n, "yes" if n else "no"))
    first.collect_once()
    before = first.report("chat")
    first.close()  # bgserve stops: the data plane stops mirroring, the state stays
    assert backend.shadow_percent("chat") == 0

    follower = ShadowCollector(backend, store, settings(), store, leading=False)
    follower.collect_once()
    assert backend.shadow_percent("chat") == 0  # a follower never mirrors
    assert follower.report("chat") == before  # but reads the stored report

    leader = ShadowCollector(backend, store, settings(), store, leading=False)
    leader.lead()
    assert backend.shadow_percent("chat") == 40
    assert leader.percent("chat") == 40
    resumed = leader.report("chat")
    assert resumed == before
    assert (resumed.pairs, resumed.differing, resumed.thresholds) == (5, 1, THRESHOLDS)
    assert resumed.green_side.assertions_total == 5  # the assertions came back too
    backend.push_pair("chat", pair(5, "yes"))
    leader.collect_once()
    assert leader.report("chat").pairs == 6

    follower.stop_shadow("chat")  # asked of the follower: stored, the leader follows
    leader.collect_once()
    assert backend.shadow_percent("chat") == 0
    assert leader.report("chat").pairs == 6


def test_a_stored_shadow_of_another_pair_is_forgotten_on_resume(
    service: tuple[Service, MemoryBackend], store: Store
) -> None:
    svc, backend = service
    first = ShadowCollector(backend, store, settings(), store)
    first.start_shadow("chat", 100)
    first.close()
    svc.stage_green("chat", 3, "alice")

    leader = ShadowCollector(backend, store, settings(), store, leading=False)
    leader.lead()
    assert backend.shadow_percent("chat") == 0
    assert store.get_shadow("chat") is None


class StaleFirstRead:
    """The store, but the collection round's first read of the stored shadows is taken just
    before ``started`` runs (a shadow started between that read and the round's next step)."""

    def __init__(self, store: Store, started: Callable[[], object]) -> None:
        self.store, self.started = store, started
        self.reads = 0

    def shadow_revisions(self) -> dict[str, int]:
        self.reads += 1
        revisions = self.store.shadow_revisions()
        if self.reads == 1:
            self.started()
        return revisions

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_shadow_started_while_a_round_reads_the_store_is_not_dropped(
    service: tuple[Service, MemoryBackend], store: Store
) -> None:
    _, backend = service
    collector = ShadowCollector(backend, store, settings(), store)
    collector.store = StaleFirstRead(store, lambda: collector.start_shadow("chat", 40))  # type: ignore[assignment]
    collector.collect_once()
    assert collector.percent("chat") == 40
    assert backend.shadow_percent("chat") == 40
