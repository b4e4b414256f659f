"""A real bgserve stack for the benchmarks: MLflow on SQLite, `bgserve serve`, two releases.

Everything lives in a temporary directory. bgserve runs as its own process (the control
API, with the data-plane process, exactly as `bgserve serve` runs in production), its slots as
its children; the benchmark talks to it over HTTP only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from bgserve.demo.models import push_demo_prompts, register_demo_models

DEPLOYMENT = "bench"
PRINCIPAL_HEADERS: dict[str, str] = {}
INFER_BODY = (
    b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], '
    b'"data": ["Blue-green keeps two releases side by side. Traffic moves in steps."]}]}'
)


def free_port() -> int:
    """A port free right now on the loopback (the benchmark owns this machine's loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, pause: float = 0.02) -> float:
    """Poll ``check()`` until it is true; return the seconds waited. Raises TimeoutError."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(pause)
    raise TimeoutError(f"{what} not within {timeout}s")


def answers_200(url: str, body: bytes | None = None) -> bool:
    """Whether ``url`` answers 200 now (GET, or POST with ``body``)."""
    try:
        if body is None:
            return httpx.get(url, timeout=1.0).status_code == 200
        headers = {"content-type": "application/json"}
        return httpx.post(url, content=body, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Serve:
    """One `bgserve serve` process and its control API client."""

    proc: subprocess.Popen[bytes]
    port: int
    data_port: int
    log_path: Path
    # One keep-alive client: a new one per call would add its own set-up to every timing.
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=120.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the control API; raise with the answer's text on a non-2xx status."""
        response = self.client.request(method, self.url + path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def infer_url(self, deployment: str = DEPLOYMENT) -> str:
        return f"http://127.0.0.1:{self.data_port}/v2/models/{deployment}/infer"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (bgserve stops its slots), SIGKILL if it lingers."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_env(home: Path, mlflow_uri: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of a `bgserve serve` keeping its state under ``home``, with ``extra``
    settings on top."""
    return {
        **os.environ,
        "BGSERVE_HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_REGISTRY_URI": mlflow_uri,
        "BGSERVE_PLAN_BAKE_S": "0",
        **extra,
    }


def spawn_serve(home: Path, mlflow_uri: str, extra: Mapping[str, str] = {}) -> Serve:
    """Start `bgserve serve` on free ports with ``extra`` settings (does not wait for it)."""
    home.mkdir(parents=True, exist_ok=True)
    port, data_port = free_port(), free_port()
    log_path = home / "serve.log"
    args = [sys.executable, "-m", "bgserve", "serve", "--port", str(port)]
    args += ["--data-port", str(data_port)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            env=serve_env(home, mlflow_uri, extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Serve(proc, port, data_port, log_path)


def wait_ready(serve: Serve, timeout: float = 180.0) -> float:
    """Seconds until /readyz answers 200. Raises with the log tail if bgserve exits."""

    def ready() -> bool:
        if serve.proc.poll() is not None:
            tail = serve.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bgserve serve exited ({serve.proc.returncode}):\n{tail}")
        return answers_200(serve.url + "/readyz")

    return wait_until(ready, timeout, "bgserve /readyz")


class ServeStack:
    """A ``bgserve serve`` in a temporary directory with its own MLflow store, started on
    entry (whatever it started is stopped if starting fails) and removed on exit
    (``BGSERVE_BENCH_KEEP`` keeps the directory). Subclasses start it in ``_start``."""

    prefix = "bgserve-bench-"

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.mlflow_uri = f"sqlite:///{self.tmp / 'mlflow.db'}"
        self.serve: Serve | None = None

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.serve is not None:
            self.serve.stop()
        if os.environ.get("BGSERVE_BENCH_KEEP"):
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Stack(ServeStack):
    """MLflow with the demo models and prompts, `bgserve serve`, releases A and B deployed.

    Release A (summarizer v1 + prompt v1) is blue, release B (summarizer v1 + prompt v2)
    is staged green at 0 on deployment ``bench``; both slots are warmed up.
    """

    prefix = "bgserve-perf-"

    def __init__(self) -> None:
        super().__init__()
        self.releases: dict[str, int] = {}
        self.endpoints: dict[int, str] = {}

    @property
    def api(self) -> Serve:
        assert self.serve is not None, "the stack is not started"
        return self.serve

    def _start(self) -> None:
        register_demo_models(self.mlflow_uri, self.mlflow_uri)
        push_demo_prompts(self.mlflow_uri, self.mlflow_uri)
        self.serve = spawn_serve(self.tmp / "home", self.mlflow_uri)
        wait_ready(self.serve)
        for name, prompt in (("a", "prompts:/summarize/1"), ("b", "prompts:/summarize/2")):
            model = "models:/summarizer/1"
            body = {"name": f"rel-{name}", "model_uri": model, "prompt_uri": prompt}
            self.releases[name] = self.api.api("POST", "/releases", body)["id"]
        self.api.api("POST", "/deployments", {"name": DEPLOYMENT, "release_id": self.releases["a"]})
        state = self.api.api(
            "POST", f"/deployments/{DEPLOYMENT}/green", {"release_id": self.releases["b"]}
        )
        for role in ("blue", "green"):
            self.endpoints[state[role]["release"]["id"]] = state[role]["endpoint"]
        self.warm_up()

    def slot_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of slot A then slot B."""
        found = []
        for name in ("a", "b"):
            host, port = self.endpoints[self.releases[name]].removeprefix("http://").split(":")
            found.append((host, int(port)))
        return found

    def warm_up(self, requests: int = 20) -> None:
        """Send a few requests to each slot directly: the first predictions load lazily."""
        for endpoint in self.endpoints.values():
            url = f"{endpoint}/v2/models/{DEPLOYMENT}/infer"
            for _ in range(requests):
                answers_200(url, INFER_BODY)

    def set_green_weight(self, weight: int) -> dict[str, Any]:
        body = {"weight": weight, "force": True}
        result: dict[str, Any] = self.api.api("POST", f"/deployments/{DEPLOYMENT}/promote", body)
        return result

    def revert(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api.api("POST", f"/deployments/{DEPLOYMENT}/revert", {})
        return result
