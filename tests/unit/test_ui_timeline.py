"""The release timeline read from history events (pure: no store, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bgserve.store import Event
from bgserve.ui.timeline import at, segments


def event(minute: int, weights: dict[str, int] | None, action: str = "shift") -> Event:
    moment = datetime(2026, 1, 1, 12, minute, tzinfo=UTC)
    return Event(minute, "d", moment, "someone", action, "", None, weights, None)


def test_the_timeline_has_a_span_per_weight_change_and_answers_what_was_live() -> None:
    history = [
        event(0, {"1": 100}, "create"),
        event(1, {"1": 100, "2": 0}, "stage"),  # no traffic moved: no new span
        event(2, None, "compare"),
        event(3, {"1": 50, "2": 50}),  # a tie: the release live before stays live
        event(4, {"2": 100, "1": 0}, "promote"),
        event(5, {"1": 100, "2": 0}, "revert"),
    ]
    spans = segments(history)
    assert [(s.weights, s.live, s.action) for s in spans] == [
        ({1: 100}, 1, "create"),
        ({1: 50, 2: 50}, 1, "shift"),
        ({2: 100}, 2, "promote"),
        ({1: 100}, 1, "revert"),
    ]
    assert [s.end for s in spans[:-1]] == [s.start for s in spans[1:]] and spans[-1].end is None
    moment = datetime(2026, 1, 1, 12, 4, 30, tzinfo=UTC)
    found = at(spans, moment)
    assert found is not None and found.live == 2 and found.covers(moment)
    assert at(spans, moment - timedelta(hours=1)) is None
