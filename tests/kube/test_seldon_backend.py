"""The Seldon backend (v2 Models + Experiment, v1 SeldonDeployment) against a real
kube-apiserver (bgserve as a user holding only its declared Role): a status-only
controller for the backend's rules, and real slots for a full cycle through the Service.
The loopback fake API server stays for a write racing bgserve's and the injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.kube.seldon.base import required_rbac
from bgserve.kube.seldon.objects import (
    EXPERIMENT,
    MODEL,
    SELDON_DEPLOYMENT,
    experiment,
    model_name,
    predictor_name,
    sdep_name,
)
from bgserve.kube.seldon.v1 import SeldonV1Backend
from bgserve.kube.seldon.v2 import SeldonV2Backend
from bgserve.settings import Settings
from tests.support.crd_schema import Crd
from tests.support.kube import (
    READY_TIMEOUT,
    RELEASES,
    Cluster,
    Controller,
    SlotProcesses,
    assert_requests_validate,
    bundle_uri,
    make_components,
    perform,
    register,
    run_cycle,
    seldon_backend_of,
    slot_key,
    wait_until,
)
from tests.support.kube_fake_apiserver import FakeApiServer, Store
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration

NS = "models"
SELDON_PLURALS = ("models", "experiments", "seldondeployments")
STORAGE = "s3://bundles/{bundle_name}/{bundle_version}"
Backendish = SeldonV2Backend | SeldonV1Backend


def settings_for(server: FakeApiServer, flavour: str, **extra: Any) -> Settings:
    """Settings for the fake server (the tests that need it)."""
    values: dict[str, Any] = {
        "kube_api_url": server.url,
        "kube_namespace": NS,
        "seldon_flavour": flavour,
        "kube_bundle_storage_uri": STORAGE,
        "kube_poll_interval_seconds": 0.002,
        "slot_ready_timeout_seconds": 10,
    }
    return Settings(**{**values, **extra})


def fake_backend(server: FakeApiServer, flavour: str, **extra: Any) -> Backendish:
    backend = seldon_backend_of(settings_for(server, flavour, **extra))
    assert isinstance(backend, SeldonV2Backend | SeldonV1Backend)
    return backend


def make_backend(ns: KubeNamespace, flavour: str, **extra: Any) -> Backendish:
    """The backend on the real server, as user bgserve with its declared Role."""
    values: dict[str, Any] = {
        "seldon_flavour": flavour,
        "kube_bundle_storage_uri": STORAGE,
        "slot_ready_timeout_seconds": 10,
        **extra,
    }
    settings = ns.settings(required_rbac(flavour), **values)
    backend = seldon_backend_of(settings, api=ns.api_for(settings))
    assert isinstance(backend, SeldonV2Backend | SeldonV1Backend)
    return backend


def model_status(obj: Mapping[str, Any], ready: bool) -> dict[str, Any]:
    state = "True" if ready else "False"
    reason = "ModelAvailable" if ready else "ModelFailed"
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "conditions": [
            {"type": "ModelReady", "status": state, "reason": reason},
            {"type": "Ready", "status": state, "reason": reason},
        ],
    }


def sdep_status(
    obj: Mapping[str, Any], endpoints: Mapping[str, str], down: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """As Seldon v1 reports it: per predictor a Service and a Deployment (no available
    replica for those ``down``); the whole SeldonDeployment Creating while one is down."""
    name = obj["metadata"]["name"]
    services, deployments = {}, {}
    for p in obj["spec"]["predictors"]:
        service = f"{name}-{p['name']}"
        endpoint = endpoints.get(p["name"], f"{service}.{NS}:8000")
        services[service] = {"svcName": service, "httpEndpoint": endpoint}
        available = 0 if p["name"] in down else 1
        deployments[f"{service}-0-slot"] = {"replicas": 1, "availableReplicas": available}
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "state": "Creating" if down else "Available",
        "serviceStatus": services,
        "deploymentStatus": deployments,
    }


def experiment_ready(server: Cluster, obj: Mapping[str, Any]) -> None:
    status = {**model_status(obj, True), "conditions": [{"type": "Ready", "status": "True"}]}
    server.set_status(EXPERIMENT.group, EXPERIMENT.plural, NS, obj["metadata"]["name"], status)


def fake_seldon(server: Cluster, ready: Callable[[str], bool] = lambda _: True) -> Controller:
    """Status only: Models Ready (or failed), SeldonDeployments Available."""

    def reconcile(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Model":
            server.set_status(MODEL.group, MODEL.plural, NS, name, model_status(obj, ready(name)))
        elif obj["kind"] == "Experiment":
            experiment_ready(server, obj)
        else:
            status = sdep_status(obj, {})
            server.set_status(SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural, NS, name, status)

    return Controller(server, SELDON_PLURALS, reconcile, lambda _: None)


def expected(state: DeploymentState) -> dict[int, int]:
    return {r.release_id: r.weight for r in state.routes()}


def stored_weights(server: Cluster, flavour: str) -> dict[int, int]:
    if flavour == "v2":
        (exp,) = server.objects("experiments")
        prefix = len("chat-r")
        return {int(c["name"][prefix:]): c["weight"] for c in exp["spec"]["candidates"]}
    (sdep,) = server.objects("seldondeployments")
    return {int(p["name"][1:]): p["traffic"] for p in sdep["spec"]["predictors"]}


def full_cycle(backend: Backendish, server: Cluster, flavour: str) -> DeploymentState:
    state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
    assert stored_weights(server, flavour) == {1: 100}
    for step in (
        lambda s: rollout.stage_green(s, 2),
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
        lambda s: rollout.shift(s, 100, force=True),
        lambda s: rollout.stage_green(s, 3),
    ):
        state = perform(backend, step(state))  # type: ignore[arg-type]
        weights = stored_weights(server, flavour)
        assert sum(weights.values()) == 100
        assert weights == expected(state)
    return state


def rbac_ok(server: KubeNamespace, flavour: str) -> set[tuple[str, str, str]]:
    seen = {(r.group, r.resource, r.verb) for r in server.requests}
    granted = {
        (g, res, v)
        for rule in required_rbac(flavour)
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert seen <= granted
    return seen


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_full_cycle_weights_sum_to_100_and_requests_validate(
    kube_ns: KubeNamespace, crds: Mapping[str, Crd], flavour: str
) -> None:
    backend = make_backend(kube_ns, flavour)
    with fake_seldon(kube_ns) as controller:
        state = full_cycle(backend, kube_ns, flavour)
    assert controller.errors == []
    assert (state.blue, state.green, state.standby) == (2, 3, None)
    assert_requests_validate(kube_ns.requests, crds)
    seen = rbac_ok(kube_ns, flavour)
    # The old standby was retired: its Model deleted (v2), its predictor removed (v1).
    assert any(verb == "delete" for _, _, verb in seen) == (flavour == "v2")
    assert backend.slot_info("chat", 1) is None
    backend.close()
    backend.close()


def test_v2_experiment_from_the_first_release_and_default_on_request(
    kube_ns: KubeNamespace,
) -> None:
    backend = make_backend(kube_ns, "v2", seldon_experiment_default=True)
    with fake_seldon(kube_ns):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        state = perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]
        (exp,) = kube_ns.objects("experiments")
        assert exp["metadata"]["name"] == "chat" and exp["spec"]["default"] == "chat-r1"
        perform(backend, rollout.shift(state, 100, force=True))  # type: ignore[arg-type]
    (exp,) = kube_ns.objects("experiments")
    assert exp["spec"]["default"] == "chat-r2"
    assert [c["weight"] for c in exp["spec"]["candidates"]] == [100, 0]


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_ensure_slot_is_idempotent(kube_ns: KubeNamespace, flavour: str) -> None:
    backend = make_backend(kube_ns, flavour)
    with fake_seldon(kube_ns):
        first = backend.ensure_slot("chat", RELEASES[1])
        writes = len([r for r in kube_ns.requests if r.verb in ("create", "patch")])
        again = backend.ensure_slot("chat", RELEASES[1])
    assert first == again and first.ready
    assert writes == len([r for r in kube_ns.requests if r.verb in ("create", "patch")]) == 1
    assert backend.slot_info("chat", 9) is None


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_timeout_removes_the_new_slot_and_keeps_weights(
    kube_ns: KubeNamespace, flavour: str
) -> None:
    backend = make_backend(kube_ns, flavour, slot_ready_timeout_seconds=2)
    with fake_seldon(kube_ns):
        perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])  # no controller now: never ready
    assert 2 <= time.monotonic() - started < 10
    assert stored_weights(kube_ns, flavour) == {1: 100}
    assert backend.slot_info("chat", 2) is None


def test_v2_failed_load_fails_fast(kube_ns: KubeNamespace) -> None:
    backend = make_backend(kube_ns, "v2")
    with fake_seldon(kube_ns, ready=lambda name: name != "chat-r2"):
        backend.ensure_slot("chat", RELEASES[1])
        with pytest.raises(BackendError, match="ModelFailed") as info:
            backend.ensure_slot("chat", RELEASES[2])
    assert not isinstance(info.value, ReadinessTimeout)
    assert [o["metadata"]["name"] for o in kube_ns.objects("models")] == ["chat-r1"]


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_set_routes_refuses_missing_slots_and_bad_weights(
    kube_ns: KubeNamespace, flavour: str
) -> None:
    backend = make_backend(kube_ns, flavour)
    with fake_seldon(kube_ns):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="ensure its slot"):
        backend.set_routes("chat", rollout.stage_green(state, 3).state.routes())
    with pytest.raises(BackendError, match="summing to 100"):
        backend.set_routes("chat", [rollout.Route("blue", 1, 90)])
    assert stored_weights(kube_ns, flavour) == {1: 100}


def test_v1_conflict_is_retried_on_a_fresh_read(server: FakeApiServer) -> None:
    """A write racing bgserve's (the fake server injects it on cue): 409, read again."""
    backend = fake_backend(server, "v1")
    with fake_seldon(server):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        state = perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]

    def other_writer(store: Store, plural: str, name: str) -> None:
        key = (SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural, NS, sdep_name("chat"))
        obj = dict(store.get(key))
        obj["metadata"] = {**obj["metadata"], "annotations": {"team": "platform"}}
        store.write(store.crds[key[:2]], key, obj, "")

    server.before_next_write(other_writer)
    state = perform(backend, rollout.shift(state, 10, force=True))  # type: ignore[arg-type]
    applies = [r.status for r in server.requests if r.verb == "patch"]
    assert applies[-2:] == [409, 200]
    assert stored_weights(server, "v1") == expected(state)
    (sdep,) = server.objects("seldondeployments")
    assert sdep["metadata"]["annotations"] == {"team": "platform"}


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_unmanaged_object_in_the_way_is_left_alone(kube_ns: KubeNamespace, flavour: str) -> None:
    backend = make_backend(kube_ns, flavour)
    resource = MODEL if flavour == "v2" else SELDON_DEPLOYMENT
    name = model_name("chat", 1) if flavour == "v2" else sdep_name("chat")
    from bgserve.kube.seldon.objects import seldon_objects

    (squatter, *_) = seldon_objects(
        "chat", rollout.create("chat", 1).state.routes(), RELEASES, backend.kube
    )
    squatter["metadata"] = {**squatter["metadata"], "name": name, "labels": {"team": "x"}}
    kube_ns.put_object(resource.group, resource.plural, squatter)
    with pytest.raises(BackendError, match="not managed by bgserve"):
        backend.ensure_slot("chat", RELEASES[1])
    backend.retire_slot("chat", 1)
    assert len(list(kube_ns.objects(resource.plural))) == 1


