"""A comparison report, golden or shadow, as one self-contained HTML page: inline CSS,
no scripts, no assets.

Failing cases come first; blue and green answers sit side by side with the words that
differ marked (``<del>`` on blue's side, ``<ins>`` on green's). Every piece of text from
a case or a slot is HTML-escaped.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from html import escape

from bgserve.domain.comparison import CaseReport, ComparisonReport, SlotReport, SlotSummary
from bgserve.domain.shadow import ScoredPair, ShadowReport
from bgserve.report_quality import mlflow_line, quality_rows

MAX_SHOWN_CHARS = 20_000
# SequenceMatcher is quadratic in the worst case; past this many tokens, show plain text.
MAX_DIFF_TOKENS = 8_000
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d1d1f;background:#fafafa}
h1{margin:0 0 .5rem}h2{margin-top:2rem}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left;vertical-align:top}
.case{background:#fff;border:1px solid #d0d7de;border-left:6px solid #1a7f37;
 border-radius:.3rem;padding:.6rem 1rem;margin:1rem 0}
.case.failing{border-left-color:#cf222e}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:.5rem;
 border-radius:.3rem;margin:.3rem 0}
del{background:#ffd7d5;text-decoration:line-through}ins{background:#ccffd8;text-decoration:none}
.error{color:#cf222e}.ok{color:#1a7f37}.muted{color:#57606a}
ul{margin:.3rem 0}
"""


def render_html(report: ComparisonReport, title: str) -> str:
    """The whole report as an HTML document."""
    cases = sorted(report.cases, key=lambda case: not case.failing)
    failing = sum(case.failing for case in cases)
    body = [
        f"<h1>{escape(title)}</h1>",
        _verdict(report),
        "<h2>Summary</h2>",
        _summary(report),
        _thresholds(report),
        f"<h2>Cases <span class='muted'>({failing} of {len(cases)} with problems, "
        "listed first)</span></h2>",
        *(_case(case) for case in cases),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _verdict(report: ComparisonReport) -> str:
    verdict = report.verdict
    badge = "<span class='badge pass'>PASSED</span>"
    if not verdict.passed:
        word = "INCONCLUSIVE" if report.outcome == "inconclusive" else "FAILED"
        badge = f"<span class='badge fail'>{word}</span>"
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in verdict.reasons)
    return (
        f"<p>{badge} scored with {escape(report.scorer)}</p>"
        + (f"<ul class='error'>{reasons}</ul>" if reasons else "")
        + mlflow_line(report)
    )


def _num(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _summary(report: ComparisonReport) -> str:
    s = report.summary
    rows = [
        ("cases (answered by both)", f"{s.cases} ({s.compared})"),
        ("mean similarity", _num(s.mean_similarity)),
        ("agreement rate", _num(s.agreement_rate)),
        ("exact matches", f"{s.exact_matches} of {s.compared}"),
        ("cases that differ", _ids(s.differing_cases)),
        ("green fails what blue passes", _ids(s.regressed_cases)),
        ("latency ratio p50 / p95", f"{_num(s.latency_ratio_p50)} / {_num(s.latency_ratio_p95)}"),
        *quality_rows(s),
    ]
    general = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{general}</table>{_slots_table(s.blue, s.green)}"


def _ids(ids: list[str], limit: int = 50) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more if ids else "none"


def _slots_table(blue: SlotSummary, green: SlotSummary) -> str:
    def cells(slot: SlotSummary) -> list[str]:
        return [
            f"{slot.errors} ({_num(slot.error_rate)})",
            f"{slot.assertions_passed} of {slot.assertions_total} "
            f"({_num(slot.assertion_pass_rate)})",
            _num(slot.latency_p50_ms, "{:.1f} ms"),
            _num(slot.latency_p95_ms, "{:.1f} ms"),
        ]

    names = ["errors", "assertions passed", "latency p50", "latency p95"]
    rows = zip(names, cells(blue), cells(green), strict=True)
    body = "".join(
        f"<tr><th>{n}</th><td>{escape(b)}</td><td>{escape(g)}</td></tr>" for n, b, g in rows
    )
    return f"<table><tr><th></th><th>blue</th><th>green</th></tr>{body}</table>"


def _thresholds(report: ComparisonReport) -> str:
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{value:g}</td></tr>"
        for name, value in report.thresholds.model_dump().items()
    )
    return f"<details><summary>Thresholds</summary><table>{rows}</table></details>"


def _case(case: CaseReport) -> str:
    similarity = "" if case.similarity is None else f" similarity {case.similarity:.3f}"
    if case.judge is not None:
        similarity += f"; judge: green {case.judge.outcome}"
    problems = "".join(f"<li>{escape(p)}</li>" for p in case.problems)
    inputs = "".join(
        f"<tr><th>{escape(k)}</th><td><pre>{escape(_clip(v))}</pre></td></tr>"
        for k, v in case.inputs.items()
    )
    expected = (
        ""
        if case.expected is None
        else (f"<p>expected</p><pre>{escape(_clip(case.expected))}</pre>")
    )
    blue_html, green_html = _outputs(case)
    return (
        f"<section class='case{' failing' if case.failing else ''}'>"
        f"<h3>{escape(case.id)}<span class='muted'>{similarity}</span></h3>"
        + (f"<ul class='error'>{problems}</ul>" if problems else "")
        + f"<details><summary>inputs</summary><table>{inputs}</table></details>{expected}"
        + "<div class='sides'>"
        + _side("blue", case.blue, blue_html)
        + _side("green", case.green, green_html)
        + "</div></section>"
    )


def _side(role: str, slot: SlotReport, output_html: str) -> str:
    shown = (
        f"<pre>{output_html}</pre>"
        if slot.answered
        else (f"<p class='error'>error: {escape(slot.error or '')}</p>")
    )
    checks = "".join(
        f"<li class='{'ok' if a.passed else 'error'}'>{'&#10003;' if a.passed else '&#10007;'} "
        f"{escape(a.type)}: {escape(a.message)}</li>"
        for a in slot.assertions
    )
    if slot.schema_checked:
        ok = slot.schema_problem is None
        mark, problem = ("&#10003;", "") if ok else ("&#10007;", f": {slot.schema_problem}")
        checks += (
            f"<li class='{'ok' if ok else 'error'}'>{mark} response_format{escape(problem)}</li>"
        )
    return (
        f"<div><h4>{role} <span class='muted'>{slot.latency_ms:.1f} ms</span></h4>{shown}"
        + (f"<ul>{checks}</ul>" if checks else "")
        + "</div>"
    )


def _clip(text: str) -> str:
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text) - MAX_SHOWN_CHARS:,} more characters)"


def _outputs(case: CaseReport) -> tuple[str, str]:
    blue, green = case.blue.output, case.green.output
    if blue is None or green is None:
        return escape(_clip(blue or "")), escape(_clip(green or ""))
    return word_diff(_clip(blue), _clip(green))


def word_diff(old: str, new: str) -> tuple[str, str]:
    """Both texts escaped, with the words only ``old`` has in ``<del>`` and only
    ``new`` has in ``<ins>``."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    if len(a) + len(b) > MAX_DIFF_TOKENS:
        return escape(old), escape(new)
    left: list[str] = []
    right: list[str] = []
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        gone, added = escape("".join(a[i1:i2])), escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(gone)
            right.append(added)
            continue
        left.append(f"<del>{gone}</del>" if gone else "")
        right.append(f"<ins>{added}</ins>" if added else "")
    return "".join(left), "".join(right)


# --- shadow traffic --------------------------------------------------------------------


def render_shadow_html(report: ShadowReport, title: str) -> str:
    """A shadow report (live traffic mirrored to green) as an HTML document, in the shape
    of the golden comparison's: verdict, summary, thresholds, then the most different pairs."""
    verdict = report.verdict
    badge = "pass'>PASSED" if verdict.passed else "fail'>FAILED"
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in verdict.reasons)
    note = "" if report.conclusive else f" (gates promotion from {report.min_pairs} pairs)"
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p><span class='badge {badge}</span> on {report.pairs} mirrored requests"
        f"{escape(note)}</p>" + (f"<ul class='error'>{reasons}</ul>" if reasons else ""),
        "<h2>Summary</h2>",
        _shadow_summary(report),
        _thresholds_of(report.thresholds.model_dump()),
        f"<h2>Most different pairs <span class='muted'>({len(report.worst)} kept)</span></h2>",
        *(_pair(pair) for pair in report.worst),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _shadow_summary(report: ShadowReport) -> str:
    s = report.similarity
    rows = [
        ("blue / green releases", f"{report.blue} / {report.green}"),
        ("pairs (answered by both)", f"{report.pairs} ({report.compared})"),
        ("dropped copies", str(report.dropped)),
        ("green errors", str(report.green_errors)),
        ("pairs that differ", str(report.differing)),
        ("mean similarity / p10", f"{_num(s.mean)} / {_num(s.p10)}"),
        ("share below threshold", _num(s.share_below_threshold)),
        ("green fails what blue passes", str(report.regressed)),
        ("latency ratio p50", _num(report.latency_ratio_p50)),
        (
            "assertions passed blue / green",
            f"{report.blue_side.assertions_passed} / {report.green_side.assertions_passed} "
            f"of {report.green_side.assertions_total}",
        ),
    ]
    return (
        "<table>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _thresholds_of(values: dict[str, float]) -> str:
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{value:g}</td></tr>" for name, value in values.items()
    )
    return f"<details><summary>Thresholds</summary><table>{rows}</table></details>"


def _pair(pair: ScoredPair) -> str:
    similarity = "" if pair.similarity is None else f" similarity {pair.similarity:.3f}"
    if pair.blue is None:
        blue_html = green_html = "<span class='muted'>(texts not kept)</span>"
    elif pair.green is None:
        blue_html, green_html = escape(_clip(pair.blue)), ""
    else:
        blue_html, green_html = word_diff(_clip(pair.blue), _clip(pair.green))
    inputs = "".join(
        f"<tr><th>{escape(k)}</th><td><pre>{escape(_clip(v))}</pre></td></tr>"
        for k, v in (pair.inputs or {}).items()
    )
    green_error = (
        f"<p class='error'>error: {escape(pair.green_error)}</p>" if pair.green_error else ""
    )
    green_ms = "" if pair.green_ms is None else f"{pair.green_ms:.1f} ms"
    problems = "".join(f"<li>{escape(p)}</li>" for p in pair.regressions)
    return (
        f"<section class='case failing'><h3>{escape(pair.request_id)}"
        f"<span class='muted'>{similarity}</span></h3>"
        + (f"<ul class='error'>{problems}</ul>" if problems else "")
        + (f"<details><summary>inputs</summary><table>{inputs}</table></details>" if inputs else "")
        + "<div class='sides'>"
        + f"<div><h4>blue <span class='muted'>{pair.blue_ms:.1f} ms</span></h4>"
        + f"<pre>{blue_html}</pre></div>"
        + f"<div><h4>green <span class='muted'>{green_ms}</span></h4>{green_error}"
        + (f"<pre>{green_html}</pre>" if green_html else "")
        + "</div></div></section>"
    )
