"""What ``bgserve demo --llm`` shows: the live chat view, the plan's analysis checks, and
the summary with time to first token and tokens/s per slot (the story itself is
:mod:`bgserve.demo.llm_story`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from bgserve.demo.display import Timeline, story_outcome
from bgserve.demo.llm_traffic import ChatCounts, ChatTraffic, SlotTimes
from bgserve.store.records import Event


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "-"


def _rate(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


class ChatLiveView:
    """A rich renderable rebuilt at each refresh from the chat client's counts."""

    def __init__(self, traffic: ChatTraffic, timeline: Timeline) -> None:
        self.traffic = traffic
        self.timeline = timeline

    def __rich__(self) -> Table:
        counts = self.traffic.snapshot()
        title = f"streamed chat on {self.traffic.deployment} — {self.timeline.weights}"
        table = Table(title=title, min_width=len(title))
        for column in ("slot", "answers", "TTFT p50", "tokens/s"):
            table.add_column(column, justify="left" if column == "slot" else "right")
        for slot in ("blue", "green"):
            times = counts.per_slot.get(slot, SlotTimes())
            table.add_row(
                slot, str(times.answers), _ms(times.ttft_p(0.5)), _rate(times.tokens_per_s)
            )
        table.add_row("[red]failed[/red]", str(len(counts.failures)), "", "")
        return table


def print_checks(console: Console, history: Sequence[Event], green: int) -> None:
    """Each live analysis the rollout engine recorded (release ``green`` being promoted):
    green's weight, the outcome and what follows, then one line per check with its
    outcome and its numbers in words."""
    for event in history:
        analysis = (event.details or {}).get("analysis")
        if not analysis:
            continue
        weight = (event.weights_before or {}).get(str(green), "?")
        outcome = analysis.get("outcome", "?")
        then = {"inconclusive": "keep baking", "pass": "next step", "fail": "revert"}
        console.print(
            f"live analysis at green {weight}%: {outcome} ({then.get(outcome, event.action)})",
            highlight=False,
        )
        for check in analysis.get("checks", []):
            console.print(
                f"  {check.get('name')}: {check.get('outcome')} — {check.get('reason', '')}",
                highlight=False,
                markup=False,
            )


def slot_lines(counts: ChatCounts) -> list[str]:
    """One line per slot: answers, TTFT p50 and p95, and generation speed."""
    lines = []
    for slot, times in sorted(counts.per_slot.items()):
        lines.append(
            f"slot {slot}: {times.answers} streamed answers, TTFT p50 {_ms(times.ttft_p(0.5))}, "
            f"p95 {_ms(times.ttft_p(0.95))}, {_rate(times.tokens_per_s)} tokens/s"
        )
    return lines


def chat_summary(console: Console, timeline: Timeline, counts: ChatCounts) -> int:
    """Print the timeline and what the live client measured; 0 when no request failed."""
    console.rule("[bold]summary[/bold]")
    steps = Table("at (s)", "step", "took (s)")
    for what, at, took in timeline.steps:
        steps.add_row(f"{at:.1f}", what, f"{took:.2f}" if took else "")
    console.print(steps)
    for line in slot_lines(counts):
        console.print(line, highlight=False)
    for release, n in sorted(counts.per_release.items()):
        console.print(f"release {release}: {n} answers", highlight=False)
    for failure in counts.failures[:5]:
        console.print(failure, style="red", highlight=False, markup=False)
    console.print(
        f"failed requests: {len(counts.failures)} of {counts.total} streamed chat completions",
        highlight=False,
    )
    return story_outcome(console, timeline, not counts.failures and counts.answered > 0)