def test_v1_retire_refuses_a_predictor_with_traffic(kube_ns: KubeNamespace) -> None:
    backend = make_backend(kube_ns, "v1")
    with fake_seldon(kube_ns):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="still has traffic"):
        backend.retire_slot("chat", 1)
    backend.retire_slot("chat", 2)
    backend.retire_slot("chat", 2)
    assert stored_weights(kube_ns, "v1") == {1: 100}


class ModelGateway:
    """A loopback gateway with one path prefix per Model (``/<model>/...`` to its
    slot), as a route that sets ``seldon-model: <model>`` would be in a cluster."""

    def __init__(self) -> None:
        self.upstreams: dict[str, str] = {}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> ModelGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstreams = self.upstreams

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def _forward(self, method: str) -> None:
                model, _, rest = self.path.lstrip("/").partition("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {"content-type": self.headers.get("content-type", "application/json")}
                if model not in upstreams:
                    answer = httpx.Response(404, content=b"no such model")
                else:
                    answer = httpx.request(
                        method, f"{upstreams[model]}/{rest}", content=body, headers=headers
                    )
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        return Handler


def real_seldon(server: Cluster, slots: SlotProcesses, gateway: ModelGateway) -> Controller:
    """Seldon with real slots: v2 Models via the gateway, v1 predictors via their service."""

    def model_ready(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        gateway.upstreams[name] = slots.start(*slot_key(obj), bundle_uri(obj))
        server.set_status(MODEL.group, MODEL.plural, NS, name, model_status(obj, True))

    def sdep_ready(obj: dict[str, Any]) -> None:
        deployment, endpoints = obj["metadata"]["labels"]["bgserve.io/deployment"], {}
        wanted = {int(p["name"][1:]): p for p in obj["spec"]["predictors"]}
        for release_id, pred in wanted.items():
            uri = pred["annotations"]["bgserve.io/bundle-uri"]
            url = slots.start(deployment, release_id, uri)
            endpoints[predictor_name(release_id)] = url.removeprefix("http://")
        for running_deployment, release_id in slots.running():
            if running_deployment == deployment and release_id not in wanted:
                slots.stop(deployment, release_id)
        status = sdep_status(obj, endpoints)
        name = obj["metadata"]["name"]
        server.set_status(SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural, NS, name, status)

    def reconcile(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Experiment":
            experiment_ready(server, obj)
        else:
            (model_ready if obj["kind"] == "Model" else sdep_ready)(obj)

    def removed(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Experiment":
            return
        if obj["kind"] == "Model":
            slots.stop(*slot_key(obj))
        else:
            for deployment, release_id in slots.running():
                slots.stop(deployment, release_id)

    return Controller(server, SELDON_PLURALS, reconcile, removed)


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_seldon_cycle_through_the_service_with_real_slots(
    tmp_path: Path,
    mlflow_store: str,
    kube_ns: KubeNamespace,
    crds: Mapping[str, Crd],
    slots: SlotProcesses,
    flavour: str,
) -> None:
    with ModelGateway() as gateway:
        backend = make_backend(
            kube_ns,
            flavour,
            kube_poll_interval_seconds=0.02,
            slot_ready_timeout_seconds=READY_TIMEOUT,
            seldon_slot_endpoint=gateway.url + "/{model}",
        )
        parts = make_components(tmp_path, mlflow_store, backend)
        service = parts.service
        ids = register(service, f"seldon-{flavour}")

        def check() -> None:
            weights = stored_weights_named(kube_ns, flavour, "sc")
            assert sum(weights.values()) == 100
            assert weights == expected(service.get_deployment("sc").state)

        with real_seldon(kube_ns, slots, gateway) as controller:
            run_cycle(parts, "sc", ids, check)
            with pytest.raises(BackendError, match="still"):
                backend.retire_slot("sc", ids["v1"])  # blue: refused, nothing deleted
            backend.retire_slot("sc", ids["reworded"])  # green at 0% after the revert
            wait_until(lambda: slots.running() == [("sc", ids["v1"])], "green's slot to stop")
        assert controller.errors == []
    assert_requests_validate(kube_ns.requests, crds)
    backend.close()
    service.store.close()


def stored_weights_named(server: Cluster, flavour: str, deployment: str) -> dict[int, int]:
    if flavour == "v2":
        (exp,) = server.objects("experiments")
        cut = len(f"{deployment}-r")
        return {int(c["name"][cut:]): c["weight"] for c in exp["spec"]["candidates"]}
    return stored_weights(server, "v1")


def test_v1_revert_works_while_greens_predictor_is_down(kube_ns: KubeNamespace) -> None:
    """Green at 30% goes down (its Deployment has no available replica, so the whole
    SeldonDeployment reads Creating): revert still gives blue its 100%, and more
    traffic for green is refused."""
    backend = make_backend(kube_ns, "v1")
    with fake_seldon(kube_ns) as controller:
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        state = perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]
        state = perform(backend, rollout.shift(state, 30, force=True))  # type: ignore[arg-type]
    assert controller.errors == []
    sdep = kube_ns.get("seldondeployments", sdep_name("chat"))
    assert sdep is not None
    down = sdep_status(sdep, {}, down=frozenset({predictor_name(2)}))
    kube_ns.set_status(
        SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural, NS, sdep_name("chat"), down
    )
    info = backend.slot_info("chat", 2)
    assert info is not None and not info.ready
    blue = backend.slot_info("chat", 1)
    assert blue is not None and blue.ready
    with pytest.raises(BackendError, match="not ready"):
        backend.set_routes("chat", rollout.shift(state, 50, force=True).state.routes())
    assert stored_weights(kube_ns, "v1") == {1: 70, 2: 30}
    reverted = perform(backend, rollout.revert(state))  # type: ignore[arg-type]
    assert stored_weights(kube_ns, "v1") == expected(reverted) == {1: 100, 2: 0}


def test_v2_a_failed_deploy_leaves_no_model(
    tmp_path: Path, mlflow_store: str, kube_ns: KubeNamespace
) -> None:
    """An Experiment bgserve does not own sits on the deployment's name: the deploy fails
    and the Model it had created is removed again."""
    backend = make_backend(kube_ns, "v2")
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "sfail")
    squatter = experiment("taken", [rollout.Route("blue", ids["v1"], 100)], backend.kube)
    squatter["metadata"]["labels"] = {"team": "web"}
    kube_ns.put_object(EXPERIMENT.group, EXPERIMENT.plural, squatter)
    refused = pytest.raises(BackendError, match="not managed by bgserve")
    with fake_seldon(kube_ns) as controller, refused:
        service.create_deployment("taken", ids["v1"], "test")
    assert controller.errors == []
    assert list(kube_ns.objects("models")) == []
    assert service.list_deployments() == []
    backend.close()
    service.store.close()
