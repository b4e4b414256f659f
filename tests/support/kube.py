"""What the Kubernetes backend tests share: sample releases, slot processes that play a
serving platform's pods, a controller loop, and a cycle driven through the real service."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes.client.exceptions import ApiException

from bgserve.app.golden_sets import load_golden_set
from bgserve.app.service import Service
from bgserve.backends.base import Backend
from bgserve.compose import Components, build_components
from bgserve.compose.backends import slot_mlflow
from bgserve.domain import rollout
from bgserve.domain.release import Release
from bgserve.domain.rollout import DeploymentState, Transition
from bgserve.kube.client import (
    DEPLOYMENT_LABEL,
    RELEASE_LABEL,
)
from bgserve.kube.kserve.backend import KServeBackend
from bgserve.kube.seldon import seldon_backend
from bgserve.kube.seldon.objects import EXPERIMENT, MODEL, SELDON_DEPLOYMENT
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.flow import RELEASES as DEMO_RELEASES
from tests.support.flow import register_demo
from tests.support.kube_fake_apiserver import ApiError, Recorded

NS = "models"


class Cluster(Protocol):
    """What a controller thread needs of an API server: the real one's namespace
    (:class:`tests.support.kube_namespace.KubeNamespace`) or the fake one."""

    def objects(self, plural: str) -> Iterator[dict[str, Any]]: ...

    def set_status(
        self, group: str, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None: ...


KSERVE = ("serving.kserve.io", "inferenceservices")


def make_release(release_id: int) -> Release:
    return Release(
        id=release_id,
        name=f"chat-v{release_id}",
        model_name="llm",
        model_version=release_id,
        prompt_name="greeting",
        prompt_version=release_id,
        bundle_name="bgserve.chat",
        bundle_version=release_id,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


RELEASES = {i: make_release(i) for i in (1, 2, 3)}


def shifting() -> DeploymentState:
    """Deployment ``chat``: blue release 1 at 70%, green release 2 at 30%."""
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    return rollout.shift(state, 30, force=True).state


def promoted() -> DeploymentState:
    """:func:`shifting` cut over: release 2 is blue at 100%, release 1 standby."""
    return rollout.shift(shifting(), 100, force=True).state


def perform(backend: KServeBackend, transition: Transition) -> DeploymentState:
    """Execute a transition's actions the way the service does."""
    name = transition.state.name
    for action in transition.actions:
        if isinstance(action, rollout.EnsureSlot):
            backend.ensure_slot(name, RELEASES[action.release_id])
        elif isinstance(action, rollout.SetRoutes):
            backend.set_routes(name, action.routes)
        elif isinstance(action, rollout.RetireSlot):
            backend.retire_slot(name, action.release_id)
    return transition.state


def at_ten_percent(backend: KServeBackend) -> DeploymentState:
    """Deployment ``chat``: release 1 blue, release 2 green at 10%."""
    state = perform(backend, rollout.create("chat", 1))
    state = perform(backend, rollout.stage_green(state, 2))
    return perform(backend, rollout.shift(state, 10, force=True))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


READY_TIMEOUT = 120.0


