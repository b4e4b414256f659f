"""The data-plane benchmarks (bench/perf.py) run with tiny sizes so they do not rot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.missing import in_ci, missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).parent.parent / "bench"
RESULTS = BENCH / "results"
NAMES = ("router_overhead", "cutover", "revert_latency", "footprint", "gc_pauses")


def _nginx_found() -> bool:
    return bool(shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin"))


@pytest.fixture(scope="module")
def smoke_run() -> str:
    for name in NAMES:
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, str(BENCH / "perf.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def saved(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text())


def test_router_overhead_reports_each_path_and_level(smoke_run: str) -> None:
    paths = ["direct", "bgserve"] + (["nginx"] if _nginx_found() or in_ci() else [])
    rows = saved("router_overhead")["rows"]
    assert [(r["path"], r["concurrency"]) for r in rows] == [(p, c) for c in (1, 32) for p in paths]
    for row in rows:
        assert row["n"] > 0 and row["failures"] == 0 and row["throughput_rps"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert "Router overhead" in smoke_run and "c=1 p50 added by bgserve" in smoke_run
    if "nginx" in paths:
        assert "c=32 throughput bgserve / nginx" in smoke_run


def test_nginx_path_is_skipped_only_outside_ci() -> None:
    if not _nginx_found():
        missing("nginx is not installed (tools/test-servers.sh installs it)")


def test_cutover_reports_every_step_and_no_failure(smoke_run: str) -> None:
    data = saved("cutover")
    steps = [s["step"] for s in data["segments"]]
    assert steps == ["steady", "to 10", "to 25", "to 50", "to 75", "to 100", "revert"]
    assert data["failures"] == 0 and data["achieved_rate"] > 150
    shares = {s["step"]: s["green_share"] for s in data["segments"]}
    assert shares["steady"] == 0 and shares["to 100"] == 1 and shares["revert"] == 0
    assert "p99 during cutover / steady p99" in smoke_run
    pooled = {w["step"]: w for w in data["pooled"]}
    assert list(pooled) == [*steps, "cutover"]
    # The cutover window runs from the first step's call to the revert's return.
    assert 0 < pooled["cutover"]["requests"] < sum(pooled[s]["requests"] for s in steps[1:])
    assert pooled["cutover"]["p99_ms"] <= pooled["cutover"]["p999_ms"]
    assert len(data["p99_ratios"]) == data["repeats"] == 1
    gc_seen = data["gc_pauses"]
    assert {"bgserve", "data plane", "slot a", "slot b"} <= set(gc_seen)
    assert all(gc_seen[p]["frozen"] > 1_000 for p in gc_seen)


def test_revert_latency_reports_each_trial(smoke_run: str) -> None:
    data = saved("revert_latency")
    assert data["trials"] == 3 and len(data["results"]) == 3
    assert data["failures"] == 0
    assert {"effective_p50_ms", "effective_max_ms"} <= set(data)
    assert "Revert latency: 3 trials" in smoke_run


def test_gc_pauses_compares_a_frozen_slot_with_an_unfrozen_one(smoke_run: str) -> None:
    data = saved("gc_pauses")
    by = {r["variant"]: r for r in data["rows"]}
    assert set(by) == {"gc.freeze", "no freeze"}
    assert by["gc.freeze"]["gc"]["frozen"] > 100_000 and by["no freeze"]["gc"]["frozen"] == 0
    assert all(r["n"] == 200 and r["failures"] == 0 for r in data["rows"])
    assert "GC pauses in a slot" in smoke_run


def test_footprint_reports_bgserve_each_slot_and_cold_start(smoke_run: str) -> None:
    data = saved("footprint")
    processes = [r["process"] for r in data["rss_mb"]]
    assert processes[:2] == ["bgserve serve", "data plane"] and len(processes) == 4
    assert all(r["at_rest"] > 10 for r in data["rss_mb"])
    cold = data["cold_start"]
    assert 0 < cold["empty_ready_s"] < cold["one_deployment_ready_s"]
    assert "cold start" in smoke_run
