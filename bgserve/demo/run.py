"""``bgserve demo``: the whole flow on this machine, in a temporary directory.

A story in five acts, on real slot processes and a real MLflow registry (SQLite):
1. register summarizer v1, v2 and a flaky v3, and two versions of the ``summarize`` prompt;
2. deploy v1 as blue and stage v2 as green: the golden-set comparison catches v2's
   regression and the gate refuses it;
3. stage a prompt-only change instead: it passes, and the rollout engine promotes it step
   by step, analysing green against blue on live traffic at each step;
4. revert to the last good release, instantly;
5. stage the flaky v3: it passes the golden set (its bug is on long texts, which no case
   has), but live analysis catches its errors at the first step and reverts it on its own.
Then print what the live client saw: every failed request came from the flaky green.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bgserve.app.golden_sets import load_golden_set
from bgserve.app.service import Service
from bgserve.cli.tables import comparison_table
from bgserve.compose import Components, build_components
from bgserve.demo.display import DEPLOYMENT, LiveView, Timeline, numbers, sides, summary
from bgserve.demo.models import push_demo_prompts, register_demo_models, register_flaky_model
from bgserve.demo.traffic import TrafficClient, TrafficCounts
from bgserve.domain.plan import Plan
from bgserve.errors import GateClosed
from bgserve.evaluation.comparison import ComparisonReport
from bgserve.settings import Settings
from bgserve.store import StoredDeployment

PRINCIPAL = "demo"
_LONG = (
    "Long inputs are where the flaky model fails: this one has well over two hundred "
    "characters, because it goes on to describe, in some detail, how a release that "
    "passed every golden case can still fail on what users actually send, which is why "
    "bgserve keeps watching green after the gate has opened."
)
LIVE_TEXTS = (
    "Blue-green deployment keeps two releases running side by side. Traffic moves "
    "from one to the other in steps, and can move back at any moment.",
    "The gate compares outputs before traffic moves. Live analysis watches what follows.",
    _LONG,
    "Each step bakes for a while. Then green is compared with blue on the live requests.",
    "A revert puts all traffic back on blue at once. The standby makes it instant.",
    "Releases pair a model version with a prompt version. They move together.",
    _LONG + " It says so twice.",
    "The history records who changed what, and when.",
    "Every slot answers under the deployment's name.",
)
"""The live client's inputs, in turn: two in nine are over the flaky model's 200
characters. Nine is prime to the weighted router's cycles (10 at 10%, 2 at 50%), so
green sees every input, not the same few."""
T = TypeVar("T")


def demo_settings(home: Path) -> Settings:
    """Settings for a throw-away run: everything under ``home``, free ports."""
    mlflow_uri = f"sqlite:///{home / 'mlflow.db'}"
    return Settings(
        home=home,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_registry_uri=mlflow_uri,
        data_port=0,
        # The demo's story is about outputs; on a busy machine its instant model's
        # latencies are mostly noise, so only a gross slowdown may close the gate.
        compare_thresholds={"max_latency_ratio_p50": 10.0, "max_latency_ratio_p95": 10.0},
        plan_steps=[10, 50, 100],
        plan_bake_s=2.0,
        plan_min_requests=20,
        engine_interval_seconds=0.1,
    )


def timed(
    console: Console,
    timeline: Timeline,
    what: str,
    action: Callable[[], T],
    judge: Callable[[T], str | None] | None = None,
) -> T:
    """Run ``action`` under a spinner saying ``what``; its time goes on the timeline.

    ``judge`` says what went otherwise than the story tells (None: as told): the step is
    then printed with ✗ and that reason, and the demo ends non-zero.
    """
    started = time.perf_counter()
    with console.status(what + " ..."):
        result = action()
    took = time.perf_counter() - started
    timeline.record(what, took)
    problem = None if judge is None else judge(result)
    if problem is None:
        console.print(f"[green]✓[/green] {what} [dim]({took:.1f}s)[/dim]")
    else:
        timeline.broken.append(f"{what}: {problem}")
        console.print(f"[red]✗[/red] {what} [dim]({took:.1f}s)[/dim]: {problem}", highlight=False)
    return result


def cut_over_to(service: Service, release_id: int, deployment: str) -> Callable[..., str | None]:
    """A judge of a plan that should end with ``release_id`` as blue: None if it did,
    else what happened instead (the last event's reason, with the analysis' numbers)."""

    def judge(done: StoredDeployment) -> str | None:
        state = done.state
        if state.blue == release_id and state.green is None:
            return None
        last = service.history(deployment)[-1]
        return f"not promoted: {last.action}: {last.reason}"

    return judge


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    """A temporary directory for one demo, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="bgserve-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(keep: bool = False, console: Console | None = None) -> int:
    """Run the demo; 0 when the live client saw no failed request."""
    console = console or Console()
    with workdir(keep) as home:
        settings = demo_settings(home)
        timeline = Timeline()
        console.rule("[bold]bgserve demo[/bold]")
        console.print(f"working in {home}")
        timed(
            console,
            timeline,
            "register summarizer v1, v2, flaky v3 and prompt summarize v1, v2",
            lambda: _register(settings),
        )
        parts = build_components(settings)
        try:
            parts.start()
            counts = _story(console, timeline, parts)
        finally:
            timed(console, timeline, "stop slots and router", parts.close)
        return summary(console, timeline, counts, home if keep else None)


