"""Which releases took traffic when: the history read as a sequence of weight segments.

Pure: events in, segments out. A segment starts at each event that changed the weights
and lasts until the next one; the open last segment is what runs now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bgserve.store import Event


@dataclass(frozen=True)
class Segment:
    """A span of time with one set of weights (release id -> percent, only those above 0)."""

    start: datetime
    end: datetime | None
    weights: dict[int, int]
    live: int
    action: str
    principal: str

    def covers(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in this segment (its start included, its end not)."""
        return self.start <= moment and (self.end is None or moment < self.end)


def _taking_traffic(weights: dict[str, int]) -> dict[int, int]:
    return {int(release): weight for release, weight in weights.items() if weight > 0}


def _live_of(weights: dict[int, int], before: int | None) -> int:
    """The release with the most traffic; on a tie, the one that was live before."""
    top = max(weights.values())
    leaders = [release for release, weight in weights.items() if weight == top]
    return before if before in leaders else min(leaders)


def segments(events: Iterable[Event]) -> list[Segment]:
    """The weight segments of a history, oldest first (events without weights skipped)."""
    found: list[Segment] = []
    for event in events:
        if not event.weights_after:
            continue
        weights = _taking_traffic(event.weights_after)
        if not weights or (found and found[-1].weights == weights):
            continue
        before = found[-1].live if found else None
        if found:
            last = found[-1]
            found[-1] = Segment(
                last.start, event.at, last.weights, last.live, last.action, last.principal
            )
        found.append(
            Segment(
                event.at, None, weights, _live_of(weights, before), event.action, event.principal
            )
        )
    return found


def at(timeline: Sequence[Segment], moment: datetime) -> Segment | None:
    """The segment running at ``moment``; None before the deployment existed."""
    for segment in reversed(timeline):
        if segment.start <= moment:
            return segment
    return None
