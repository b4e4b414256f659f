"""The Seldon backend (v2 Models + Experiment, v1 SeldonDeployment) against the test
API server: a status-only controller for the backend's rules, and real slots for a
full cycle through the Service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgserve.backends.kube.seldon import seldon_backend
from bgserve.backends.kube.seldon.base import required_rbac
from bgserve.backends.kube.seldon.objects import (
    EXPERIMENT,
    MODEL,
    SELDON_DEPLOYMENT,
    model_name,
    predictor_name,
    sdep_name,
)
from bgserve.backends.kube.seldon.v1 import SeldonV1Backend
from bgserve.backends.kube.seldon.v2 import SeldonV2Backend
from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from tests.crd_schema import Crd
from tests.k8s_apiserver import FakeApiServer, Store
from tests.kube_helpers import (
    READY_TIMEOUT,
    RELEASES,
    Controller,
    FakeClock,
    SlotProcesses,
    assert_requests_validate,
    bundle_uri,
    make_components,
    perform,
    register,
    run_cycle,
    slot_key,
    wait_until,
)

pytestmark = pytest.mark.integration

NS = "models"
SELDON_PLURALS = ("models", "experiments", "seldondeployments")
STORAGE = "s3://bundles/{bundle_name}/{bundle_version}"
Backendish = SeldonV2Backend | SeldonV1Backend


def settings_for(server: FakeApiServer, flavour: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kube_api_url": server.url,
        "kube_namespace": NS,
        "seldon_flavour": flavour,
        "kube_bundle_storage_uri": STORAGE,
        "kube_poll_interval_seconds": 0.002,
        "slot_ready_timeout_seconds": 10,
    }
    return Settings(**{**values, **extra})


def make_backend(server: FakeApiServer, flavour: str, **extra: Any) -> Backendish:
    backend = seldon_backend(settings_for(server, flavour, **extra))
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


def sdep_status(obj: Mapping[str, Any], endpoints: Mapping[str, str]) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    services = {
        f"{name}-{p['name']}": {
            "svcName": f"{name}-{p['name']}",
            "httpEndpoint": endpoints.get(p["name"], f"{name}-{p['name']}.{NS}:8000"),
        }
        for p in obj["spec"]["predictors"]
    }
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "state": "Available",
        "serviceStatus": services,
    }


def experiment_ready(server: FakeApiServer, obj: Mapping[str, Any]) -> None:
    status = {**model_status(obj, True), "conditions": [{"type": "Ready", "status": "True"}]}
    server.set_status(EXPERIMENT.group, EXPERIMENT.plural, NS, obj["metadata"]["name"], status)


def fake_seldon(server: FakeApiServer, ready: Callable[[str], bool] = lambda _: True) -> Controller:
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


def stored_weights(server: FakeApiServer, flavour: str) -> dict[int, int]:
    if flavour == "v2":
        (exp,) = server.objects("experiments")
        prefix = len("chat-r")
        return {int(c["name"][prefix:]): c["weight"] for c in exp["spec"]["candidates"]}
    (sdep,) = server.objects("seldondeployments")
    return {int(p["name"][1:]): p["traffic"] for p in sdep["spec"]["predictors"]}


def full_cycle(backend: Backendish, server: FakeApiServer, flavour: str) -> DeploymentState:
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


def rbac_ok(server: FakeApiServer, flavour: str) -> set[tuple[str, str, str]]:
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
    server: FakeApiServer, crds: Mapping[str, Crd], flavour: str
) -> None:
    backend = make_backend(server, flavour)
    with fake_seldon(server) as controller:
        state = full_cycle(backend, server, flavour)
    assert controller.errors == []
    assert (state.blue, state.green, state.standby) == (2, 3, None)
    assert_requests_validate(server, crds)
    seen = rbac_ok(server, flavour)
    # The old standby was retired: its Model deleted (v2), its predictor removed (v1).
    assert any(verb == "delete" for _, _, verb in seen) == (flavour == "v2")
    assert backend.slot_info("chat", 1) is None
    backend.close()
    backend.close()


def test_v2_experiment_from_the_first_release_and_default_on_request(
    server: FakeApiServer,
) -> None:
    backend = make_backend(server, "v2", seldon_experiment_default=True)
    with fake_seldon(server):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        state = perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]
        (exp,) = server.objects("experiments")
        assert exp["metadata"]["name"] == "chat" and exp["spec"]["default"] == "chat-r1"
        perform(backend, rollout.shift(state, 100, force=True))  # type: ignore[arg-type]
    (exp,) = server.objects("experiments")
    assert exp["spec"]["default"] == "chat-r2"
    assert [c["weight"] for c in exp["spec"]["candidates"]] == [100, 0]


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_ensure_slot_is_idempotent(server: FakeApiServer, flavour: str) -> None:
    backend = make_backend(server, flavour)
    with fake_seldon(server):
        first = backend.ensure_slot("chat", RELEASES[1])
        writes = len([r for r in server.requests if r.verb in ("create", "update")])
        again = backend.ensure_slot("chat", RELEASES[1])
    assert first == again and first.ready
    assert writes == len([r for r in server.requests if r.verb in ("create", "update")]) == 1
    assert backend.slot_info("chat", 9) is None


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_timeout_removes_the_new_slot_and_keeps_weights(
    server: FakeApiServer, flavour: str
) -> None:
    with fake_seldon(server):
        perform(make_backend(server, flavour), rollout.create("chat", 1))  # type: ignore[arg-type]
    clock = FakeClock()
    settings = settings_for(server, flavour, kube_poll_interval_seconds=0.5)
    backend = seldon_backend(settings, clock=clock, sleep=clock.sleep)
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])  # no controller: never ready
    assert clock.now >= 10
    assert stored_weights(server, flavour) == {1: 100}
    assert backend.slot_info("chat", 2) is None


def test_v2_failed_load_fails_fast(server: FakeApiServer) -> None:
    backend = make_backend(server, "v2")
    with fake_seldon(server, ready=lambda name: name != "chat-r2"):
        backend.ensure_slot("chat", RELEASES[1])
        with pytest.raises(BackendError, match="ModelFailed") as info:
            backend.ensure_slot("chat", RELEASES[2])
    assert not isinstance(info.value, ReadinessTimeout)
    assert [o["metadata"]["name"] for o in server.objects("models")] == ["chat-r1"]


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_set_routes_refuses_missing_slots_and_bad_weights(
    server: FakeApiServer, flavour: str
) -> None:
    backend = make_backend(server, flavour)
    with fake_seldon(server):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="ensure its slot"):
        backend.set_routes("chat", rollout.stage_green(state, 3).state.routes())
    with pytest.raises(BackendError, match="summing to 100"):
        backend.set_routes("chat", [rollout.Route("blue", 1, 90)])
    assert stored_weights(server, flavour) == {1: 100}


def test_v1_conflict_is_retried_on_a_fresh_read(server: FakeApiServer) -> None:
    backend = make_backend(server, "v1")
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
    puts = [r.status for r in server.requests if r.verb == "update"]
    assert puts[-2:] == [409, 200]
    assert stored_weights(server, "v1") == expected(state)
    (sdep,) = server.objects("seldondeployments")
    assert sdep["metadata"]["annotations"] == {"team": "platform"}


@pytest.mark.parametrize("flavour", ["v2", "v1"])
def test_unmanaged_object_in_the_way_is_left_alone(server: FakeApiServer, flavour: str) -> None:
    backend = make_backend(server, flavour)
    resource = MODEL if flavour == "v2" else SELDON_DEPLOYMENT
    name = model_name("chat", 1) if flavour == "v2" else sdep_name("chat")
    from bgserve.backends.kube.seldon.objects import seldon_objects

    (squatter, *_) = seldon_objects(
        "chat", rollout.create("chat", 1).state.routes(), RELEASES, backend.settings
    )
    squatter["metadata"] = {**squatter["metadata"], "name": name, "labels": {"team": "x"}}
    server.put_object(resource.group, resource.plural, squatter)
    with pytest.raises(BackendError, match="not managed by bgserve"):
        backend.ensure_slot("chat", RELEASES[1])
    backend.retire_slot("chat", 1)
    assert len(list(server.objects(resource.plural))) == 1


def test_v1_retire_refuses_a_predictor_with_traffic(server: FakeApiServer) -> None:
    backend = make_backend(server, "v1")
    with fake_seldon(server):
        state = perform(backend, rollout.create("chat", 1))  # type: ignore[arg-type]
        perform(backend, rollout.stage_green(state, 2))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="still has traffic"):
        backend.retire_slot("chat", 1)
    backend.retire_slot("chat", 2)
    backend.retire_slot("chat", 2)
    assert stored_weights(server, "v1") == {1: 100}


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


def real_seldon(server: FakeApiServer, slots: SlotProcesses, gateway: ModelGateway) -> Controller:
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
    server: FakeApiServer,
    crds: Mapping[str, Crd],
    slots: SlotProcesses,
    flavour: str,
) -> None:
    with ModelGateway() as gateway:
        backend = make_backend(
            server,
            flavour,
            kube_poll_interval_seconds=0.02,
            slot_ready_timeout_seconds=READY_TIMEOUT,
            seldon_slot_endpoint=gateway.url + "/{model}",
        )
        parts = make_components(tmp_path, mlflow_store, backend)
        service = parts.service
        ids = register(service, f"seldon-{flavour}")

        def check() -> None:
            weights = stored_weights_named(server, flavour, "sc")
            assert sum(weights.values()) == 100
            assert weights == expected(service.get_deployment("sc").state)

        with real_seldon(server, slots, gateway) as controller:
            run_cycle(parts, "sc", ids, check)
            with pytest.raises(BackendError, match="still"):
                backend.retire_slot("sc", ids["v1"])  # blue: refused, nothing deleted
            backend.retire_slot("sc", ids["reworded"])  # green at 0% after the revert
            wait_until(lambda: slots.running() == [("sc", ids["v1"])], "green's slot to stop")
        assert controller.errors == []
    assert_requests_validate(server, crds)
    backend.close()
    service.store.close()


def stored_weights_named(server: FakeApiServer, flavour: str, deployment: str) -> dict[int, int]:
    if flavour == "v2":
        (exp,) = server.objects("experiments")
        cut = len(f"{deployment}-r")
        return {int(c["name"][cut:]): c["weight"] for c in exp["spec"]["candidates"]}
    return stored_weights(server, "v1")
