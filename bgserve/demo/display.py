"""What ``bgserve demo`` shows: the live traffic view, the timeline, the analysis table and
the summary (the story itself is :mod:`bgserve.demo.run`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bgserve.cli.plan_view import latency_sides
from bgserve.demo.traffic import TrafficClient, TrafficCounts

DEPLOYMENT = "summarize"
FLAKY_RELEASE = 4  # the fourth release the story registers


@dataclass
class Timeline:
    """What the demo did and when, for the live display and the summary."""

    started: float = field(default_factory=time.perf_counter)
    steps: list[tuple[str, float, float]] = field(default_factory=list)  # (what, at, took)
    weights: str = "-"
    broken: list[str] = field(default_factory=list)  # what went otherwise than told

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


def sides(check: dict[str, object]) -> tuple[str, str]:
    if check.get("name") == "error_rate":
        blue = f"{check.get('blue_errors')}/{check.get('blue_requests')}"
        return blue, f"{check.get('green_errors')}/{check.get('green_requests')}"
    if "ratio" in check and check.get("name") != "output_tokens":
        blue_ms, green_ms = latency_sides(check)
        return f"{blue_ms} ms", f"{green_ms} ms"
    return "", ""


def numbers(check: dict[str, object]) -> str:
    if "p_value" in check:
        return f"p={float(str(check['p_value'])):.2g}"
    if "ratio" in check:
        return f"{check['ratio']}x"
    return str(check.get("reason", ""))


def summary(console: Console, timeline: Timeline, counts: TrafficCounts, kept: Path | None) -> int:
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
    unexpected = [f for f in counts.failures if f.release != str(FLAKY_RELEASE)]
    flaky, others = len(counts.failures) - len(unexpected), len(unexpected)
    # Failures nobody expected are the ones to read: show them rather than the flaky ones.
    for failure in unexpected[:20] if unexpected else counts.failures[:5]:
        console.print(f"[red]{failure}[/red]", highlight=False)
    if kept:
        print_kept(console, kept)
    console.print(
        f"failed requests: {len(counts.failures)} of {counts.total}; "
        f"{flaky} answered by the flaky green before its automatic revert, "
        f"{others} elsewhere"
    )
    return story_outcome(console, timeline, others == 0)


def story_outcome(console: Console, timeline: Timeline, traffic_ok: bool) -> int:
    """0 when the story went as told and the live client's requests did; else say what
    did not, and 1."""
    for problem in timeline.broken:
        console.print(f"[red]✗ not as told:[/red] {problem}", highlight=False)
    if not traffic_ok:
        console.print("[red]✗ the live client saw failed requests it should not have[/red]")
    return 0 if traffic_ok and not timeline.broken else 1


def print_kept(console: Console, home: Path) -> None:
    """Say how to point bgserve at what the demo left: its registry and its state."""
    console.print(f"files kept in {home}; to look around, point bgserve at them:", markup=False)
    console.print(
        f"  export BGSERVE_HOME={home} MLFLOW_TRACKING_URI=sqlite:///{home / 'mlflow.db'}\n"
        "  bgserve serve        # restores the demo's deployment, then: bgserve status",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
