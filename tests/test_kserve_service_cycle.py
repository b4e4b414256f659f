"""A full release cycle through the real Service on KServe: real MLflow, real slots.

The test API server stands in for Kubernetes; a controller thread plays KServe for
real: every InferenceService gets a slot process serving its bundle, and deleting
the InferenceService stops that process. Comparison traffic reaches the slots
through the endpoints the backend reports.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgserve.backends.base import Backend
from bgserve.backends.k8s import DEPLOYMENT_LABEL, RELEASE_LABEL
from bgserve.backends.kserve import KServeBackend
from bgserve.backends.kserve_objects import isvc_name
from bgserve.comparison import Comparer
from bgserve.golden_sets import load_golden_set
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.service import Service
from bgserve.settings import Settings
from bgserve.store import Store
from tests.crd_schema import Crd, load_crds, require_crd_dir, validate_object
from tests.flow_helpers import RELEASES, register_demo
from tests.k8s_apiserver import ApiError, FakeApiServer

NS = "models"
KSERVE = ("serving.kserve.io", "inferenceservices")
READY_TIMEOUT = 120.0


class SlotProcesses:
    """Real slot processes keyed by (deployment, release id), on loopback ports."""

    def __init__(self) -> None:
        self.procs: dict[tuple[str, int], tuple[subprocess.Popen[bytes], int]] = {}
        self.lock = threading.Lock()

    def start(self, deployment: str, release_id: int, model_uri: str) -> str:
        """Start the slot unless running; wait until it answers ready; return its URL."""
        with self.lock:
            if (deployment, release_id) not in self.procs:
                self.procs[(deployment, release_id)] = self._spawn(
                    deployment, release_id, model_uri
                )
            proc, port = self.procs[(deployment, release_id)]
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, f"{url}/v2/models/{deployment}/ready")
        return url

    def _spawn(
        self, deployment: str, release_id: int, model_uri: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        listener = socket.create_server(("127.0.0.1", 0))
        args = [sys.executable, "-m", "bgserve.backends.slot_server", "--model-uri", model_uri]
        args += ["--deployment", deployment, "--release-id", str(release_id)]
        args += ["--socket-fd", str(listener.fileno())]
        try:
            proc = subprocess.Popen(
                args,
                pass_fds=(listener.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            port = int(listener.getsockname()[1])
            listener.close()
        return proc, port

    def stop(self, deployment: str, release_id: int) -> None:
        with self.lock:
            entry = self.procs.pop((deployment, release_id), None)
        if entry is not None:
            entry[0].terminate()
            entry[0].wait(timeout=30)

    def running(self) -> list[tuple[str, int]]:
        with self.lock:
            return sorted(k for k, (p, _) in self.procs.items() if p.poll() is None)

    def stop_all(self) -> None:
        for deployment, release_id in list(self.procs):
            self.stop(deployment, release_id)


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slot exited with {proc.returncode} before {url} was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {READY_TIMEOUT}s")


class Controller:
    """Plays a serving platform: polls some resources and reconciles each object.

    ``reconcile(obj)`` runs when an object's generation is not yet observed;
    ``removed(obj)`` runs once an object seen before is gone.
    """

    def __init__(
        self,
        server: FakeApiServer,
        plurals: tuple[str, ...],
        reconcile: Callable[[dict[str, Any]], None],
        removed: Callable[[dict[str, Any]], None],
    ) -> None:
        self.server, self.plurals = server, plurals
        self.reconcile, self.removed = reconcile, removed
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Controller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        while not self._stop.wait(0.01):
            current = {
                (o["kind"], o["metadata"]["name"]): o
                for plural in self.plurals
                for o in self.server.objects(plural)
            }
            for key in set(seen) - set(current):
                self._guard(self.removed, seen.pop(key))
            for key, obj in current.items():
                seen[key] = obj
                observed = obj.get("status", {}).get("observedGeneration")
                if observed != obj["metadata"]["generation"]:
                    self._guard(self.reconcile, obj)

    def _guard(self, step: Callable[[dict[str, Any]], None], obj: dict[str, Any]) -> None:
        try:
            step(obj)
        except ApiError:
            pass  # deleted meanwhile: the next poll sees it gone
        except Exception as exc:  # surfaced by the test, not lost in the thread
            self.errors.append(exc)


def slot_key(obj: Mapping[str, Any]) -> tuple[str, int]:
    labels = obj["metadata"]["labels"]
    return labels[DEPLOYMENT_LABEL], int(labels[RELEASE_LABEL])


def bundle_uri(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["annotations"]["bgserve.io/bundle-uri"])


def kserve_controller(server: FakeApiServer, slots: SlotProcesses) -> Controller:
    """KServe: a slot per InferenceService; its address is the slot's own URL."""

    def reconcile(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        url = slots.start(*slot_key(obj), bundle_uri(obj))
        status = {
            "observedGeneration": meta["generation"],
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": f"http://{meta['name']}.{NS}.example.com",  # external: not resolvable here
            "address": {"url": url},
        }
        server.set_status(*KSERVE, NS, meta["name"], status)

    return Controller(server, (KSERVE[1],), reconcile, lambda obj: slots.stop(*slot_key(obj)))


@pytest.fixture(scope="module")
def crds() -> Mapping[str, Crd]:
    return load_crds(require_crd_dir())


@pytest.fixture
def server(crds: Mapping[str, Crd]) -> Iterator[FakeApiServer]:
    with FakeApiServer(crds) as srv:
        yield srv


@pytest.fixture
def slots() -> Iterator[SlotProcesses]:
    procs = SlotProcesses()
    yield procs
    procs.stop_all()


def make_service(tmp_path: Path, mlflow_store: str, backend: Backend) -> Service:
    register_demo(mlflow_store)
    settings = Settings(
        home=tmp_path,
        mlflow_tracking_uri=mlflow_store,
        mlflow_registry_uri=mlflow_store,
        promote_step_pause_seconds=0,
    )
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    registry = MlflowRegistry(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    return Service(settings, store, registry, backend, sleep=lambda _: None)


def register(service: Service, prefix: str) -> dict[str, int]:
    """Blue v1 and green "reworded" (v1 model, v2 prompt: passes the gate)."""
    ids = {}
    for key in ("v1", "reworded"):
        _, model, prompt = RELEASES[key]
        ids[key] = service.register_release(f"{prefix}-{key}", model, prompt, "test").id
    return ids


def run_cycle(
    service: Service, name: str, ids: Mapping[str, int], check: Callable[[], None]
) -> list[dict[str, int]]:
    """deploy -> stage -> compare -> 10 -> 50 -> 100 -> revert; ``check`` after each step."""
    service.create_deployment(name, ids["v1"], "test")
    check()
    service.stage_green(name, ids["reworded"], "test")
    check()
    cases = load_golden_set("summarize", Path("prompts"))
    stored, report = Comparer(service).compare(name, cases, "test")
    assert report.verdict.passed, report.verdict.reasons
    assert stored.last_comparison is not None and stored.last_comparison["verdict"]["passed"]
    weights = []
    for weight in (10, 50, 100):
        state = service.shift(name, weight, "test").state
        weights.append({str(r.release_id): r.weight for r in state.routes()})
        check()
    reverted = service.revert(name, "test").state
    assert (reverted.blue, reverted.green, reverted.green_weight) == (ids["v1"], ids["reworded"], 0)
    check()
    return weights


def assert_requests_validate(server: FakeApiServer, crds: Mapping[str, Crd]) -> None:
    writes = [r for r in server.requests if r.verb in ("create", "update")]
    assert writes
    for request in writes:
        assert request.body is not None
        assert validate_object(crds, request.body) == [], request
    # 404: reads of objects not created yet; 409: a write that lost to the controller's
    # status update and was retried on a fresh read.
    refused = [r for r in server.requests if r.status >= 400 and r.status not in (404, 409)]
    assert refused == []


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def route_weights(server: FakeApiServer) -> dict[str, int]:
    (route,) = server.objects("httproutes")
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {r["name"].removesuffix("-predictor"): r["weight"] for r in refs}


def test_kserve_cycle_through_the_service_with_real_slots(
    tmp_path: Path,
    mlflow_store: str,
    server: FakeApiServer,
    crds: Mapping[str, Crd],
    slots: SlotProcesses,
) -> None:
    settings = Settings(
        kube_api_url=server.url,
        kube_namespace=NS,
        kube_poll_interval_seconds=0.02,
        slot_ready_timeout_seconds=READY_TIMEOUT,
    )
    backend = KServeBackend(settings)
    service = make_service(tmp_path, mlflow_store, backend)
    ids = register(service, "kcycle")

    def check() -> None:
        state = service.get_deployment("kc").state
        weights = route_weights(server)
        assert sum(weights.values()) == 100
        assert weights == {isvc_name("kc", r.release_id): r.weight for r in state.routes()}

    with kserve_controller(server, slots) as controller:
        steps = run_cycle(service, "kc", ids, check)
        info = backend.slot_info("kc", ids["v1"])
        assert info is not None and info.endpoint.startswith("http://127.0.0.1:")
        v1, green = str(ids["v1"]), str(ids["reworded"])
        assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
        assert route_weights(server) == {isvc_name("kc", ids["v1"]): 100,
                                         isvc_name("kc", ids["reworded"]): 0}  # fmt: skip
        for release_id in ids.values():
            backend.retire_slot("kc", release_id)
        wait_until(lambda: slots.running() == [], "slots to stop after their deletion")
    assert controller.errors == []
    assert_requests_validate(server, crds)
    backend.close()
    service.store.close()
