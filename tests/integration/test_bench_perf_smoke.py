"""The data-plane benchmarks (bench/perf.py) run with tiny sizes so they do not rot, and
the proxies they compare bgserve with really balance by weight."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.missing import in_ci, missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).parents[2] / "bench"
NAMES = ("router_overhead", "cutover", "revert_latency", "footprint", "gc_pauses")


PEERS = ("nginx", "haproxy")  # the proxies the router is compared with, as in bench/_peers.py


def _found(binary: str) -> bool:
    return bool(shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin"))


def _expected_peers() -> list[str]:
    return [p for p in PEERS if _found(p) or in_ci()]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the smoke run writes its results (not bench/results/: a full run's stay)."""
    return tmp_path_factory.mktemp("bench-results")


@pytest.fixture(scope="module")
def smoke_run(results: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / "perf.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "BGSERVE_BENCH_RESULTS": str(results)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert {f"{name}.json" for name in NAMES} <= {p.name for p in results.iterdir()}
    return result.stdout


@pytest.fixture(scope="module")
def saved(smoke_run: str, results: Path) -> Callable[[str], Any]:
    """A benchmark's results from the smoke run, by name."""
    return lambda name: json.loads((results / f"{name}.json").read_text())


def test_router_overhead_reports_each_path_and_level(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
    paths = ["direct", "bgserve", *_expected_peers()]
    rows = saved("router_overhead")["rows"]
    assert [(r["path"], r["concurrency"]) for r in rows] == [(p, c) for c in (1, 32) for p in paths]
    for row in rows:
        assert row["n"] > 0 and row["failures"] == 0 and row["throughput_rps"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p999_ms"]
    assert "Router overhead" in smoke_run and "c=1 p50 added by bgserve" in smoke_run
    if "nginx" in paths:
        assert "c=32 throughput bgserve / nginx" in smoke_run


def test_router_overhead_gives_every_tail_figure_its_spread(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
    for row in saved("router_overhead")["rows"]:
        by_round = row["p99_by_round_ms"]
        assert len(by_round) == row["rounds"] == 8
        spread = row["p99_round_spread_ms"]
        assert spread["min"] == min(by_round) and spread["max"] == max(by_round)
        # Each round's p99 is one of its requests: none beyond the run's slowest request.
        assert spread["max"] <= row["max_ms"]
        for key in ("p99_ci_ms", "p999_ci_ms"):
            low, high = row[key]
            assert 0 < low <= high <= row["max_ms"]
    assert "p99 95% CI" in smoke_run


def test_router_overhead_compares_every_proxy_with_every_other(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
    data = saved("router_overhead")
    by = {(r["path"], r["concurrency"]): r for r in data["rows"]}
    proxies = ["bgserve", *_expected_peers()]
    pairs = [(r["pair"], r["concurrency"]) for r in data["ratios"]]
    assert pairs == [(f"{a} / {b}", c) for c in (1, 32) for a, b in combinations(proxies, 2)]
    for ratio in data["ratios"]:
        top, bottom = (by[name, ratio["concurrency"]] for name in ratio["pair"].split(" / "))
        for key in ("p50_ms", "p99_ms", "p999_ms"):
            assert ratio[key] == pytest.approx(top[key] / bottom[key])
    assert {"bgserve", *_expected_peers()} <= set(data["proxy_cpu_us_per_request"])
    assert "Proxies side by side" in smoke_run


@pytest.mark.parametrize("peer", PEERS)
def test_peer_path_is_skipped_only_outside_ci(peer: str) -> None:
    if not _found(peer):
        missing(f"{peer} is not installed (tools/test-servers.sh installs it)")


def _named_server(name: str) -> ThreadingHTTPServer:
    """A real HTTP/1.1 server on loopback that answers every POST with its own name."""

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def upstreams() -> Iterator[list[ThreadingHTTPServer]]:
    servers = [_named_server("a"), _named_server("b")]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _bench_module(name: str) -> Any:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.mark.parametrize("peer", PEERS)
def test_peer_answers_through_both_upstreams_by_weight(
    peer: str, upstreams: list[ThreadingHTTPServer]
) -> None:
    if not _found(peer):
        missing(f"{peer} is not installed (tools/test-servers.sh installs it)")
    find, start, _ = _bench_module("_peers").KNOWN[peer]
    ports = [server.server_address[1] for server in upstreams]
    weighted = [("127.0.0.1", port, weight) for port, weight in zip(ports, (3, 1), strict=True)]
    answered: Counter[str] = Counter()
    with start(find(), weighted) as proxy, httpx.Client() as client:
        for _ in range(400):  # one keep-alive connection: the proxy balances per request
            response = client.post(
                f"http://127.0.0.1:{proxy.port}/v2/models/x/infer", content=b"{}"
            )
            assert response.status_code == 200
            answered[response.text] += 1
    assert set(answered) == {"a", "b"}
    assert answered["a"] == pytest.approx(300, abs=15)


def test_cutover_reports_every_step_and_no_failure(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
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


def test_revert_latency_reports_each_trial(smoke_run: str, saved: Callable[[str], Any]) -> None:
    data = saved("revert_latency")
    assert data["trials"] == 3 and len(data["results"]) == 3
    assert data["failures"] == 0
    assert {"effective_p50_ms", "effective_max_ms"} <= set(data)
    assert "Revert latency: 3 trials" in smoke_run


def test_gc_pauses_compares_a_frozen_slot_with_an_unfrozen_one(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
    data = saved("gc_pauses")
    by = {r["variant"]: r for r in data["rows"]}
    assert set(by) == {"gc.freeze", "no freeze"}
    assert by["gc.freeze"]["gc"]["frozen"] > 100_000 and by["no freeze"]["gc"]["frozen"] == 0
    assert all(r["n"] == 200 and r["failures"] == 0 for r in data["rows"])
    assert "GC pauses in a slot" in smoke_run


def test_footprint_reports_bgserve_each_slot_and_cold_start(
    smoke_run: str, saved: Callable[[str], Any]
) -> None:
    data = saved("footprint")
    processes = [r["process"] for r in data["rss_mb"]]
    assert processes[:2] == ["bgserve serve", "data plane"] and len(processes) == 4
    assert all(r["at_rest"] > 10 for r in data["rss_mb"])
    cold = data["cold_start"]
    assert 0 < cold["empty_ready_s"] < cold["one_deployment_ready_s"]
    assert "cold start" in smoke_run
