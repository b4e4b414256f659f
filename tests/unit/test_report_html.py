"""The HTML report (escaping, order, highlighted differences) and the terminal rendering."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from bgserve.cli.tables import comparison_table
from bgserve.evaluation.comparison import ComparisonReport, SlotResult, compare
from bgserve.evaluation.golden import parse_cases
from bgserve.report_html import render_html, word_diff


def ok(output: str, latency_ms: float = 10) -> SlotResult:
    return SlotResult(output=output, latency_ms=latency_ms)


def sample() -> ComparisonReport:
    cases = parse_cases(
        [
            {"id": "same", "inputs": {"text": "a"}},
            {
                "id": "xss<b>",
                "inputs": {"text": "<img src=x>"},
                "assert": [{"type": "contains", "value": "<script>alert(1)"}],
            },
            {"id": "down", "inputs": {}},
        ]
    )
    blue = {"same": ok("one two"), "xss<b>": ok("<script>alert(1)</script> hi"), "down": ok("fine")}
    green = {
        "same": ok("one two"),
        "xss<b>": ok("<script>alert(2)</script> hi"),
        "down": SlotResult(output=None, latency_ms=30000, error="timeout <after> 30 s"),
    }
    return compare(cases, blue, green)


def test_everything_from_cases_and_slots_is_escaped() -> None:
    page = render_html(sample(), "green <vs> blue")
    assert "<script" not in page
    assert "&lt;script&gt;alert(" in page
    assert "xss&lt;b&gt;" in page
    assert "&lt;img src=x&gt;" in page
    assert "timeout &lt;after&gt; 30 s" in page
    assert "<title>green &lt;vs&gt; blue</title>" in page


def test_page_is_self_contained() -> None:
    page = render_html(sample(), "t")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert not re.search(r"<link|<img|src=['\"]|https?://", page)


def test_failing_cases_come_first_and_verdict_is_on_top() -> None:
    page = render_html(sample(), "t")
    order = [page.index(f"<h3>{name}") for name in ("xss&lt;b&gt;", "down", "same")]
    assert order == sorted(order)
    assert page.index("FAILED") < page.index("<h2>Summary</h2>") < order[0]
    assert "green failed 1 of 3 cases (error rate 0.33 is above 0.00): down" in page
    assert "(2 of 3 with problems, listed first)" in page


def test_changed_words_are_marked_on_each_side() -> None:
    blue, green = word_diff("the <cat> sat down", "the <dog> sat")
    assert blue == "the &lt;<del>cat</del>&gt; sat<del> down</del>"
    assert green == "the &lt;<ins>dog</ins>&gt; sat"
    assert word_diff("same", "same") == ("same", "same")


def test_the_diff_is_in_the_page() -> None:
    page = render_html(sample(), "t")
    assert "alert(<del>1</del>)" in page
    assert "alert(<ins>2</ins>)" in page


def test_terminal_rendering_shows_verdict_reasons_and_failing_cases() -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(comparison_table(sample()))
    text = console.export_text()
    assert "FAILED" in text
    assert "green failed 1 of 3 cases (error rate 0.33 is above 0.00): down" in text
    assert "Cases with problems (2)" in text
    assert "error: timeout <after> 30 s" in text
    assert "same" not in text.split("Cases with problems")[1]


def test_the_report_shows_the_mlflow_run_intervals_and_an_escaped_run_error() -> None:
    from bgserve.evaluation.comparison import LoggedRun

    logged = sample().model_copy(
        update={
            "mlflow": LoggedRun(
                run_id="abc123",
                experiment="bgserve/chat",
                url="http://mlflow:5000/#/experiments/1/runs/abc123",
            )
        }
    )
    page = render_html(logged, "t")
    assert "<a href='http://mlflow:5000/#/experiments/1/runs/abc123'>" in page
    assert "MLflow run abc123 in experiment bgserve/chat" in page
    assert "at 95%)" in page  # the assertion pass rates' intervals
    failed = sample().model_copy(update={"mlflow": LoggedRun(error="down <now>")})
    assert "not logged to MLflow: down &lt;now&gt;" in render_html(failed, "t")


def test_the_compare_command_prints_the_run_and_its_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bgserve.cli import prompts
    from bgserve.evaluation.comparison import LoggedRun

    console = Console(record=True, width=200, color_system=None)
    monkeypatch.setattr(prompts, "console", console)
    run = LoggedRun(run_id="abc123", experiment="bgserve/chat", url="http://m/#/r/abc123")
    prompts._print_report(sample().model_copy(update={"mlflow": run}), None)
    text = console.export_text()
    assert "MLflow run abc123 in bgserve/chat" in text and "http://m/#/r/abc123" in text
