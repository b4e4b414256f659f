"""Terminal rendering of a comparison report with rich: summary, verdict, failing cases."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bgserve.domain.comparison import CaseReport, ComparisonReport, SlotReport

MAX_CELL = 60
MAX_ROWS = 20


def _num(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _truncate(text: str, limit: int = MAX_CELL) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def summary_table(report: ComparisonReport) -> Table:
    """Errors, assertions and latency of blue and green side by side."""
    s = report.summary
    table = Table(title="Comparison", show_header=True)
    table.add_column("")
    table.add_column("blue", justify="right")
    table.add_column("green", justify="right")
    rows = [
        ("errors", f"{s.blue.errors}", f"{s.green.errors}"),
        (
            "assertion pass rate",
            _num(s.blue.assertion_pass_rate),
            _num(s.green.assertion_pass_rate),
        ),
        (
            "latency p50",
            _num(s.blue.latency_p50_ms, "{:.1f} ms"),
            _num(s.green.latency_p50_ms, "{:.1f} ms"),
        ),
        (
            "latency p95",
            _num(s.blue.latency_p95_ms, "{:.1f} ms"),
            _num(s.green.latency_p95_ms, "{:.1f} ms"),
        ),
    ]
    if s.schema_valid is not None:
        sides = (s.schema_valid.blue, s.schema_valid.green)
        shown = [
            "-" if side is None else f"{side.valid} of {side.checked} ({_num(side.rate)})"
            for side in sides
        ]
        rows.append(("schema-valid", shown[0], shown[1]))
    for row in rows:
        table.add_row(*row)
    return table


def pair_table(report: ComparisonReport) -> Table:
    """How alike the two slots' answers are."""
    s = report.summary
    table = Table(title=f"Blue vs green ({report.scorer} scorer)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("cases (answered by both)", f"{s.cases} ({s.compared})")
    table.add_row("mean similarity", _num(s.mean_similarity))
    table.add_row("agreement rate", _num(s.agreement_rate))
    table.add_row("exact matches", f"{s.exact_matches}")
    return table


def verdict_text(report: ComparisonReport) -> Text:
    """PASSED, or FAILED followed by every reason."""
    if report.verdict.passed:
        return Text("PASSED", style="bold green")
    text = Text("FAILED", style="bold red")
    for reason in report.verdict.reasons:
        text.append(f"\n  - {reason}", style="red")
    return text


def _output(slot: SlotReport) -> Text:
    if not slot.answered:
        return Text(_truncate(f"error: {slot.error}"), style="red")
    return Text(_truncate(slot.output or ""))


def failing_table(cases: list[CaseReport]) -> Table:
    """The failing cases, at most ``MAX_ROWS`` of them, outputs truncated."""
    table = Table(title=f"Cases with problems ({len(cases)})", show_lines=True)
    for column in ("case", "similarity", "problems", "blue", "green"):
        table.add_column(column, overflow="fold")
    for case in cases[:MAX_ROWS]:
        table.add_row(
            case.id,
            _num(case.similarity),
            _truncate("; ".join(case.problems), 2 * MAX_CELL),
            _output(case.blue),
            _output(case.green),
        )
    if len(cases) > MAX_ROWS:
        table.caption = f"{len(cases) - MAX_ROWS} more not shown: see the HTML report"
    return table


def comparison_table(report: ComparisonReport) -> RenderableType:
    """Summary table, verdict, and the failing cases if there are any."""
    parts: list[RenderableType] = [
        summary_table(report),
        pair_table(report),
        verdict_text(report),
    ]
    failing = report.failing_cases()
    if failing:
        parts.append(failing_table(failing))
    return Group(*parts)
