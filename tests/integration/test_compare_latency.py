"""An identical green passes the latency check, at the default limits, every time: slots
warmed up first, each side's calls interleaved, per-case medians over repeated calls."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from bgserve.app.slot_calls import QueryPlan, SlotTarget, query_slots
from bgserve.evaluation.golden import GoldenCase
from tests.support.flow import deploy, ok

# make_settings loosens the latency limits for other flows; this test uses the defaults.
DEFAULT_LATENCY = {"max_latency_ratio_p50": 2.0, "max_latency_ratio_p95": 3.0}


@pytest.mark.integration
@pytest.mark.slow
def test_an_identical_green_passes_the_latency_check_20_times_out_of_20(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "twins", rel["v1"], rel["reworded"])
    body = {"golden_set": "summarize", "thresholds": DEFAULT_LATENCY}
    failures = []
    for attempt in range(20):
        report = ok(client.post("/deployments/twins/compare", json=body))
        summary = report["summary"]
        assert summary["green"]["latency_samples"] > summary["cases"], "cases were probed"
        if not report["verdict"]["passed"]:
            failures.append((attempt, report["verdict"]["reasons"]))
    assert failures == []


class ColdSlot:
    """An OIP v2 slot on loopback whose first ``cold`` calls take 400 ms (a model that
    loads lazily), then answer at once; it counts the calls it got."""

    def __init__(self, cold: int) -> None:
        self.calls = 0
        lock = threading.Lock()
        slot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    slot.calls += 1
                    number = slot.calls
                if number <= cold:
                    time.sleep(0.4)
                text = body["inputs"][0]["data"][0]
                data = json.dumps({"outputs": [{"name": "output", "data": [text]}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2/models/m/infer"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_warm_up_calls_are_not_measured_and_probed_cases_are_called_again() -> None:
    blue, green = ColdSlot(cold=2), ColdSlot(cold=0)
    try:
        cases = [GoldenCase(id=f"c{i}", inputs={"text": f"t{i}"}) for i in range(6)]
        plan = QueryPlan(concurrency=1, timeout=10, warmup=2, repeats=3, probe_cases=4)
        targets = [SlotTarget(blue.url, ["text"]), SlotTarget(green.url, ["text"])]
        blue_results, green_results = query_slots(targets, cases, plan)
    finally:
        blue.close()
        green.close()
    assert blue.calls == green.calls == 2 + 6 + 2 * 4
    assert all(r.latency_ms < 300 for r in blue_results.values()), "cold calls not measured"
    assert [len(green_results[c.id].probe_ms) for c in cases] == [3, 3, 3, 3, 0, 0]
    assert green_results["c5"].output == "t5"
