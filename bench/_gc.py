"""Garbage-collector pauses per process, read from bgserve's and each slot's /metrics.

``snapshot`` reads every process's ``bgserve_gc_*`` families; ``delta`` turns two
snapshots into what happened between them: collections per generation, pauses over
20 ms (from the pause histogram) and the longest pause since the process started (a
high-water mark: the metric keeps no per-window maximum).
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

SLOW_LE = "0.02"  # the histogram bucket bound of the 20 ms goal, in seconds


def parse(text: str) -> dict[str, dict[str, float]]:
    """Per ``process`` label: gen0..gen2 collections, pauses, pauses <= 20 ms, longest ms."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("bgserve_gc_"):
            continue
        for sample in family.samples:
            row = out.setdefault(sample.labels.get("process", "?"), {})
            gen = sample.labels.get("generation")
            if sample.name == "bgserve_gc_collections_total":
                row[f"gen{gen}"] = sample.value
            elif sample.name == "bgserve_gc_longest_pause_seconds":
                row["longest_ms"] = max(row.get("longest_ms", 0.0), sample.value * 1000)
            elif sample.name == "bgserve_gc_pause_seconds_count":
                row["pauses"] = sample.value
            elif sample.name == "bgserve_gc_pause_seconds_bucket":
                if sample.labels.get("le") == SLOW_LE:
                    row["fast"] = sample.value
            elif sample.name == "bgserve_gc_longest_full_collection_cpu_seconds":
                row["full_cpu_ms"] = sample.value * 1000
            elif sample.name == "bgserve_gc_frozen_objects":
                row["frozen"] = sample.value
    return out


def scrape(url: str, name: str | None = None) -> dict[str, dict[str, float]]:
    """One process set's pauses from ``url`` (a /metrics), relabelled ``name`` if given."""
    found = parse(httpx.get(url, timeout=10).text)
    if name is not None and found:
        found = {name: next(iter(found.values()))}
    return found


def snapshot(control_url: str | None, slots: dict[str, str]) -> dict[str, dict[str, float]]:
    """bgserve's and its data plane's pauses (``control_url``'s /metrics) and each slot's
    (``slots``: label to base URL)."""
    found = scrape(control_url + "/metrics") if control_url else {}
    for label, base in slots.items():
        found |= scrape(base + "/metrics", label)
    return found


def delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, Any]]:
    """Per process: collections per generation and pauses over 20 ms between the two
    snapshots, longest pause since start, frozen objects."""
    out: dict[str, dict[str, Any]] = {}
    for process, now in after.items():
        was = before.get(process, {})

        def diff(key: str, now: dict[str, float] = now, was: dict[str, float] = was) -> int:
            return int(now.get(key, 0) - was.get(key, 0))

        out[process] = {
            "gen0": diff("gen0"),
            "gen1": diff("gen1"),
            "gen2": diff("gen2"),
            "over_20ms": diff("pauses") - diff("fast"),
            "longest_ms_since_start": round(now.get("longest_ms", 0.0), 2),
            "longest_full_cpu_ms": round(now.get("full_cpu_ms", 0.0), 2),
            "frozen": int(now.get("frozen", 0)),
        }
    return out


def rows(pauses: dict[str, dict[str, Any]]) -> list[list[object]]:
    """Table rows: process, gen2 collections, pauses over 20 ms, longest ms, frozen."""
    return [
        [
            p,
            v["gen0"],
            v["gen2"],
            v["over_20ms"],
            v["longest_ms_since_start"],
            v["longest_full_cpu_ms"],
            v["frozen"],
        ]
        for p, v in pauses.items()
    ]


HEADERS = ["process", "gen0", "gen2", ">20 ms", "longest ms*", "gen2 CPU ms*", "frozen objects"]
NOTE = (
    "* since the process finished starting (high-water marks): the longest pause (wall "
    "time) and the most CPU time one full collection took"
)