def _register(settings: Settings) -> None:
    uri = settings.mlflow_tracking_uri
    register_demo_models(uri, settings.mlflow_registry_uri)
    register_flaky_model(uri, settings.mlflow_registry_uri)
    push_demo_prompts(uri, settings.mlflow_registry_uri)


def _story(console: Console, timeline: Timeline, parts: Components) -> TrafficCounts:
    service = parts.service
    releases = [
        service.register_release(name, model, prompt, PRINCIPAL)
        for name, model, prompt in (
            ("summarizer-v1", "models:/summarizer/1", "prompts:/summarize/1"),
            ("summarizer-v2", "models:/summarizer/2", "prompts:/summarize/2"),
            ("reworded", "models:/summarizer/1", "prompts:/summarize/2"),
            ("flaky", "models:/summarizer/3", "prompts:/summarize/1"),
        )
    ]
    blue, bad, good, flaky = (r.id for r in releases)
    console.print(f"releases: {', '.join(f'{r.id}={r.name}' for r in releases)}")
    timed(
        console,
        timeline,
        f"deploy release {blue} as blue (slot process)",
        lambda: service.create_deployment(DEPLOYMENT, blue, PRINCIPAL),
    )
    url = parts.backend.data_plane_url(DEPLOYMENT)
    assert url is not None  # the local backend always has a data plane
    with TrafficClient(url, [{"text": text} for text in LIVE_TEXTS]) as traffic:
        _gate_refuses(console, timeline, parts, bad)
        reworded = "stage release {id} (prompt reworded, model v1)"
        _compare(console, timeline, parts, good, reworded, should_pass=True)
        _promote_and_revert(console, timeline, parts, traffic, (blue, good))
        # The flaky model passes the golden set: its bug is on long texts, which no case has.
        flaky_label = "stage release {id} (flaky model v3)"
        _compare(console, timeline, parts, flaky, flaky_label, should_pass=True)
        _caught_live(console, timeline, parts, traffic)
        return traffic.stop()


def _compare(
    console: Console,
    timeline: Timeline,
    parts: Components,
    release_id: int,
    label: str,
    *,
    should_pass: bool,
) -> bool:
    service = parts.service
    timed(
        console,
        timeline,
        label.format(id=release_id) + " as green at 0%",
        lambda: service.stage_green(DEPLOYMENT, release_id, PRINCIPAL),
    )
    cases = load_golden_set("summarize", parts.settings.prompts_dir)

    def as_told(compared: tuple[object, ComparisonReport]) -> str | None:
        if compared[1].verdict.passed == should_pass:
            return None
        verdict = "failed" if should_pass else "passed"
        return f"the golden comparison {verdict}: " + "; ".join(compared[1].verdict.reasons)

    _, report = timed(
        console,
        timeline,
        f"compare blue and green on {len(cases)} golden cases",
        lambda: parts.comparer.compare(DEPLOYMENT, cases, PRINCIPAL),
        as_told,
    )
    console.print(comparison_table(report))
    return report.verdict.passed


