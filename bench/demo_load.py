"""`bgserve demo` repeated beside CPU burners: does the story hold on a busy machine?

Each run is the plain demo in a fresh directory (its own MLflow store and slots), started
as a user would (`bgserve demo`), with ``--burners`` processes spinning at normal priority
beside it. The demo judges its own story (exit 1 when the healthy release is not promoted
or the flaky one not reverted), so a run passes when it exits 0. Prints each run's outcome
and duration, and for a failed run the demo's own reason.

    python bench/demo_load.py [--runs 10] [--burners 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _burners import burners
from _common import goal, goal_rows, machine, save, table

BGSERVE = Path(sys.executable).with_name("bgserve")
TIMEOUT_S = 900


def run_demo() -> dict[str, Any]:
    """One `bgserve demo` in a fresh directory: exit code, seconds, and its last lines."""
    home = Path(tempfile.mkdtemp(prefix="bgserve-demo-load-"))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(BGSERVE), "demo"],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = -1, f"timed out after {TIMEOUT_S} s: {exc.stdout or ''}"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {
        "exit": code,
        "seconds": round(time.monotonic() - started, 1),
        # A failed run's story is read from its end: keep enough of it to see why.
        "tail": [line for line in str(output).splitlines() if line.strip()][-40:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burners", type=int, default=2)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with burners(args.burners):
        for n in range(args.runs):
            run = run_demo()
            runs.append(run)
            print(f"run {n + 1}/{args.runs}: exit {run['exit']} in {run['seconds']} s", flush=True)
            if run["exit"] != 0:
                print("\n".join(f"    {line}" for line in run["tail"]), flush=True)
    passed = sum(run["exit"] == 0 for run in runs)
    seconds = [run["seconds"] for run in runs]
    print(
        table(
            ["runs", "passed", "median s", "max s"],
            [[len(runs), passed, f"{statistics.median(seconds):.1f}", f"{max(seconds):.1f}"]],
        )
    )
    goals = [goal("demo runs that failed", len(runs) - passed, 0)]
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    save("demo_load", {"machine": machine(), "burners": args.burners, "runs": runs, "goals": goals})
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