class SlotProcesses:
    """Real slot processes keyed by (deployment, release id), on ports of ``host``
    (loopback unless a test needs the slots at an address an EndpointSlice may name)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.procs: dict[tuple[str, int], tuple[subprocess.Popen[bytes], int]] = {}
        self.lock = threading.Lock()

    def start(
        self,
        deployment: str,
        release_id: int,
        model_uri: str,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start the slot (with ``extra`` arguments and ``env`` added to the environment)
        unless running; wait until it answers ready; return its URL."""
        with self.lock:
            if (deployment, release_id) not in self.procs:
                self.procs[(deployment, release_id)] = self._spawn(
                    deployment, release_id, model_uri, extra, env or {}
                )
            proc, port = self.procs[(deployment, release_id)]
        url = f"http://{self.host}:{port}"
        _wait_ready(proc, f"{url}/v2/models/{deployment}/ready")
        return url

    def _spawn(
        self,
        deployment: str,
        release_id: int,
        model_uri: str,
        extra: Sequence[str],
        env: Mapping[str, str],
    ) -> tuple[subprocess.Popen[bytes], int]:
        listener = socket.create_server((self.host, 0))
        args = [
            sys.executable,
            "-m",
            "bgserve.slot.server",
            "--model-uri",
            model_uri,
        ]
        args += ["--deployment", deployment, "--release-id", str(release_id)]
        args += ["--socket-fd", str(listener.fileno()), *extra]
        try:
            proc = subprocess.Popen(
                args,
                pass_fds=(listener.fileno(),),
                env={**os.environ, **env},
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

    ``reconcile(obj)`` runs when an object's generation is not yet observed (as
    ``observed(obj)`` reads it: ``status.observedGeneration`` by default);
    ``removed(obj)`` runs once an object seen before is gone.
    """

    def __init__(
        self,
        server: Cluster,
        plurals: tuple[str, ...],
        reconcile: Callable[[dict[str, Any]], None],
        removed: Callable[[dict[str, Any]], None],
        interval: float = 0.02,
        observed: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        self.server, self.plurals, self.interval = server, plurals, interval
        self.reconcile, self.removed = reconcile, removed
        self.observed = observed or _observed_generation
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
        while not self._stop.wait(self.interval):
            current = {
                (o["kind"], o["metadata"]["name"]): o
                for plural in self.plurals
                for o in self.server.objects(plural)
            }
            for key in set(seen) - set(current):
                self._guard(self.removed, seen.pop(key))
            for key, obj in current.items():
                seen[key] = obj
                if self.observed(obj) != obj["metadata"]["generation"]:
                    self._guard(self.reconcile, obj)

    def _guard(self, step: Callable[[dict[str, Any]], None], obj: dict[str, Any]) -> None:
        try:
            step(obj)
        except (ApiError, ApiException) as exc:
            if getattr(exc, "code", None) != 404 and getattr(exc, "status", None) != 404:
                self.errors.append(exc)  # only "deleted meanwhile" is expected
        except Exception as exc:  # surfaced by the test, not lost in the thread
            self.errors.append(exc)


def _observed_generation(obj: dict[str, Any]) -> object:
    return obj.get("status", {}).get("observedGeneration")


def slot_key(obj: Mapping[str, Any]) -> tuple[str, int]:
    labels = obj["metadata"]["labels"]
    return labels[DEPLOYMENT_LABEL], int(labels[RELEASE_LABEL])


def bundle_uri(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["annotations"]["bgserve.io/bundle-uri"])


def make_components(
    tmp_path: Path, mlflow_store: str, serving: Backend, **settings_extra: Any
) -> Components:
    """bgserve's parts on the ``serving`` backend, built by the composition root
    (``settings_extra``: more settings, flat names)."""
    register_demo(mlflow_store)
    settings = Settings(
        home=tmp_path,
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
        mlflow_tracking_uri=mlflow_store,
        mlflow_registry_uri=mlflow_store,
        plan_bake_s=0,
        # These cycles test outputs and weights; on a loaded 2-core machine the slots'
        # latencies are noise, so only a gross slowdown may fail the comparison.
        compare_thresholds={"max_latency_ratio_p50": 10.0, "max_latency_ratio_p95": 10.0},
        **settings_extra,
    )
    return build_components(settings, backend=serving)


def register(service: Service, prefix: str) -> dict[str, int]:
    """Blue v1 and green "reworded" (v1 model, v2 prompt: passes the gate)."""
    ids = {}
    for key in ("v1", "reworded"):
        _, model, prompt = DEMO_RELEASES[key]
        ids[key] = service.register_release(f"{prefix}-{key}", model, prompt, "test").id
    return ids


def run_cycle(
    parts: Components, name: str, ids: Mapping[str, int], check: Callable[[], None]
) -> list[dict[str, int]]:
    """deploy -> stage -> compare -> 10 -> 50 -> 100 -> revert; ``check`` after each step."""
    service = parts.service
    service.create_deployment(name, ids["v1"], "test")
    check()
    service.stage_green(name, ids["reworded"], "test")
    check()
    cases = load_golden_set("summarize", Path("prompts"))
    stored, report = parts.comparer.compare(name, cases, "test")
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


def assert_requests_validate(requests: Sequence[Recorded], crds: Mapping[str, Crd]) -> None:
    """Every object bgserve wrote validates strictly, and no request was refused."""
    writes = [r for r in requests if r.verb in ("create", "update", "patch")]
    assert writes
    for request in writes:
        assert request.body is not None
        assert validate_object(crds, request.body) == [], request
    # 404: reads of objects not created yet; 409: a write that lost to the controller's
    # status update and was retried on a fresh read.
    refused = [r for r in requests if r.status >= 400 and r.status not in (404, 409)]
    assert refused == []


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class PlatformStatus:
    """Plays KServe or Seldon (v2 or v1) writing status only: no pods, every slot ready
    except those taken down with :meth:`take_down`.

    Used where a test needs the platform's answers but not its serving (the backend
    contract suite); the full cycles use :class:`SlotProcesses` for real pods.
    """

    PLURALS = {
        "kserve": ("inferenceservices",),
        "seldon": ("models", "experiments", "seldondeployments"),
    }

    def __init__(self, server: Cluster, platform: str) -> None:
        self.server = server
        self.down: set[tuple[str, int]] = set()
        self.controller = Controller(server, self.PLURALS[platform], self.reconcile, lambda _: None)

    def take_down(self, deployment: str, release_id: int) -> None:
        """Report the slot not ready from now on, at its current generation."""
        self.down.add((deployment, release_id))
        for plural in self.PLURALS["kserve"] + self.PLURALS["seldon"]:
            for obj in self.server.objects(plural):
                with contextlib.suppress(ApiError, ApiException):  # deleted meanwhile
                    self.reconcile(obj)

    def reconcile(self, obj: dict[str, Any]) -> None:
        """Write the status the platform would report for ``obj`` now."""
        group, plural = _RESOURCES[obj["kind"]]
        meta = obj["metadata"]
        status = _STATUS[obj["kind"]](obj, self.down)
        status["observedGeneration"] = meta["generation"]
        self.server.set_status(group, plural, meta["namespace"], meta["name"], status)


def _ready_conditions(ready: bool, *types: str) -> list[dict[str, str]]:
    state, reason = ("True", "ModelAvailable") if ready else ("False", "ModelFailed")
    return [{"type": t, "status": state, "reason": reason} for t in types]


def _isvc_status(obj: Mapping[str, Any], down: set[tuple[str, int]]) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "conditions": _ready_conditions(slot_key(obj) not in down, "Ready"),
        "url": f"http://{name}.{NS}.example.com",
    }


def _model_status(obj: Mapping[str, Any], down: set[tuple[str, int]]) -> dict[str, Any]:
    return {"conditions": _ready_conditions(slot_key(obj) not in down, "ModelReady", "Ready")}


def _experiment_status(obj: Mapping[str, Any], down: set[tuple[str, int]]) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "True"}]}


def _sdep_status(obj: Mapping[str, Any], down: set[tuple[str, int]]) -> dict[str, Any]:
    """As Seldon v1 reports it: a Deployment per predictor (no available replica for
    those taken down), a Service for every predictor, and the whole SeldonDeployment
    ``Creating`` while any predictor is down."""
    name, deployment = obj["metadata"]["name"], obj["metadata"]["labels"][DEPLOYMENT_LABEL]
    services, deployments = {}, {}
    for p in obj["spec"]["predictors"]:
        service = f"{name}-{p['name']}"
        services[service] = {"svcName": service, "httpEndpoint": f"{service}.{NS}:8000"}
        up = (deployment, int(p["name"].removeprefix("r"))) not in down
        deployments[f"{service}-0-slot"] = {
            "name": f"{service}-0-slot",
            "replicas": 1,
            "availableReplicas": 1 if up else 0,
        }
    state = "Available" if all(d["availableReplicas"] for d in deployments.values()) else "Creating"
    return {"state": state, "serviceStatus": services, "deploymentStatus": deployments}


_RESOURCES = {
    "InferenceService": KSERVE,
    "Model": (MODEL.group, MODEL.plural),
    "Experiment": (EXPERIMENT.group, EXPERIMENT.plural),
    "SeldonDeployment": (SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural),
}
_STATUS: dict[str, Callable[[Mapping[str, Any], set[tuple[str, int]]], dict[str, Any]]] = {
    "InferenceService": _isvc_status,
    "Model": _model_status,
    "Experiment": _experiment_status,
    "SeldonDeployment": _sdep_status,
}


def kserve_backend(settings: Settings, **injected: Any) -> KServeBackend:
    """The KServe backend as the composition root builds it from ``settings``, with
    ``injected`` test parts (``api``, ``clock``, ``sleep``)."""
    return KServeBackend(
        settings.kube,
        ready_timeout=settings.slot_ready_timeout_seconds,
        mlflow=slot_mlflow(settings),
        **injected,
    )


def seldon_backend_of(settings: Settings, **injected: Any) -> Backend:
    """The Seldon backend as the composition root builds it from ``settings``, with
    ``injected`` test parts (``api``, ``clock``, ``sleep``)."""
    return seldon_backend(
        settings.kube,
        ready_timeout=settings.slot_ready_timeout_seconds,
        mlflow=slot_mlflow(settings),
        **injected,
    )