def _gate_refuses(console: Console, timeline: Timeline, parts: Components, release_id: int) -> None:
    label = "stage release {id} (model v2)"
    _compare(console, timeline, parts, release_id, label, should_pass=False)
    try:
        parts.service.shift(DEPLOYMENT, 10, PRINCIPAL)
    except GateClosed as exc:
        console.print(f"[yellow]gate closed, as it should be:[/yellow] {exc.message}")
        return
    timeline.broken.append("the gate let a regressing release through")
    console.print("[red]✗ the gate let a regressing release through[/red]")


def _promote_and_revert(
    console: Console,
    timeline: Timeline,
    parts: Components,
    traffic: TrafficClient,
    releases: tuple[int, int],
) -> None:
    service = parts.service
    blue, green = releases

    def on_step(stored: StoredDeployment) -> None:
        state = stored.state
        timeline.weights = f"blue {state.blue_weight}% / green {state.green_weight}%"
        if state.green is None:
            timeline.weights = "blue 100% (cutover done)"
        timeline.record(f"step to {timeline.weights}", 0.0)

    timeline.weights = "blue 100% / green 0%"
    with Live(Group(LiveView(traffic, timeline)), console=console, refresh_per_second=4):
        timed(
            console,
            timeline,
            "promote 10 → 50 → 100, live analysis at each step",
            lambda: follow_plan(service, on_step),
            cut_over_to(service, green, DEPLOYMENT),
        )
        time.sleep(1.5)
        timed(
            console,
            timeline,
            "revert to the last good release",
            lambda: service.revert(DEPLOYMENT, PRINCIPAL),
            lambda done: None if done.state.blue == blue else "blue is not the last good release",
        )
        timeline.weights = "blue 100% (reverted)"
        time.sleep(1.5)
    if not console.is_terminal:
        # Off a terminal, rich prints the live table's last frame without ending its line.
        console.line()


def follow_plan(
    service: Service,
    on_step: Callable[[StoredDeployment], None],
    plan: Plan | None = None,
    deployment: str = DEPLOYMENT,
) -> StoredDeployment:
    """Start ``plan`` (the settings' default when None) and follow it while the rollout
    engine walks it, until it ends."""
    stored = service.start_plan(deployment, PRINCIPAL, plan)
    on_step(stored)
    seen = (stored.state.green, stored.state.green_weight)
    while stored.state.plan is not None:
        time.sleep(0.1)
        stored = service.get_deployment(deployment)
        now = (stored.state.green, stored.state.green_weight)
        if now != seen:
            seen = now
            on_step(stored)
    return stored


def _caught_live(
    console: Console, timeline: Timeline, parts: Components, traffic: TrafficClient
) -> None:
    service = parts.service
    timeline.weights = "blue 100% / green 0%"
    with Live(Group(LiveView(traffic, timeline)), console=console, refresh_per_second=4):
        timed(
            console,
            timeline,
            "promote the flaky release under live traffic",
            lambda: follow_plan(service, lambda s: None),
            lambda done: _not_caught(service, done),
        )
    if not console.is_terminal:
        console.line()
    last = service.history(DEPLOYMENT)[-1]
    if last.action != "auto-revert":
        return  # said with ✗ by the judge above
    timeline.record("automatic revert by live analysis", 0.0)
    console.print(f"[yellow]reverted automatically:[/yellow] {last.reason}", highlight=False)
    checks = ((last.details or {}).get("analysis") or {}).get("checks", [])
    table = Table("check", "outcome", "blue", "green", "numbers", title="live analysis")
    for check in checks:
        blue, green = sides(check)
        table.add_row(check["name"], check["outcome"], blue, green, numbers(check))
    console.print(table)


def _not_caught(service: Service, done: StoredDeployment) -> str | None:
    """None when live analysis reverted the flaky release; else what happened instead."""
    last = service.history(DEPLOYMENT)[-1]
    if last.action == "auto-revert" and done.state.green_weight == 0:
        return None
    return f"live analysis did not catch the flaky release: {last.action}: {last.reason}"
