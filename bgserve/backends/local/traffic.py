"""The data plane's per-slot counters as the rollout engine's analysis windows."""

from __future__ import annotations

from collections.abc import Iterable

from bgserve.dataplane.wire import SlotStats
from bgserve.domain.window import SideWindow

__all__ = ["side_window", "windows_of"]


def side_window(stats: SlotStats) -> SideWindow:
    """The analysis window of one slot's data-plane counters."""
    return SideWindow(
        stats["requests"],
        stats["errors"],
        tuple(stats["latency_buckets"]),
        tuple(stats["ttft_buckets"]),
        tuple(stats["tpot_buckets"]),
        tuple(stats["output_token_buckets"]),
        stats["output_tokens"],
    )


def windows_of(stats: Iterable[SlotStats], deployment: str) -> dict[int, SideWindow]:
    """One window per release of ``deployment``, its slots' counters added up."""
    out: dict[int, SideWindow] = {}
    for slot in stats:
        if slot["deployment"] != deployment:
            continue
        side = side_window(slot)
        before = out.get(slot["release_id"])
        out[slot["release_id"]] = side if before is None else before.plus(side)
    return out
