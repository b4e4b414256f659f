"""``bgserve demo``: the whole flow on this machine, in a temporary directory.

A story in four acts, on real slot processes and a real MLflow registry (SQLite):
1. register summarizer v1 and v2 and two versions of the ``summarize`` prompt;
2. deploy v1 as blue and stage v2 as green: the golden-set comparison catches v2's
   regression and the gate refuses it;
3. stage a prompt-only change instead: it passes, and is promoted step by step while
   a live client keeps calling the data plane;
4. revert, and print what the client saw.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bgserve.app.golden_sets import load_golden_set
from bgserve.cli.tables import comparison_table
from bgserve.compose import Components, build_components
from bgserve.demo.models import push_demo_prompts, register_demo_models
from bgserve.demo.traffic import TrafficClient, TrafficCounts
from bgserve.errors import GateClosed
from bgserve.settings import Settings
from bgserve.store import StoredDeployment

DEPLOYMENT = "summarize"
PRINCIPAL = "demo"
LIVE_TEXT = (
    "Blue-green deployment keeps two releases running side by side. Traffic moves "
    "from one to the other in steps, and can move back at any moment."
)
T = TypeVar("T")


@dataclass
class Timeline:
    """What the demo did and when, for the live display and the summary."""

    started: float = field(default_factory=time.perf_counter)
    steps: list[tuple[str, float, float]] = field(default_factory=list)  # (what, at, took)
    weights: str = "-"

    def record(self, what: str, took: float) -> None:
        self.steps.append((what, time.perf_counter() - self.started, took))


class LiveView:
    """A rich renderable rebuilt at each refresh from the traffic counts and weights."""

    def __init__(self, traffic: TrafficClient, timeline: Timeline) -> None:
        self.traffic = traffic
        self.timeline = timeline

    def __rich__(self) -> Table:
        counts = self.traffic.snapshot()
        table = Table(title=f"live traffic on {DEPLOYMENT} — weights {self.timeline.weights}")
        table.add_column("slot")
        table.add_column("requests answered", justify="right")
        for slot in ("blue", "green"):
            table.add_row(slot, str(counts.per_slot.get(slot, 0)))
        table.add_row("[red]failed[/red]", str(len(counts.failures)))
        return table


def demo_settings(home: Path) -> Settings:
    """Settings for a throw-away run: everything under ``home``, free ports."""
    mlflow_uri = f"sqlite:///{home / 'mlflow.db'}"
    return Settings(
        home=home,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_registry_uri=mlflow_uri,
        data_port=0,
        promote_step_pause_seconds=2.0,
        promote_steps=[10, 50, 100],
    )


def _timed(console: Console, timeline: Timeline, what: str, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    with console.status(what + " ..."):
        result = action()
    took = time.perf_counter() - started
    timeline.record(what, took)
    console.print(f"[green]✓[/green] {what} [dim]({took:.1f}s)[/dim]")
    return result


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bgserve-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(keep: bool = False, console: Console | None = None) -> int:
    """Run the demo; 0 when the live client saw no failed request."""
    console = console or Console()
    with _workdir(keep) as home:
        settings = demo_settings(home)
        timeline = Timeline()
        console.rule("[bold]bgserve demo[/bold]")
        console.print(f"working in {home}")
        _timed(
            console,
            timeline,
            "register summarizer v1, v2 and prompt summarize v1, v2",
            lambda: _register(settings),
        )
        parts = build_components(settings)
        try:
            parts.start()
            counts = _story(console, timeline, parts)
        finally:
            _timed(console, timeline, "stop slots and router", parts.close)
        return _summary(console, timeline, counts, home if keep else None)


def _register(settings: Settings) -> None:
    uri = settings.mlflow_tracking_uri
    register_demo_models(uri, settings.mlflow_registry_uri)
    push_demo_prompts(uri, settings.mlflow_registry_uri)


def _story(console: Console, timeline: Timeline, parts: Components) -> TrafficCounts:
    service = parts.service
    releases = [
        service.register_release(name, model, prompt, PRINCIPAL)
        for name, model, prompt in (
            ("summarizer-v1", "models:/summarizer/1", "prompts:/summarize/1"),
            ("summarizer-v2", "models:/summarizer/2", "prompts:/summarize/2"),
            ("reworded", "models:/summarizer/1", "prompts:/summarize/2"),
        )
    ]
    blue, bad, good = (r.id for r in releases)
    console.print(f"releases: {', '.join(f'{r.id}={r.name}' for r in releases)}")
    _timed(
        console,
        timeline,
        f"deploy release {blue} as blue (slot process)",
        lambda: service.create_deployment(DEPLOYMENT, blue, PRINCIPAL),
    )
    url = parts.backend.data_plane_url(DEPLOYMENT)
    assert url is not None  # the local backend always has a data plane
    with TrafficClient(url, {"text": LIVE_TEXT}) as traffic:
        _gate_refuses(console, timeline, parts, bad)
        _compare(console, timeline, parts, good, "stage release {id} (prompt reworded, model v1)")
        _promote_and_revert(console, timeline, parts, traffic)
        return traffic.stop()


def _compare(
    console: Console, timeline: Timeline, parts: Components, release_id: int, label: str
) -> bool:
    service = parts.service
    _timed(
        console,
        timeline,
        label.format(id=release_id) + " as green at 0%",
        lambda: service.stage_green(DEPLOYMENT, release_id, PRINCIPAL),
    )
    cases = load_golden_set("summarize", parts.settings.prompts_dir)
    _, report = _timed(
        console,
        timeline,
        f"compare blue and green on {len(cases)} golden cases",
        lambda: parts.comparer.compare(DEPLOYMENT, cases, PRINCIPAL),
    )
    console.print(comparison_table(report))
    return report.verdict.passed


def _gate_refuses(console: Console, timeline: Timeline, parts: Components, release_id: int) -> None:
    _compare(console, timeline, parts, release_id, "stage release {id} (model v2)")
    try:
        parts.service.shift(DEPLOYMENT, 10, PRINCIPAL)
    except GateClosed as exc:
        console.print(f"[yellow]gate closed, as it should be:[/yellow] {exc.message}")
        return
    console.print("[red]the gate let a regressing release through[/red]")


def _promote_and_revert(
    console: Console, timeline: Timeline, parts: Components, traffic: TrafficClient
) -> None:
    service = parts.service

    def on_step(stored: StoredDeployment) -> None:
        state = stored.state
        timeline.weights = f"blue {state.blue_weight}% / green {state.green_weight}%"
        if state.green is None:
            timeline.weights = "blue 100% (cutover done)"
        timeline.record(f"step to {timeline.weights}", 0.0)

    timeline.weights = "blue 100% / green 0%"
    with Live(Group(LiveView(traffic, timeline)), console=console, refresh_per_second=4):
        _timed(
            console,
            timeline,
            "promote step by step 10 → 50 → 100",
            lambda: service.promote_plan(DEPLOYMENT, PRINCIPAL, on_step=on_step),
        )
        time.sleep(1.5)
        _timed(
            console,
            timeline,
            "revert to the last good release",
            lambda: service.revert(DEPLOYMENT, PRINCIPAL),
        )
        timeline.weights = "blue 100% (reverted)"
        time.sleep(1.5)
    if not console.is_terminal:
        # Off a terminal, rich prints the live table's last frame without ending its line.
        console.line()


def _summary(console: Console, timeline: Timeline, counts: TrafficCounts, kept: Path | None) -> int:
    console.rule("[bold]summary[/bold]")
    steps = Table("at (s)", "step", "took (s)")
    for what, at, took in timeline.steps:
        steps.add_row(f"{at:.1f}", what, f"{took:.2f}" if took else "")
    console.print(steps)
    served = Table("answered by", "requests")
    for slot, n in sorted(counts.per_slot.items()):
        served.add_row(f"slot {slot}", str(n))
    for release, n in sorted(counts.per_release.items()):
        served.add_row(f"release {release}", str(n))
    served.add_row("[bold]failed requests[/bold]", str(len(counts.failures)))
    console.print(served)
    for failure in counts.failures[:5]:
        console.print(f"[red]{failure}[/red]")
    if kept:
        _print_kept(console, kept)
    console.print(f"failed requests: {len(counts.failures)} of {counts.total}")
    return 0 if not counts.failures else 1


def _print_kept(console: Console, home: Path) -> None:
    """Say how to point bgserve at what the demo left: its registry and its state."""
    console.print(f"files kept in {home}; to look around, point bgserve at them:", markup=False)
    console.print(
        f"  export BGSERVE_HOME={home} MLFLOW_TRACKING_URI=sqlite:///{home / 'mlflow.db'}\n"
        "  bgserve serve        # restores the demo's deployment, then: bgserve status",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
