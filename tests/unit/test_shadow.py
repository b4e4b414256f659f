"""Shadow traffic, fast: the pure scoring and aggregate, and the collector, the gate and the
API on the in-memory backend and a real SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bgserve.api.app import create_app
from bgserve.app.service import Service
from bgserve.app.shadow import ShadowCollector, ShadowSettings, parse_pair
from bgserve.backends.base import ShadowPair, ShadowTraffic
from bgserve.backends.memory import MemoryBackend
from bgserve.cli.app import app
from bgserve.compose import Components, build_components
from bgserve.domain import rollout
from bgserve.domain.analysis import AnalysisSettings, Outcome
from bgserve.domain.plan import make_plan
from bgserve.domain.release import ResolvedRelease
from bgserve.domain.rollout import Gate, record_gate
from bgserve.domain.shadow import PairInput, check_shadow_gate, score_pair, shadow_assertions
from bgserve.domain.shadow_aggregate import ShadowAggregate
from bgserve.errors import GateClosed, IllegalTransition, NotFound
from bgserve.evaluation.assertions import Assertion
from bgserve.evaluation.comparison import TextScorer
from bgserve.evaluation.verdict import Thresholds
from bgserve.settings import Settings
from bgserve.store import Store

SCORER = TextScorer()
ANSWER = "the quick brown fox jumps over the lazy dog"


def pair(n: int, blue: str, green: str | None, error: str | None = None) -> PairInput:
    return PairInput(f"r{n}", {"text": f"input {n}"}, blue, green, error, 10.0, 12.0)


def aggregate_of(pairs: list[PairInput], **kwargs: Any) -> ShadowAggregate:
    agg = ShadowAggregate(1, 2, min_pairs=10, keep=5, **kwargs)
    for p in pairs:
        agg.add(*score_pair(p, SCORER))
    return agg


# --- pure: one pair ---------------------------------------------------------------------


def test_an_equal_pair_scores_one_and_a_changed_word_shows_in_the_diff() -> None:
    same, _, _ = score_pair(pair(1, ANSWER, ANSWER), SCORER)
    assert same.equal and same.similarity == 1.0 and same.diff is None
    changed, _, _ = score_pair(pair(2, ANSWER, ANSWER.replace("lazy", "sleepy")), SCORER)
    assert not changed.equal and changed.similarity is not None and changed.similarity < 1
    assert changed.diff is not None and "[-lazy-]{+sleepy+}" in changed.diff


def test_assertions_run_on_both_answers_and_a_regression_is_named() -> None:
    checks = shadow_assertions([Assertion(type="is_json"), Assertion(type="regex", value="^{")])
    scored, blue, green = score_pair(pair(1, '{"a": 1}', "not json"), SCORER, checks)
    assert blue == [True, True] and green == [False, False]
    assert len(scored.regressions) == 2 and scored.regressions[0].startswith("is_json")


def test_an_assertion_that_needs_an_expected_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="'similar' needs an expected answer"):
        shadow_assertions([Assertion(type="similar", value="x", threshold=0.5)])


def test_scores_only_keeps_no_text() -> None:
    scored, _, _ = score_pair(pair(1, ANSWER, "other"), SCORER, keep_texts=False)
    assert (scored.inputs, scored.blue, scored.green, scored.diff) == (None, None, None, None)
    assert scored.similarity is not None and scored.similarity < 0.5


# --- pure: the aggregate ----------------------------------------------------------------


def test_the_aggregate_counts_differing_pairs_and_keeps_the_worst_and_most_recent() -> None:
    pairs = [pair(n, ANSWER, ANSWER if n % 4 else f"totally different {n}") for n in range(100)]
    report = aggregate_of(pairs).report()
    assert (report.pairs, report.compared, report.differing) == (100, 100, 25)
    assert len(report.worst) == 5 and all(not p.equal for p in report.worst)
    sims = [p.similarity or 0 for p in report.worst]
    assert sims == sorted(sims)
    assert [p.request_id for p in report.recent] == ["r99", "r98", "r97", "r96", "r95"]
    assert report.similarity.mean is not None and 0.6 < report.similarity.mean < 0.85
    assert report.similarity.p10 is not None and report.similarity.p10 < 0.5
    assert report.similarity.share_below_threshold == pytest.approx(0.25)
    assert not report.verdict.passed
    assert any("25 of 100 mirrored pairs differ" in r for r in report.verdict.reasons)


def test_the_p10_is_the_tenth_lowest_percent_of_similarities() -> None:
    agg = ShadowAggregate(1, 2)
    for n in range(100):
        scored, _, _ = score_pair(pair(n, "a", "b"), SCORER)
        agg.add(scored.model_copy(update={"similarity": n / 100}), [], [])
    assert agg.p10() == pytest.approx(0.09)


def test_memory_stays_bounded_over_many_pairs() -> None:
    agg = ShadowAggregate(1, 2, keep=3)
    for n in range(5000):
        agg.add(*score_pair(pair(n, ANSWER, f"{ANSWER} {n}"), SCORER))
    assert len(agg.report().worst) == 3 and len(agg.recent) == 3
    assert len(agg.latencies) <= 4096


def test_green_errors_fail_the_verdict_and_an_identical_green_passes() -> None:
    same = aggregate_of([pair(n, ANSWER, ANSWER) for n in range(20)]).report()
    assert same.verdict.passed and same.differing == 0 and same.conclusive
    broken = aggregate_of([pair(n, ANSWER, None, "timeout") for n in range(4)])
    broken.add_counts(dropped=2, green_errors=4)
    report = broken.report()
    assert (report.green_errors, report.dropped, report.compared) == (4, 2, 0)
    assert "green answered none of the mirrored requests" in report.verdict.reasons
    assert any("green failed 4 mirrored requests" in r for r in report.verdict.reasons)


# --- the collector on the memory backend ------------------------------------------------


def oip_request(text: str) -> str:
    return json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    )


def oip_answer(text: str) -> str:
    return json.dumps({"outputs": [{"name": "output", "datatype": "BYTES", "data": [text]}]})


def push(backend: MemoryBackend, name: str, n: int, blue: str, green: str | None) -> None:
    """Queue one mirrored pair as the data plane would (green None: green timed out)."""
    error = None if green is not None else "green timed out"
    body = None if green is None else oip_answer(green)
    request = oip_request(f"in {n}")
    backend.push_pair(name, ShadowPair(f"q{n}", request, oip_answer(blue), body, error, 5.0, 6.0))


class NoAliases:
    """A registry that only moves aliases, which these tests do not look at."""

    def move_aliases(self, *args: object) -> None:
        pass

    def get_prompt_template(self, name: str, version: int) -> str:
        return "{{text}}"

    def register_release(self, name: str, model_uri: str, prompt_uri: str) -> ResolvedRelease:
        raise NotImplementedError


@pytest.fixture
def parts(store: Store) -> tuple[Service, ShadowCollector, MemoryBackend]:
    from bgserve.app.executor import Executor

    backend = MemoryBackend()
    executor = Executor(
        store, backend, NoAliases(), clock=lambda: datetime.now(UTC), lock_timeout=1
    )
    settings = ShadowSettings(Thresholds(), SCORER, min_pairs=10, keep=5)
    collector = ShadowCollector(backend, store, settings)
    analysis = AnalysisSettings(50, 0.01, 0.05, 1.5, 300.0, "hold")
    service = Service(
        store,
        NoAliases(),
        backend,
        executor,
        default_plan=make_plan((10, 100), 1.0, analysis),
        shadow_gate=collector.gate_report,
    )
    service.create_deployment("chat", 1, "alice")
    return service, collector, backend


def pass_golden_gate(service: Service) -> None:
    service.executor.run("chat", "alice", lambda s: record_gate(s, Gate(1, 2, True), {}))


def test_the_collector_parses_and_scores_mirrored_pairs(
    parts: tuple[Service, ShadowCollector, MemoryBackend],
) -> None:
    service, collector, backend = parts
    with pytest.raises(IllegalTransition, match="no green"):
        collector.start_shadow("chat", 100)
    service.stage_green("chat", 2, "alice")
    collector.start_shadow("chat", 100)
    assert isinstance(backend, ShadowTraffic) and backend.shadow_percent("chat") == 100
    for n in range(30):
        push(backend, "chat", n, "yes", "no" if n < 6 else "yes")
    push(backend, "chat", 99, "yes", None)
    backend.push_shadow_counts("chat", dropped=3)
    collector.collect_once()
    report = collector.report("chat")
    assert (report.pairs, report.differing, report.green_errors, report.dropped) == (31, 6, 1, 3)
    assert {p.inputs["text"] for p in report.worst if p.inputs} <= {f"in {n}" for n in range(6)}
    assert collector.stop_shadow("chat") is not None and backend.shadow_percent("chat") == 0


def test_a_failing_shadow_report_closes_the_gate_until_forced(
    parts: tuple[Service, ShadowCollector, MemoryBackend],
) -> None:
    service, collector, backend = parts
    service.stage_green("chat", 2, "alice")
    pass_golden_gate(service)
    collector.start_shadow("chat", 50)
    for n in range(5):
        push(backend, "chat", n, "yes", "completely unrelated answer")
    service.shift("chat", 10, "alice")  # 5 pairs: under the minimum, no gate yet
    for n in range(5, 20):
        push(backend, "chat", n, "yes", "completely unrelated answer")
    with pytest.raises(GateClosed, match="shadow comparison of chat on 20 mirrored") as caught:
        service.shift("chat", 50, "alice")
    numbers = caught.value.details["shadow"]
    assert caught.value.hint == "force" and isinstance(numbers, dict) and numbers["pairs"] == 20
    with pytest.raises(GateClosed):
        service.start_plan("chat", "alice")
    assert service.shift("chat", 0, "alice").state.green_weight == 0  # down is never gated
    assert service.shift("chat", 50, "alice", force=True).state.green_weight == 50
    service.revert("chat", "alice")


def test_the_gate_drains_mirrored_pairs_outside_the_executors_lock(
    parts: tuple[Service, ShadowCollector, MemoryBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, collector, backend = parts
    service.stage_green("chat", 2, "alice")
    pass_golden_gate(service)
    collector.start_shadow("chat", 100)
    drains: list[str] = []
    real = backend.shadow_pairs

    def drain(name: str) -> Any:
        with service.executor.locked(name):  # Conflict if the step held it while draining
            drains.append(name)
        return real(name)

    monkeypatch.setattr(backend, "shadow_pairs", drain)
    for n in range(20):
        push(backend, "chat", n, "yes", "completely unrelated answer")
    with pytest.raises(GateClosed):
        service.shift("chat", 10, "alice")
    assert drains == ["chat"]
    assert service.shift("chat", 10, "alice", force=True).state.green_weight == 10
    assert drains == ["chat"]  # a forced step reads no report


def test_the_shadow_gate_decides_on_the_state_and_report_alone() -> None:
    failing = aggregate_of([pair(n, ANSWER, "something else entirely") for n in range(20)])
    report = failing.report()
    assert report.conclusive and not report.verdict.passed and report.pair == failing.pair
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    with pytest.raises(GateClosed, match="20 mirrored requests"):
        check_shadow_gate(state, report)
    check_shadow_gate(state, None)  # no shadow runs: nothing to say
    other = rollout.stage_green(rollout.create("chat", 1).state, 3).state
    check_shadow_gate(other, report)  # a report on another pair says nothing of this one
    passing = aggregate_of([pair(n, ANSWER, ANSWER) for n in range(20)]).report()
    check_shadow_gate(state, passing)


def test_the_shadow_report_is_a_plan_check_inconclusive_then_its_verdict(
    parts: tuple[Service, ShadowCollector, MemoryBackend],
) -> None:
    service, collector, backend = parts
    stored = service.stage_green("chat", 2, "alice")
    assert collector.check("chat", stored.state) is None  # no shadow for this pair
    collector.start_shadow("chat", 100)
    for n in range(5):
        push(backend, "chat", n, "yes", "completely unrelated answer")
    collector.collect_once()
    state = service.get_deployment("chat").state
    few = collector.check("chat", state)
    assert (
        few is not None and few.outcome is Outcome.INCONCLUSIVE and "5 mirrored pairs" in few.reason
    )
    for n in range(5, 20):
        push(backend, "chat", n, "yes", "completely unrelated answer")
    collector.collect_once()
    failed = collector.check("chat", state)
    assert failed is not None and failed.outcome is Outcome.FAIL
    assert failed.numbers["pairs"] == 20 and failed.numbers["differing"] == 20


def test_staging_a_new_green_resets_the_report_and_stops_mirroring(
    parts: tuple[Service, ShadowCollector, MemoryBackend],
) -> None:
    service, collector, backend = parts
    service.stage_green("chat", 2, "alice")
    collector.start_shadow("chat", 100)
    push(backend, "chat", 1, "a", "b")
    collector.collect_once()
    service.stage_green("chat", 3, "alice")
    collector.collect_once()
    assert backend.shadow_percent("chat") == 0
    with pytest.raises(NotFound, match="no shadow report"):
        collector.report("chat")


def test_max_pairs_stops_mirroring_and_scores_only_keeps_no_text(store: Store) -> None:
    backend = MemoryBackend()
    settings = ShadowSettings(Thresholds(), SCORER, min_pairs=1, keep=5, store_inputs=False)
    collector = ShadowCollector(backend, store, settings)
    from bgserve.app.executor import Executor
    from bgserve.domain import rollout

    executor = Executor(
        store, backend, NoAliases(), clock=lambda: datetime.now(UTC), lock_timeout=1
    )
    executor.create(rollout.create("chat", 1), "alice")
    executor.run("chat", "alice", lambda s: rollout.stage_green(s, 2))
    collector.start_shadow("chat", 100, max_pairs=3)
    for n in range(4):
        push(backend, "chat", n, "secret answer", "secret other")
    collector.collect_once()
    assert backend.shadow_percent("chat") == 0 and collector.percent("chat") == 0
    report = collector.report("chat")
    dumped = report.model_dump_json()
    assert "secret" not in dumped and "in 1" not in dumped and report.pairs == 4


def test_an_unreadable_blue_answer_is_skipped_and_an_unreadable_green_one_is_an_error() -> None:
    good = oip_answer("x")
    assert parse_pair(ShadowPair("a", "{}", "not json", good, None, 1.0, 1.0)) is None
    parsed = parse_pair(ShadowPair("b", "{}", good, "{}", None, 1.0, 1.0))
    assert (
        parsed is not None and parsed.green is None and "unreadable" in (parsed.green_error or "")
    )


# --- the API ----------------------------------------------------------------------------


def build_mirroring(settings: Settings) -> Components:
    parts = build_components(settings, backend=MemoryBackend())
    for n in (1, 2):
        resolved = ResolvedRelease("m", n, "p", n, "bundle", n)
        parts.store.add_release(
            f"r{n}", resolved, f"models:/m/{n}", f"prompts:/p/{n}", datetime.now(UTC)
        )
    return parts


def test_the_shadow_routes_start_report_and_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        home=tmp_path,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_port=0,
        shadow_interval_seconds=10,
    )
    with TestClient(
        create_app(settings, build=build_mirroring), base_url="http://127.0.0.1"
    ) as api:
        parts: Components = api.app.state.components  # type: ignore[attr-defined]
        parts.service.create_deployment("chat", 1, "alice")
        assert api.put("/deployments/chat/shadow", json={"percent": 50}).status_code == 409
        parts.service.stage_green("chat", 2, "alice")
        bad = api.put("/deployments/chat/shadow", json={"percent": 101})
        assert bad.status_code == 422
        bad = api.put(
            "/deployments/chat/shadow",
            json={"percent": 5, "assert": [{"type": "equals", "value": "x"}]},
        )
        assert bad.status_code == 422 and bad.json()["field"] == "assert"
        started = api.put("/deployments/chat/shadow", json={"percent": 25, "max_pairs": 100})
        assert started.status_code == 200 and started.json()["percent"] == 25
        backend: MemoryBackend = parts.backend  # type: ignore[assignment]
        push(backend, "chat", 1, "the answer is yes", "the answer is no")
        parts.shadow.collect_once()
        body = api.get("/deployments/chat/shadow").json()
        assert {
            "percent",
            "pairs",
            "dropped",
            "green_errors",
            "differing",
            "similarity",
            "worst",
            "verdict",
        } <= set(body)
        assert (body["pairs"], body["differing"], body["percent"]) == (1, 1, 25)
        assert body["worst"][0]["inputs"] == {"text": "in 1"}
        assert body["worst"][0]["blue"] == "the answer is yes"
        assert body["similarity"]["mean"] < 1
        check_cli_and_html(api, tmp_path, monkeypatch)
        metrics = api.get("/metrics").text
        assert 'bgserve_shadow_pairs_total{deployment="chat"} 1.0' in metrics
        stopped = api.delete("/deployments/chat/shadow")
        assert stopped.status_code == 200 and stopped.json()["percent"] == 0
        assert backend.shadow_percent("chat") == 0
        assert api.get("/deployments/nope/shadow").status_code == 404


def check_cli_and_html(api: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bgserve shadow NAME --report --html`` against the running app."""

    def through_app(method: str, url: str, **kwargs: Any) -> Any:
        kwargs.pop("timeout", None)
        return api.request(method, url.removeprefix("http://bgserve"), **kwargs)

    monkeypatch.setattr("bgserve.cli.client.httpx.request", through_app)
    page = tmp_path / "shadow.html"
    args = ["shadow", "chat", "--report", "--html", str(page), "--url", "http://bgserve"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output  # the verdict failed: the answers differ
    assert "mirroring 25%" in result.output and "FAILED" not in result.output
    assert "0.848 the answer is [-yes-]{+no+}" in result.output
    html = page.read_text()
    assert "FAILED" in html and "<del>yes</del>" in html and "<ins>no</ins>" in html
    both = CliRunner().invoke(app, ["shadow", "chat", "--report", "--stop"])
    assert both.exit_code == 2 and "exactly one of" in both.output
