"""`bgserve demo --llm` piped: the LLM story on SmolLM2, told in full, and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support.processes import descendants, own_store_environment, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOISE = ("input example", "Successfully registered", "Created version", "INFO mlflow", "\x1b[")
SLOT_LINE = re.compile(
    r"slot (blue|green): (\d+) streamed answers, TTFT p50 (\d+) ms, p95 (\d+) ms, "
    r"([\d.]+) tokens/s"
)


def run_demo() -> tuple[subprocess.CompletedProcess[str], list[int], float]:
    env = own_store_environment("BGSERVE_LOG_LEVEL", "FORCE_COLOR")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgserve", "demo", "--llm"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "COLUMNS": "200"},
    )
    seen: list[int] = []
    while proc.poll() is None and time.monotonic() - started < 420:
        seen.extend(p for p in descendants(proc.pid) if p not in seen)
        time.sleep(0.2)
    output, _ = proc.communicate(timeout=30)
    took = time.monotonic() - started
    return subprocess.CompletedProcess(proc.args, proc.returncode, output), seen, took


def test_llm_demo_tells_the_whole_story_and_leaves_no_process() -> None:
    result, seen, took = run_demo()
    output = result.stdout
    print(f"bgserve demo --llm took {took:.0f} s")

    assert result.returncode == 0, output
    # Two chat prompt versions, SmolLM2 registered, release 1 deployed, release 2 staged.
    assert "prompt chat v1 system message: 'You are a terse assistant." in output
    assert "prompt chat v2 system message: 'You are a pirate." in output
    assert "deploy release 1 as blue" in output
    assert "stage release 2 (system prompt reworded) as green" in output
    # The golden comparison's verdict: the pirate keeps every fact the assertions check.
    assert "golden verdict: PASSED" in output
    # The plan names the TTFT check, runs its steps on live traffic and judges green on it.
    assert "checks error_rate, ttft_p95" in output
    assert output.index("step: blue 50% / green 50%") < output.index("step: blue 100%")
    ttft = re.search(
        r"ttft_p95: pass — ttft_p95: p95 time to first token(?:, paired by time:)? green "
        r"([\d.]+) ms",
        output,
    )
    assert ttft is not None, output
    assert "live analysis at green 50%: pass" in output
    # The revert, then what the live client measured, per slot.
    assert "reverted: release 1 serves 100% again" in output
    slots = {m[0]: m for m in SLOT_LINE.findall(output)}
    assert set(slots) == {"blue", "green"}, output
    for _, answers, p50, p95, rate in slots.values():
        assert int(answers) >= 1
        assert 0 < int(p50) <= int(p95) < 60_000
        assert 0.5 < float(rate) < 5_000
    summary = re.search(r"failed requests: (\d+) of (\d+) streamed chat completions", output)
    assert summary is not None, output
    assert summary.group(1) == "0" and int(summary.group(2)) >= 12
    # Only the story: no log line, no MLflow print.
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the demo's output:\n{output}"
    assert not re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", output, re.M), output
    assert all(line.endswith("┘") for line in output.splitlines() if "┘" in line), output
    assert seen, "the demo started no slot process"
    assert wait_gone(seen) == []
