"""One slot's traffic over a window of time, as counts: requests, errors and latency
histograms (the buckets of :mod:`bgserve.domain.latency`), optionally cut into slices of
the same spans for blue and green. Pure: what the analysis reads, and its JSON form."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bgserve.domain.latency import BUCKETS, LATENCY_BUCKETS_MS, bucket_of


@dataclass(frozen=True)
class SideWindow:
    """One slot's traffic in the window: requests, errors, and the latency histogram
    (counts per bucket of :data:`LATENCY_BUCKETS_MS`, plus +Inf).

    Streamed chat completions add histograms in the same buckets: time to first token
    (``ttft``, ms), time per output token (``tpot``, ms) and output tokens per answer
    (``tokens``), and the sum of those tokens (``output_tokens``); empty when the source
    does not measure them (:mod:`bgserve.domain.streaming` checks them).
    """

    requests: int = 0
    errors: int = 0
    buckets: tuple[int, ...] = ()
    ttft: tuple[int, ...] = ()
    tpot: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()
    output_tokens: int = 0
    # The window cut in consecutive spans of time, the same spans for blue and green
    # (empty when the source reads the window once): the latency checks pair them.
    slices: tuple[SideWindow, ...] = ()

    def minus(self, earlier: SideWindow) -> SideWindow:
        """The traffic since ``earlier`` (counters only grow; a reset counts from zero)."""
        if self.requests < earlier.requests:
            return self
        return self._combine(earlier, -1)

    def plus(self, other: SideWindow) -> SideWindow:
        """Both windows' traffic together (one release counted under two roles)."""
        return self._combine(other, 1)

    def _combine(self, other: SideWindow, sign: int) -> SideWindow:
        return SideWindow(
            self.requests + sign * other.requests,
            self.errors + sign * other.errors,
            _add(self.buckets, other.buckets, sign),
            _add(self.ttft, other.ttft, sign),
            _add(self.tpot, other.tpot, sign),
            _add(self.tokens, other.tokens, sign),
            self.output_tokens + sign * other.output_tokens,
        )

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of latency, interpolated within its bucket; None if empty."""
        return quantile_of(self.buckets, q)


Histogram = Callable[["SideWindow"], Sequence[int]]
"""Which histogram of a window a check reads (latency, time to first token, ...)."""


def quantile_of(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram in the buckets of :data:`LATENCY_BUCKETS_MS`,
    interpolated within its bucket; None if it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = LATENCY_BUCKETS_MS[index - 1] if index > 0 else 0.0
            high = LATENCY_BUCKETS_MS[min(index, len(LATENCY_BUCKETS_MS) - 1)]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS_MS[-1]


def _add(mine: tuple[int, ...], theirs: tuple[int, ...], sign: int) -> tuple[int, ...]:
    width = max(len(mine), len(theirs))
    mine = mine + (0,) * (width - len(mine))
    theirs = theirs + (0,) * (width - len(theirs))
    return tuple(a + sign * b for a, b in zip(mine, theirs, strict=True))


def side_of(counts: Mapping[str, Any]) -> SideWindow:
    """A window from its JSON form (the inverse of :func:`side_json`)."""
    return SideWindow(
        int(counts.get("requests", 0)),
        int(counts.get("errors", 0)),
        tuple(int(b) for b in counts.get("buckets", ())),
        tuple(int(b) for b in counts.get("ttft", ())),
        tuple(int(b) for b in counts.get("tpot", ())),
        tuple(int(b) for b in counts.get("tokens", ())),
        int(counts.get("output_tokens", 0)),
    )


def side_json(side: SideWindow) -> dict[str, Any]:
    """The JSON form of a window (the streaming histograms only when measured)."""
    body: dict[str, Any] = {
        "requests": side.requests,
        "errors": side.errors,
        "buckets": list(side.buckets),
    }
    if side.ttft or side.tpot or side.tokens:
        body |= {
            "ttft": list(side.ttft),
            "tpot": list(side.tpot),
            "tokens": list(side.tokens),
            "output_tokens": side.output_tokens,
        }
    return body


def histogram(latencies_ms: Sequence[float]) -> tuple[int, ...]:
    """Bucket counts of ``latencies_ms`` (for tests and for sources that keep raw samples)."""
    counts = [0] * BUCKETS
    for latency in latencies_ms:
        counts[bucket_of(latency)] += 1
    return tuple(counts)
