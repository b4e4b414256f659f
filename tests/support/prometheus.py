"""A real Prometheus server for tests, scraping an exporter the test controls, on loopback.

The Debian package (``apt-get install -y prometheus``) is enough. Outside CI a missing
binary skips the tests that need it; under ``CI=true`` it fails them. The exporter is a
``prometheus_client`` registry served on a free loopback port; Prometheus scrapes it every
second into a throwaway TSDB and listens on another free loopback port.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import httpx
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from tests.support.missing import missing
from tests.support.processes import free_port

ISTIO_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
"""Istio's default buckets of istio_request_duration_milliseconds (coarser than bgserve's)."""

START_TIMEOUT_S = 60.0


class Exporter:
    """Istio-like and Seldon-like series whose values the test sets by "serving" traffic."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "istio_requests_total",
            "Requests seen by the destination's sidecar.",
            ["reporter", "destination_workload_namespace", "destination_workload", "response_code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration seen by the destination's sidecar.",
            ["reporter", "destination_workload_namespace", "destination_workload"],
            buckets=ISTIO_BUCKETS_MS,
            registry=self.registry,
        )
        self._seldon = Counter(
            "seldon_model_infer_total",
            "Inference calls per model.",
            ["server", "model", "method_type", "code"],
            registry=self.registry,
        )
        self.port = 0
        self._server: WSGIServer | None = None

    def istio(
        self, namespace: str, workload: str, requests: int, errors: int, latency_ms: float
    ) -> None:
        """Count ``requests`` to ``workload`` (``errors`` of them 503), each ``latency_ms``."""
        for code, count in (("200", requests - errors), ("503", errors)):
            if count:
                self._requests.labels("destination", namespace, workload, code).inc(count)
        histogram = self._duration.labels("destination", namespace, workload)
        for _ in range(requests):
            histogram.observe(latency_ms)

    def seldon(self, model: str, code: str, count: int) -> None:
        """Count ``count`` REST inference calls to ``model`` answered with ``code``."""
        self._seldon.labels("mlserver", model, "rest", code).inc(count)

    def start(self) -> None:
        """Serve /metrics on a free loopback port."""
        server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self._server = server
        self.port = server.server_port

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class PrometheusServer:
    """One prometheus process with a 1 s scrape of the exporter."""

    def __init__(self, binary: str, root: Path, exporter_port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exporter_port = exporter_port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start on 127.0.0.1 and wait until ready with the exporter's target up."""
        config = self.root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.exporter_port}']\n"
        )
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        log = (self.root / "prometheus.log").open("wb")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_for(self._target_up, "ready with the exporter's target up")

    def stop(self) -> None:
        """Terminate the process (its TSDB is thrown away)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _target_up(self) -> bool:
        try:
            if httpx.get(f"{self.url}/-/ready", timeout=2).status_code != 200:
                return False
            body = httpx.get(
                f"{self.url}/api/v1/query", params={"query": 'up{job="exporter"} == 1'}, timeout=2
            ).json()
        except httpx.HTTPError:
            return False
        return bool(body.get("data", {}).get("result"))

    def _wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            if check():
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not {what} within {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        """The last lines of the server's log."""
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


@contextmanager
def prometheus_with_exporter() -> Iterator[tuple[PrometheusServer, Exporter]]:
    """A running Prometheus scraping a fresh exporter; skips (fails under CI) without one."""
    binary = _binary()
    if binary is None:
        missing("Prometheus is not installed (apt-get install -y prometheus)")
    exporter = Exporter()
    exporter.start()
    root = Path(tempfile.mkdtemp(prefix="bgserve-prom-"))
    server = PrometheusServer(binary, root, exporter.port)
    try:
        server.start()
        yield server, exporter
    finally:
        server.stop()
        exporter.stop()
        shutil.rmtree(root, ignore_errors=True)
