"""The parts of the HTML report about the quality signals: where the comparison is in
MLflow, the rates with their intervals, tokens and cost, the judge, the MLflow scorers.
Every text is HTML-escaped by the caller or here."""

from __future__ import annotations

from html import escape

from bgserve.domain.comparison import ComparisonReport
from bgserve.domain.confidence import Interval
from bgserve.domain.schema_rates import SchemaSummary, SideSchema
from bgserve.domain.verdict import Summary

__all__ = ["mlflow_line", "quality_rows", "schema_rows"]


def _num(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def mlflow_line(report: ComparisonReport) -> str:
    """A paragraph naming the MLflow run (a link when there is a UI), or the failure."""
    run = report.mlflow
    if run is None:
        return ""
    if run.error is not None:
        return f"<p class='error'>not logged to MLflow: {escape(run.error)}</p>"
    where = escape(f"MLflow run {run.run_id} in experiment {run.experiment}")
    if run.url:
        return f"<p><a href='{escape(run.url)}'>{where}</a></p>"
    return f"<p>{where}</p>"


def _interval(interval: Interval | None) -> str:
    return "n/a" if interval is None else interval.shown()


def quality_rows(s: Summary) -> list[tuple[str, str]]:
    """Summary rows (label, text) for the intervals, tokens, judge and scorers."""
    rows = [
        ("assertion pass rate blue", _interval(s.blue.assertion_interval)),
        ("assertion pass rate green", _interval(s.green.assertion_interval)),
        ("green minus blue", _interval(s.assertion_difference)),
    ]
    if s.tokens is not None:
        kind = " (approximate)" if s.tokens.approximate else ""
        rows.append(
            (
                "output tokens blue / green" + kind,
                f"{_num(s.tokens.blue_mean, '{:.1f}')} / {_num(s.tokens.green_mean, '{:.1f}')}"
                f" (ratio {_num(s.tokens.ratio, '{:.2f}')})",
            )
        )
        if s.tokens.price_per_1k is not None:
            cost = f"{_num(s.tokens.blue_cost_per_request, '{:.6f}')} / "
            rows.append(
                (
                    "cost a request blue / green",
                    cost + _num(s.tokens.green_cost_per_request, "{:.6f}"),
                )
            )
    if s.judge is not None:
        j = s.judge
        rows.append(
            (
                f"judge {j.model}" + (" (both orders)" if j.both_orders else ""),
                f"green wins {j.wins}, loses {j.losses}, ties {j.ties}, errors {j.errors}; "
                f"win rate {_interval(j.interval)}",
            )
        )
    rows += schema_rows(s.schema_valid)
    for scorer in s.scorers:
        rows.append(
            (
                f"scorer {scorer.name} blue / green",
                f"{_num(scorer.blue_mean)} / {_num(scorer.green_mean)} over {scorer.cases} "
                f"cases; difference {_interval(scorer.difference)}",
            )
        )
    return rows


def _schema_side(side: SideSchema | None) -> str:
    if side is None:
        return "no response_format"
    text = f"{side.valid} of {side.checked} valid, rate {_interval(side.interval)}"
    if side.invalid_cases:
        more = len(side.invalid_cases) - 10
        text += "; invalid: " + ", ".join(side.invalid_cases[:10])
        text += f" and {more} more" if more > 0 else ""
    return text


def schema_rows(schema: SchemaSummary | None) -> list[tuple[str, str]]:
    """Rows for the schema-valid rate of each side, none when no prompt has a schema."""
    if schema is None:
        return []
    return [
        ("schema-valid blue", _schema_side(schema.blue)),
        ("schema-valid green", _schema_side(schema.green)),
    ]
