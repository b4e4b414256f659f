"""The parts of the HTML report about the quality signals: where the comparison is in
MLflow, the rates with their intervals, tokens and cost, the judge, the MLflow scorers.
Every text is HTML-escaped by the caller or here."""

from __future__ import annotations

from html import escape

from bgserve.domain.comparison import ComparisonReport
from bgserve.domain.confidence import Interval
from bgserve.domain.verdict import Summary

__all__ = ["mlflow_line", "quality_rows"]


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
    for scorer in s.scorers:
        rows.append(
            (
                f"scorer {scorer.name} blue / green",
                f"{_num(scorer.blue_mean)} / {_num(scorer.green_mean)} over {scorer.cases} "
                f"cases; difference {_interval(scorer.difference)}",
            )
        )
    return rows
