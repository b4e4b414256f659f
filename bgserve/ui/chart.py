"""The weights-over-time chart and the release timeline, drawn from the history.

The chart is inline SVG (one step line per release, the present at the right edge); the
timeline lists each span of weights with a link that answers "what was live then".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from bgserve.domain.release import Release
from bgserve.ui.html import e, release_label, when
from bgserve.ui.timeline import Segment

WIDTH, HEIGHT = 600.0, 160.0
SERIES = 6  # colour classes s0..s5, reused in turn
MAX_SEGMENTS = 200


def _releases_in(timeline: Sequence[Segment]) -> list[int]:
    seen: dict[int, None] = {}
    for segment in timeline:
        seen.update(dict.fromkeys(segment.weights))
    return list(seen)


def _x(moment: datetime, start: datetime, span: float) -> float:
    return round((moment - start).total_seconds() / span * WIDTH, 1)


def _y(weight: int) -> float:
    return round(HEIGHT - weight / 100 * HEIGHT, 1)


def _points(release: int, timeline: Sequence[Segment], now: datetime, span: float) -> str:
    start = timeline[0].start
    points: list[str] = []
    for segment in timeline:
        y = _y(segment.weights.get(release, 0))
        end = segment.end or now
        points.append(f"{_x(segment.start, start, span)},{y}")
        points.append(f"{_x(end, start, span)},{y}")
    return " ".join(points)


def weights_chart(
    timeline: Sequence[Segment],
    releases: Mapping[int, Release],
    now: datetime,
    marker: datetime | None = None,
) -> str:
    """An SVG step chart of each release's weight from the first event to ``now``."""
    shown = list(timeline[-MAX_SEGMENTS:])
    if not shown:
        return "<p class='muted'>No history yet.</p>"
    span = max((now - shown[0].start).total_seconds(), 1.0)
    ids = _releases_in(shown)
    lines = "".join(
        f"<polyline class='s{i % SERIES}' points='{_points(r, shown, now, span)}'/>"
        for i, r in enumerate(ids)
    )
    mark = ""
    if marker is not None and shown[0].start <= marker <= now:
        x = _x(marker, shown[0].start, span)
        mark = f"<line class='marker' x1='{x}' x2='{x}' y1='0' y2='{HEIGHT}'/>"
    legend = "".join(
        f"<li><span class='key s{i % SERIES}'></span>{release_label(releases.get(r), r)}</li>"
        for i, r in enumerate(ids)
    )
    summary = "; ".join(f"release {r} at {shown[-1].weights.get(r, 0)}% now" for r in ids)
    return (
        f"<figure class='chart'><svg viewBox='0 0 {WIDTH:g} {HEIGHT:g}' role='img' "
        f"aria-label='Weights over time: {e(summary)}' preserveAspectRatio='none'>"
        "<line class='grid' x1='0' x2='600' y1='80' y2='80'/>"
        f"{lines}{mark}</svg>"
        f"<figcaption><span>{when(shown[0].start)}</span><span>100% at top · now</span>"
        f"</figcaption><ul class='legend'>{legend}</ul></figure>"
    )


def _at_link(name: str, moment: datetime) -> str:
    return f"/ui/d/{quote(name)}?at={quote(moment.isoformat())}"


def _weights_text(segment: Segment, releases: Mapping[int, Release]) -> str:
    parts = [
        f"{release_label(releases.get(r), r)} {w}%"
        for r, w in sorted(segment.weights.items(), key=lambda item: -item[1])
    ]
    return ", ".join(parts)


def timeline_table(
    name: str,
    timeline: Sequence[Segment],
    releases: Mapping[int, Release],
    selected: Segment | None,
) -> str:
    """The release timeline, newest first; the span at ``?at=`` is marked."""
    rows = []
    for segment in reversed(timeline[-MAX_SEGMENTS:]):
        current = " aria-current='true' class='selected'" if segment is selected else ""
        live = release_label(releases.get(segment.live), segment.live)
        rows.append(
            f"<tr{current}><td><a href='{e(_at_link(name, segment.start))}'>"
            f"{when(segment.start)}</a></td><td>{when(segment.end) or 'now'}</td>"
            f"<td>{live}</td><td>{_weights_text(segment, releases)}</td>"
            f"<td>{e(segment.action)} <small>by {e(segment.principal)}</small></td></tr>"
        )
    head = "".join(
        f"<th scope='col'>{h}</th>" for h in ("from", "until", "live", "weights", "change")
    )
    return (
        f"<div class='scroll'><table class='timeline'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def live_at(moment: datetime, segment: Segment | None, releases: Mapping[int, Release]) -> str:
    """The answer to "what was live at ``moment``"."""
    if segment is None:
        return f"<p class='answer'>At {when(moment)} the deployment did not exist yet.</p>"
    live = release_label(releases.get(segment.live), segment.live)
    return (
        f"<p class='answer'>At {when(moment)}: live was {live}; "
        f"weights {_weights_text(segment, releases)} (since {when(segment.start)}, "
        f"{e(segment.action)} by {e(segment.principal)}).</p>"
    )
