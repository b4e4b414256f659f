"""The golden comparison and the shadow comparison: blue and green answers side by side,
the words that differ marked (the HTML report's word diff), failing cases first."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from bgserve.domain.shadow import ScoredPair, ShadowReport
from bgserve.evaluation.comparison import CaseReport, ComparisonReport, SlotReport
from bgserve.report_html import word_diff
from bgserve.ui.html import badge, e, key_values, num

MAX_ROWS = 100
MAX_TEXT = 4_000


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _verdict(passed: bool, reasons: list[str], note: str = "") -> str:
    mark = badge("passed", "pass") if passed else badge("failed", "fail")
    items = "".join(f"<li>{e(r)}</li>" for r in reasons)
    return f"<p>{mark} {e(note)}</p>" + (f"<ul class='reasons'>{items}</ul>" if items else "")


def _answer(slot: SlotReport, html: str) -> str:
    if not slot.answered:
        return f"<span class='error'>error: {e(slot.error or '')}</span>"
    return f"<div class='answer-text'>{html}</div><small>{slot.latency_ms:.1f} ms</small>"


def _case_row(case: CaseReport) -> str:
    blue, green = case.blue.output, case.green.output
    if blue is not None and green is not None:
        blue_html, green_html = word_diff(_clip(blue), _clip(green))
    else:
        blue_html, green_html = e(_clip(blue or "")), e(_clip(green or ""))
    problems = "".join(f"<li>{e(p)}</li>" for p in case.problems)
    similarity = "" if case.similarity is None else f"{case.similarity:.3f}"
    failing = " class='failing'" if case.failing else ""
    return (
        f"<tr{failing}><th scope='row'>{e(case.id)}"
        + (f"<ul class='reasons'>{problems}</ul>" if problems else "")
        + f"</th><td>{_answer(case.blue, blue_html)}</td>"
        f"<td>{_answer(case.green, green_html)}</td><td>{similarity}</td></tr>"
    )


def _side_by_side(rows: list[str], total: int, what: str) -> str:
    more = (
        f"<p class='muted'>{total - len(rows)} more {what} not shown.</p>"
        if total > len(rows)
        else ""
    )
    return (
        "<div class='scroll'><table class='diff'><thead><tr><th scope='col'>case</th>"
        "<th scope='col'>blue</th><th scope='col'>green</th>"
        f"<th scope='col'>similarity</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        f"</table></div>{more}"
    )


def golden_section(stored_report: dict[str, Any] | None, stale: bool) -> str:
    """The last golden comparison (or a line saying there is none)."""
    if stored_report is None:
        return "<p class='muted'>No comparison yet.</p>"
    try:
        report = ComparisonReport.model_validate(stored_report)
    except ValidationError:
        return "<p class='muted'>The stored comparison cannot be read by this version.</p>"
    s = report.summary
    note = "(an older blue/green pair: compare again)" if stale else f"scored with {report.scorer}"
    cases = sorted(report.cases, key=lambda case: not case.failing)
    numbers = key_values(
        {
            "cases (answered by both)": f"{s.cases} ({s.compared})",
            "mean similarity": num(s.mean_similarity),
            "agreement rate": num(s.agreement_rate),
            "failing cases": str(sum(case.failing for case in cases)),
            "latency ratio p50 / p95": f"{num(s.latency_ratio_p50)} / {num(s.latency_ratio_p95)}",
        }
    )
    rows = [_case_row(case) for case in cases[:MAX_ROWS]]
    return (
        _verdict(report.verdict.passed, report.verdict.reasons, note)
        + numbers
        + _side_by_side(rows, len(cases), "cases")
    )


def _pair_row(pair: ScoredPair) -> str:
    if pair.blue is None:
        blue_html = green_html = "<span class='muted'>(texts not kept)</span>"
    elif pair.green is None:
        blue_html = e(_clip(pair.blue))
        green_html = f"<span class='error'>error: {e(pair.green_error or '')}</span>"
    else:
        blue_html, green_html = word_diff(_clip(pair.blue), _clip(pair.green))
    problems = "".join(f"<li>{e(p)}</li>" for p in pair.regressions)
    similarity = "" if pair.similarity is None else f"{pair.similarity:.3f}"
    failing = " class='failing'" if pair.regressions or pair.green is None else ""
    return (
        f"<tr{failing}><th scope='row'>{e(pair.request_id)}"
        + (f"<ul class='reasons'>{problems}</ul>" if problems else "")
        + f"</th><td><div class='answer-text'>{blue_html}</div></td>"
        f"<td><div class='answer-text'>{green_html}</div></td><td>{similarity}</td></tr>"
    )


def _pair_order(pair: ScoredPair) -> tuple[bool, float]:
    failing = bool(pair.regressions) or pair.green is None
    return (not failing, pair.similarity if pair.similarity is not None else 0.0)


def shadow_section(report: ShadowReport | None, percent: int) -> str:
    """The shadow comparison of the current pair, if mirroring ever ran for it."""
    if report is None:
        return "<p class='muted'>No shadow traffic for this blue/green pair.</p>"
    note = f"on {report.pairs} mirrored requests, mirroring {percent}%"
    if not report.conclusive:
        note += f" (gates promotion from {report.min_pairs} pairs)"
    numbers = key_values(
        {
            "pairs (answered by both)": f"{report.pairs} ({report.compared})",
            "differing pairs": str(report.differing),
            "mean similarity / p10": f"{num(report.similarity.mean)} / "
            f"{num(report.similarity.p10)}",
            "green errors / dropped copies": f"{report.green_errors} / {report.dropped}",
            "latency ratio p50": num(report.latency_ratio_p50),
        }
    )
    pairs = sorted(report.worst, key=_pair_order)
    rows = [_pair_row(pair) for pair in pairs[:MAX_ROWS]]
    return (
        _verdict(report.verdict.passed, report.verdict.reasons, note)
        + numbers
        + _side_by_side(rows, len(pairs), "pairs")
    )
