"""Benchmarks run with tiny sizes so they do not rot (their figures live in docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).parents[2] / "bench"


def test_compare_benchmark_runs_and_reports_each_concurrency() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "compare.py"), "--cases", "12", "--concurrency", "1", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12 golden cases" in result.stdout
    table = result.stdout.split("speedup", 1)[1]
    rows = [line.split() for line in table.splitlines() if line.strip()]
    assert [row[0] for row in rows] == ["1", "4"]
    saved = json.loads((BENCH / "results" / "compare.json").read_text())
    assert saved["cases"] == 12 and set(saved["seconds"]) == {"1", "4"}
