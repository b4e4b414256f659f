"""The KServe backend against the test API server, with a thread playing KServe."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from bgserve.backends.kube.client import MANAGED_BY, is_ready, managed_labels
from bgserve.backends.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.backends.kube.kserve.objects import inference_service, isvc_name, route_name
from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from tests.crd_schema import Crd, validate_object
from tests.k8s_apiserver import ApiError, FakeApiServer, Store
from tests.kube_helpers import (
    KSERVE,
    NS,
    RELEASES,
    FakeClock,
    perform,
)

pytestmark = pytest.mark.integration

ROUTE_RESOURCES = {
    "gateway": ("gateway.networking.k8s.io", "httproutes"),
    "istio": ("networking.istio.io", "virtualservices"),
}


class FakeKServe:
    """Plays the KServe controller: marks InferenceServices Ready for their generation."""

    def __init__(self, server: FakeApiServer, ready: Callable[[str], bool] = lambda _: True):
        self.server, self.ready = server, ready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeKServe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            for obj in self.server.objects("inferenceservices"):
                self._reconcile(obj)

    def _reconcile(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if obj.get("status", {}).get("observedGeneration") == meta["generation"]:
            return
        name, ready = meta["name"], self.ready(meta["name"])
        status = {
            "observedGeneration": meta["generation"],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "url": f"http://{name}.{NS}.example.com",
        }
        if not ready:
            status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad"}
        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.server.set_status(*KSERVE, NS, name, status)


def settings_for(server: FakeApiServer, router: str = "gateway", **extra: Any) -> Settings:
    return Settings(
        kube_api_url=server.url,
        kube_namespace=NS,
        kserve_router=router,
        **{"kube_poll_interval_seconds": 0.002, "slot_ready_timeout_seconds": 10, **extra},
    )


@pytest.fixture
def backend(server: FakeApiServer) -> Iterator[KServeBackend]:
    b = KServeBackend(settings_for(server))
    yield b
    b.close()


def stored_weights(server: FakeApiServer, router: str) -> dict[str, int]:
    (route,) = server.objects(ROUTE_RESOURCES[router][1])
    if router == "gateway":
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {r["name"].removesuffix("-predictor"): r["weight"] for r in refs}
    dests = route["spec"]["http"][0]["route"]
    return {d["destination"]["host"].split("-predictor.")[0]: d["weight"] for d in dests}


def expected_weights(state: DeploymentState) -> dict[str, int]:
    return {isvc_name(state.name, r.release_id): r.weight for r in state.routes()}


def full_cycle(backend: KServeBackend, server: FakeApiServer, router: str) -> DeploymentState:
    """create -> stage -> 10 -> 50 -> promote -> revert, checking weights after each step."""
    state = perform(backend, rollout.create("chat", 1))
    for step in (
        lambda s: rollout.stage_green(s, 2),
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
    ):
        state = perform(backend, step(state))
        assert stored_weights(server, router) == expected_weights(state)
    return state


@pytest.mark.parametrize("router", ["gateway", "istio"])
def test_full_cycle_every_request_validates(
    server: FakeApiServer, crds: Mapping[str, Crd], router: str
) -> None:
    backend = KServeBackend(settings_for(server, router))
    with FakeKServe(server):
        state = full_cycle(backend, server, router)
    assert (state.blue, state.green, state.green_weight) == (1, 2, 0)
    assert stored_weights(server, router) == {"chat-r1": 100, "chat-r2": 0}
    writes = [r for r in server.requests if r.verb in ("create", "update")]
    assert writes and all(r.status in (200, 201) for r in server.requests if r.verb != "get")
    for request in writes:
        assert request.body is not None
        assert validate_object(crds, request.body) == [], request
    seen = {(r.group, r.resource, r.verb) for r in server.requests}
    granted = {
        (g, res, v)
        for rule in required_rbac(router)
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert seen <= granted
    backend.close()
    backend.close()


def test_rbac_rules_are_exactly_what_a_cycle_and_retire_use(
    server: FakeApiServer, backend: KServeBackend
) -> None:
    with FakeKServe(server):
        state = full_cycle(backend, server, "gateway")
        perform(backend, rollout.stage_green(rollout.promote(state).state, 3))
        backend.retire_slot("chat", 3)
        # A new slot image updates the live InferenceService and waits for its generation.
        backend.settings = backend.settings.model_copy(update={"kube_slot_image": "bgserve:0.2.0"})
        slot = backend.ensure_slot("chat", RELEASES[2])  # blue after the promotion
    (isvc,) = [o for o in server.objects("inferenceservices") if o["metadata"]["name"] == "chat-r2"]
    assert isvc["metadata"]["generation"] == 2 and slot.ready
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "bgserve:0.2.0"
    seen = {(r.group, r.resource, r.verb) for r in server.requests}
    granted = {
        (g, res, v)
        for rule in required_rbac("gateway")
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert seen == granted


def test_wire_format_is_the_camel_case_dict(server: FakeApiServer, backend: KServeBackend) -> None:
    with FakeKServe(server):
        backend.ensure_slot("chat", RELEASES[1])
    (create,) = [r for r in server.requests if r.verb == "create"]
    sent = json.dumps(create.body)
    assert create.body == inference_service("chat", RELEASES[1], backend.settings)
    assert '"minReplicas": 1' in sent and '"containerPort": 8080' in sent
    assert "min_replicas" not in sent and "container_port" not in sent


def test_ensure_slot_is_idempotent_and_reports_the_slot(
    server: FakeApiServer, backend: KServeBackend
) -> None:
    with FakeKServe(server):
        first = backend.ensure_slot("chat", RELEASES[1])
        writes = len([r for r in server.requests if r.verb in ("create", "update")])
        again = backend.ensure_slot("chat", RELEASES[1])
    assert first == again
    assert first.ready and first.endpoint == f"http://chat-r1.{NS}.example.com"
    assert writes == len([r for r in server.requests if r.verb in ("create", "update")]) == 1
    assert backend.slot_info("chat", 9) is None
    assert backend.data_plane_url("chat") is None


def test_timeout_raises_removes_the_new_slot_and_keeps_weights(server: FakeApiServer) -> None:
    clock = FakeClock()
    settings = settings_for(server, kube_poll_interval_seconds=0.5)
    backend = KServeBackend(settings, clock=clock, sleep=clock.sleep)
    with FakeKServe(server):
        state = perform(backend, rollout.create("chat", 1))
    (before,) = server.objects("httproutes")
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])  # no controller: never ready
    assert clock.now >= 10
    assert [o["metadata"]["name"] for o in server.objects("inferenceservices")] == ["chat-r1"]
    (after,) = server.objects("httproutes")
    assert after == before
    assert stored_weights(server, "gateway") == expected_weights(state)


def test_failed_load_fails_fast(server: FakeApiServer, backend: KServeBackend) -> None:
    with FakeKServe(server, ready=lambda name: name != "chat-r2"):
        backend.ensure_slot("chat", RELEASES[1])
        with pytest.raises(BackendError, match="BlockedByFailedLoad") as info:
            backend.ensure_slot("chat", RELEASES[2])
    assert not isinstance(info.value, ReadinessTimeout)
    assert backend.slot_info("chat", 2) is None


def test_set_routes_refuses_missing_or_unready_slots(
    server: FakeApiServer, backend: KServeBackend
) -> None:
    with FakeKServe(server):
        state = perform(backend, rollout.create("chat", 1))
    server.put_object(*KSERVE, {**inference_service("chat", RELEASES[2], backend.settings)})
    staged = rollout.stage_green(state, 2).state
    with pytest.raises(BackendError, match="not ready"):
        backend.set_routes("chat", rollout.shift(staged, 10, force=True).state.routes())
    with pytest.raises(BackendError, match="no InferenceService"):
        backend.set_routes("chat", rollout.stage_green(state, 3).state.routes())
    with pytest.raises(BackendError, match="summing to 100"):
        backend.set_routes("chat", [rollout.Route("blue", 1, 90)])
    assert stored_weights(server, "gateway") == {"chat-r1": 100}


def test_stale_resource_version_is_retried_after_a_fresh_read(
    server: FakeApiServer, backend: KServeBackend
) -> None:
    with FakeKServe(server):
        state = perform(backend, rollout.create("chat", 1))
        state = perform(backend, rollout.stage_green(state, 2))

    def other_writer(store: Store, plural: str, name: str) -> None:
        if plural == "httproutes":
            key = ("gateway.networking.k8s.io", "httproutes", NS, route_name("chat"))
            obj = dict(store.get(key))
            obj["metadata"] = {**obj["metadata"], "annotations": {"team": "platform"}}
            crd = store.crds[key[:2]]
            store.write(crd, key, obj, "")

    server.before_next_write(other_writer)
    state = perform(backend, rollout.shift(state, 10, force=True))
    puts = [r.status for r in server.requests if r.verb == "update" and r.resource == "httproutes"]
    assert puts[-2:] == [409, 200]
    assert stored_weights(server, "gateway") == expected_weights(state)
    (route,) = server.objects("httproutes")
    assert route["metadata"]["annotations"] == {"team": "platform"}


def test_retire_deletes_only_managed_objects(server: FakeApiServer, backend: KServeBackend) -> None:
    with FakeKServe(server):
        backend.ensure_slot("chat", RELEASES[2])
    by_hand = inference_service("chat", RELEASES[2], backend.settings)
    labels = {k: v for k, v in managed_labels("chat", 2).items() if k != MANAGED_BY}
    by_hand["metadata"] = {**by_hand["metadata"], "name": "chat-by-hand", "labels": labels}
    server.put_object(*KSERVE, by_hand)
    backend.retire_slot("chat", 2)
    backend.retire_slot("chat", 2)
    assert [o["metadata"]["name"] for o in server.objects("inferenceservices")] == ["chat-by-hand"]


def test_unmanaged_object_in_the_way_is_not_overwritten(
    server: FakeApiServer, backend: KServeBackend
) -> None:
    squatter = inference_service("chat", RELEASES[1], backend.settings)
    squatter["metadata"] = {**squatter["metadata"], "labels": {"team": "other"}}
    server.put_object(*KSERVE, squatter)
    with pytest.raises(BackendError, match="not managed by bgserve"):
        backend.ensure_slot("chat", RELEASES[1])
    backend.retire_slot("chat", 1)
    assert len(list(server.objects("inferenceservices"))) == 1


def test_schema_invalid_object_surfaces_as_backend_error(server: FakeApiServer) -> None:
    backend = KServeBackend(settings_for(server, kube_slot_cpu="lots"))
    with pytest.raises(BackendError, match="HTTP 422") as info:
        backend.ensure_slot("chat", RELEASES[1])
    assert info.value.details["status"] == 422
    assert isinstance(info.value.__cause__, Exception)
    assert list(server.objects("inferenceservices")) == []


def test_unreachable_api_server_is_a_backend_error(server: FakeApiServer) -> None:
    settings = settings_for(server).model_copy(update={"kube_api_url": "http://127.0.0.1:9"})
    backend = KServeBackend(settings)
    backend.services.api.api_client.configuration.retries = 0
    with pytest.raises(BackendError, match="unreachable"):
        backend.slot_info("chat", 1)


def test_readiness_needs_the_current_generation() -> None:
    obj: dict[str, Any] = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert not is_ready(obj)
    obj["status"]["observedGeneration"] = 2
    assert is_ready(obj)
    obj["status"]["conditions"][0]["status"] = "False"
    assert not is_ready(obj)
