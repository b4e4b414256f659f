"""What every benchmark shares: driving the load generator, percentiles, tables, results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

BENCH = Path(__file__).parent
# The smoke tests point this elsewhere, so they never overwrite a full run's results.
RESULTS = Path(os.environ.get("BGSERVE_BENCH_RESULTS") or BENCH / "results")
LOADGEN = BENCH / "_loadgen.py"


def run_client(spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run the load generator in its own process until it is done; its JSON result."""
    with tempfile.TemporaryDirectory(prefix="bgserve-loadgen-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, str(LOADGEN), str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result


class OpenLoopClient:
    """The load generator in open-loop mode, running while the benchmark acts."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="bgserve-openloop-"))
        self._spec_path, self._out = self._tmp / "spec.json", self._tmp / "out.json"
        self._spec_path.write_text(json.dumps({"mode": "open", **spec}))
        self._proc: subprocess.Popen[str] | None = None
        self.result: dict[str, Any] = {}

    def __enter__(self) -> OpenLoopClient:
        self._proc = subprocess.Popen(
            [sys.executable, str(LOADGEN), str(self._spec_path), str(self._out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.kill()
            raise RuntimeError("the open-loop client did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write("stop\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        code = self._proc.wait(60)
        if code == 0 and kind is None:
            self.result = json.loads(self._out.read_text())
        for path in (self._spec_path, self._out):
            path.unlink(missing_ok=True)
        self._tmp.rmdir()
        if code != 0 and kind is None:
            raise RuntimeError(f"the open-loop client exited with code {code}")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


SLOW_MS = 150.0  # the tail the garbage collector used to cause: "requests over 150 ms"


def summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max in milliseconds, the count, and requests over
    ``SLOW_MS`` per 10,000."""
    n = len(latencies_ms)
    slow = sum(1 for v in latencies_ms if v > SLOW_MS)
    return {
        "n": n,
        "p50_ms": percentile(latencies_ms, 50),
        "p90_ms": percentile(latencies_ms, 90),
        "p99_ms": percentile(latencies_ms, 99),
        "p999_ms": percentile(latencies_ms, 99.9),
        "max_ms": max(latencies_ms, default=float("nan")),
        "over_150ms_per_10k": slow / n * 10_000 if n else float("nan"),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a figure over repeated runs."""
    ordered = sorted(values)
    return {
        "median": ordered[len(ordered) // 2] if ordered else float("nan"),
        "min": ordered[0] if ordered else float("nan"),
        "max": ordered[-1] if ordered else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain right-aligned text table (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])]
        parts += [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def goal_rows(goals: Sequence[dict[str, Any]]) -> list[list[object]]:
    """Rows of (goal, measured, limit, met) for a goals table."""
    return [[g["goal"], g["measured"], g["limit"], "yes" if g["met"] else "NO"] for g in goals]


def goal(name: str, measured: float, limit: float, *, at_least: bool = False) -> dict[str, Any]:
    met = measured >= limit if at_least else measured <= limit
    return {"goal": name, "measured": round(measured, 3), "limit": limit, "met": bool(met)}


def machine() -> str:
    """The machine, and how busy it was: figures from a shared machine need that context."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load}"
    )


def save(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return path


def failure_kinds(rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Failed open-loop requests by kind: ``HTTP <status>`` or the client-side exception."""
    kinds: dict[str, int] = {}
    for row in rows:
        if row[3] != 200:
            kind = f"HTTP {row[3]}" if row[3] else str(row[4])
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds
