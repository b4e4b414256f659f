"""`bgserve demo` piped, as a newcomer's first command would be: the story and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support.processes import descendants, own_store_environment, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOISE = ("input example", "Successfully registered", "Created version", "INFO mlflow", "\x1b[")


def test_piped_demo_tells_its_story_without_mlflow_noise_and_leaves_no_process() -> None:
    env = own_store_environment("BGSERVE_LOG_LEVEL", "FORCE_COLOR")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgserve", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "COLUMNS": "120"},
    )
    seen: list[int] = []
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 240:
        seen.extend(p for p in descendants(proc.pid) if p not in seen)
        time.sleep(0.2)
    output, _ = proc.communicate(timeout=10)

    assert proc.returncode == 0, output
    assert "gate closed, as it should be" in output
    assert "reverted automatically: live analysis failed: error_rate" in output
    summary = re.search(r"failed requests: (\d+) of (\d+); (\d+) answered by the flaky", output)
    assert summary is not None, output
    failed, total, flaky = (int(g) for g in summary.groups())
    assert total > 100 and failed == flaky > 0 and "0 elsewhere" in output
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the demo's output:\n{output}"
    assert " INFO " not in output, output
    # No log record of bgserve's own at all: a normal run warns about nothing.
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL) bgserve[\w.]*: ", output), output
    # Every table ends its own line: nothing follows a table's bottom edge on that line.
    assert all(line.endswith("┘") for line in output.splitlines() if "┘" in line), output
    assert output.endswith("\n")
    assert seen, "the demo started no slot process"
    assert wait_gone(seen) == []
