"""The KServe backend against a real kube-apiserver (official CRDs, bgserve as a user
holding only its declared Role), with a thread playing KServe by writing status.

The loopback fake API server stays only for what the real one cannot do on cue: a
write racing bgserve's, and an unreachable server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes.client import CustomObjectsApi

from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.kube.client import MANAGED_BY, MANAGER, KubeObjects, is_ready, managed_labels
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.kserve.objects import (
    HTTP_ROUTE,
    http_route,
    inference_service,
    isvc_name,
    route_name,
)
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import (
    KSERVE,
    NS,
    RELEASES,
    Cluster,
    Controller,
    FakeClock,
    kserve_backend,
    perform,
    wait_until,
)
from tests.support.kube_fake_apiserver import FakeApiServer, Store
from tests.support.kube_gateway import GatewayStatus
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration

ROUTE_RESOURCES = {
    "gateway": ("gateway.networking.k8s.io", "httproutes"),
    "istio": ("networking.istio.io", "virtualservices"),
}


def fake_kserve(server: Cluster, ready: Callable[[str], bool] = lambda _: True) -> Controller:
    """Plays the KServe controller: marks InferenceServices Ready (or failed) for their
    generation."""

    def reconcile(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name, ok = meta["name"], ready(meta["name"])
        status: dict[str, Any] = {
            "observedGeneration": meta["generation"],
            "conditions": [{"type": "Ready", "status": "True" if ok else "False"}],
            "url": f"http://{name}.{NS}.example.com",
        }
        if not ok:
            status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad"}
        server.set_status(*KSERVE, NS, name, status)

    return Controller(server, (KSERVE[1],), reconcile, lambda _: None)


def settings_for(server: FakeApiServer, router: str = "gateway", **extra: Any) -> Settings:
    """Settings for the fake server (the tests that need it)."""
    values: dict[str, Any] = {
        "kube_api_url": server.url,
        "kube_namespace": NS,
        "kube_route_accept_timeout_seconds": 0,  # no gateway reports on this server's routes
        "kserve_router": router,
        "kube_poll_interval_seconds": 0.002,
        "slot_ready_timeout_seconds": 10,
    }
    return Settings(**{**values, **extra})


def make_backend(ns: KubeNamespace, router: str = "gateway", **extra: Any) -> KServeBackend:
    """The backend on the real server, as user bgserve with its declared Role."""
    values = {"kserve_router": router, "slot_ready_timeout_seconds": 10, **extra}
    settings = ns.settings(required_rbac(router), **values)
    return kserve_backend(settings, api=ns.api_for(settings))


@pytest.fixture
def backend(kube_ns: KubeNamespace) -> Iterator[KServeBackend]:
    b = make_backend(kube_ns)
    yield b
    b.close()


def stored_weights(server: Cluster, router: str) -> dict[str, int]:
    (route,) = server.objects(ROUTE_RESOURCES[router][1])
    if router == "gateway":
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {r["name"].removesuffix("-predictor"): r["weight"] for r in refs}
    dests = route["spec"]["http"][0]["route"]
    return {d["destination"]["host"].split("-predictor.")[0]: d["weight"] for d in dests}


def expected_weights(state: DeploymentState) -> dict[str, int]:
    return {isvc_name(state.name, r.release_id): r.weight for r in state.routes()}


def full_cycle(backend: KServeBackend, server: Cluster, router: str) -> DeploymentState:
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


def observed(obj: Mapping[str, Any] | None) -> bool:
    return obj is not None and obj.get("status", {}).get("observedGeneration") == obj[
        "metadata"
    ].get("generation")


def granted(router: str) -> set[tuple[str, str, str]]:
    return {
        (g, res, v)
        for rule in required_rbac(router)
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }


@pytest.mark.parametrize("router", ["gateway", "istio"])
def test_full_cycle_every_request_validates(
    kube_ns: KubeNamespace, crds: Mapping[str, Crd], router: str
) -> None:
    backend = make_backend(kube_ns, router)
    with fake_kserve(kube_ns) as controller:
        state = full_cycle(backend, kube_ns, router)
    assert controller.errors == []
    assert (state.blue, state.green, state.green_weight) == (1, 2, 0)
    assert stored_weights(kube_ns, router) == {"chat-r1": 100, "chat-r2": 0}
    writes = [r for r in kube_ns.requests if r.verb in ("create", "patch")]
    assert writes and all(r.status in (200, 201) for r in kube_ns.requests if r.verb != "get")
    for request in writes:
        assert request.body is not None
        assert validate_object(crds, request.body) == [], request
    assert {(r.group, r.resource, r.verb) for r in kube_ns.requests} <= granted(router)
    backend.close()
    backend.close()


def test_rbac_rules_are_exactly_what_a_cycle_and_retire_use(kube_ns: KubeNamespace) -> None:
    backend = make_backend(kube_ns, kube_route_accept_timeout_seconds=10)
    gateway = GatewayStatus(kube_ns)
    with fake_kserve(kube_ns), gateway.controller:
        state = full_cycle(backend, kube_ns, "gateway")
        perform(backend, rollout.stage_green(rollout.promote(state).state, 3))
        backend.retire_slot("chat", 3)
        # A new slot image updates the live InferenceService and waits for its generation.
        backend.kube = backend.kube.model_copy(update={"slot_image": "bgserve:0.2.0"})
        slot = backend.ensure_slot("chat", RELEASES[2])  # blue after the promotion
        # A first route the gateway refuses is deleted.
        gateway.refuse = {"Accepted": ("NotAllowedByListeners", "no listener allows it")}
        with pytest.raises(BackendError, match="NotAllowedByListeners"):
            perform(backend, rollout.create("other", 1))
    backend.close()
    assert gateway.controller.errors == []
    assert [r["metadata"]["name"] for r in kube_ns.objects("httproutes")] == [route_name("chat")]
    isvc = kube_ns.get("inferenceservices", "chat-r2")
    assert isvc is not None and isvc["metadata"]["generation"] == 2 and slot.ready
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "bgserve:0.2.0"
    # The server enforced the Role (bgserve runs as a user holding only it); no rule unused.
    assert {(r.group, r.resource, r.verb) for r in kube_ns.requests} == granted("gateway")


def test_writes_are_server_side_applies_by_field_manager_bgserve(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", RELEASES[1])
        backend.set_routes("chat", [rollout.Route("blue", 1, 100)])
    for plural, name in (("inferenceservices", "chat-r1"), ("httproutes", route_name("chat"))):
        obj = kube_ns.get(plural, name)
        assert obj is not None
        owners = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        assert (MANAGER, "Apply") in owners, owners
        assert not any(m.startswith("OpenAPI-Generator") for m, _ in owners)


def test_a_users_labels_and_another_managers_fields_survive_bgserves_writes(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", RELEASES[1])
        backend.ensure_slot("chat", RELEASES[2])
        backend.set_routes("chat", [rollout.Route("blue", 1, 100), rollout.Route("green", 2, 0)])
        # A user labels the route and the slot with kubectl; an autoscaler (another
        # field manager) owns maxReplicas, a field bgserve never sets.
        user = {"metadata": {"labels": {"team": "search"}, "annotations": {"owner": "ana"}}}
        kube_ns.merge_patch("httproutes", route_name("chat"), user, manager="kubectl")
        kube_ns.merge_patch("inferenceservices", "chat-r1", user, manager="kubectl")
        scaled = {"spec": {"predictor": {"maxReplicas": 4}}}
        kube_ns.merge_patch("inferenceservices", "chat-r1", scaled, manager="autoscaler")
        wait_until(lambda: observed(kube_ns.get("inferenceservices", "chat-r1")), "KServe")
        backend.set_routes("chat", [rollout.Route("blue", 1, 60), rollout.Route("green", 2, 40)])
        backend.kube = backend.kube.model_copy(update={"slot_image": "bgserve:0.2.0"})
        backend.ensure_slot("chat", RELEASES[1])
    route, isvc = (
        kube_ns.get("httproutes", route_name("chat")),
        kube_ns.get("inferenceservices", "chat-r1"),
    )
    assert route is not None and isvc is not None
    assert stored_weights(kube_ns, "gateway") == {"chat-r1": 60, "chat-r2": 40}
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "bgserve:0.2.0"
    for obj in (route, isvc):
        assert obj["metadata"]["labels"]["team"] == "search"
        assert obj["metadata"]["annotations"]["owner"] == "ana"
        assert obj["metadata"]["labels"][MANAGED_BY] == MANAGER
    assert isvc["spec"]["predictor"]["maxReplicas"] == 4


def test_bgserve_takes_back_the_weights_someone_else_changed(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    """The weights are bgserve's field: after a hand edit with kubectl (which takes
    ownership of them), the next write forces them back instead of failing on a
    field-manager conflict."""
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", RELEASES[1])
        backend.ensure_slot("chat", RELEASES[2])
    backend.set_routes("chat", [rollout.Route("blue", 1, 100), rollout.Route("green", 2, 0)])
    route = kube_ns.get("httproutes", route_name("chat"))
    assert route is not None
    rules = route["spec"]["rules"]
    rules[0]["backendRefs"][1]["weight"] = 50
    kube_ns.merge_patch(
        "httproutes", route_name("chat"), {"spec": {"rules": rules}}, manager="kubectl"
    )
    assert stored_weights(kube_ns, "gateway") == {"chat-r1": 100, "chat-r2": 50}
    backend.set_routes("chat", [rollout.Route("blue", 1, 90), rollout.Route("green", 2, 10)])
    assert stored_weights(kube_ns, "gateway") == {"chat-r1": 90, "chat-r2": 10}


def test_wire_format_is_the_camel_case_dict(kube_ns: KubeNamespace, backend: KServeBackend) -> None:
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", RELEASES[1])
    (create,) = [r for r in kube_ns.requests if r.verb == "create"]
    sent = json.dumps(create.body)
    assert create.body == inference_service("chat", RELEASES[1], backend.kube, backend.mlflow)
    assert '"minReplicas": 1' in sent and '"containerPort": 8080' in sent
    assert "min_replicas" not in sent and "container_port" not in sent


def test_ensure_slot_is_idempotent_and_reports_the_slot(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    def writes() -> int:
        return len([r for r in kube_ns.requests if r.verb in ("create", "patch")])

    with fake_kserve(kube_ns):
        first = backend.ensure_slot("chat", RELEASES[1])
        written = writes()
        again = backend.ensure_slot("chat", RELEASES[1])
    assert first == again
    assert first.ready and first.endpoint == f"http://chat-r1.{NS}.example.com"
    assert written == writes() == 1
    assert backend.slot_info("chat", 9) is None
    assert backend.data_plane_url("chat") is None


def test_readiness_is_watched_not_polled(kube_ns: KubeNamespace) -> None:
    """Slots that take a second to start: a whole flow (deploy, stage, 10, 50, 100,
    revert) reads a fixed handful of times, however short the poll interval and however
    long the slots take (it was a GET every poll interval while waiting)."""
    backend = make_backend(kube_ns, kube_poll_interval_seconds=0.05)

    def slow(name: str) -> bool:
        time.sleep(1.0)
        return True

    with fake_kserve(kube_ns, ready=slow):
        full_cycle(backend, kube_ns, "gateway")
    reads = [r for r in kube_ns.requests if r.verb in ("get", "list")]
    assert kube_ns.log.count("watch") == 2  # one per slot started
    assert len(reads) <= 20, reads


def test_timeout_raises_removes_the_new_slot_and_keeps_weights(kube_ns: KubeNamespace) -> None:
    backend = make_backend(kube_ns, slot_ready_timeout_seconds=2)
    with fake_kserve(kube_ns):
        state = perform(backend, rollout.create("chat", 1))
    (before,) = kube_ns.objects("httproutes")
    started = time.monotonic()
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])  # no controller now: never ready
    assert 2 <= time.monotonic() - started < 10
    assert [o["metadata"]["name"] for o in kube_ns.objects("inferenceservices")] == ["chat-r1"]
    (after,) = kube_ns.objects("httproutes")
    assert after == before
    assert stored_weights(kube_ns, "gateway") == expected_weights(state)


def test_timeout_on_a_server_without_watches_polls_with_the_injected_clock(
    server: FakeApiServer,
) -> None:
    clock = FakeClock()
    backend = kserve_backend(
        settings_for(server, kube_poll_interval_seconds=0.5), clock=clock, sleep=clock.sleep
    )
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])  # no controller: never ready
    assert clock.now >= 10
    assert list(server.objects("inferenceservices")) == []
    polls = [r for r in server.requests if r.verb == "get" and r.resource == "inferenceservices"]
    assert len(polls) >= 20  # one read per 0.5 s of the 10 s on the injected clock


def test_failed_load_fails_fast(kube_ns: KubeNamespace, backend: KServeBackend) -> None:
    with fake_kserve(kube_ns, ready=lambda name: name != "chat-r2"):
        backend.ensure_slot("chat", RELEASES[1])
        with pytest.raises(BackendError, match="BlockedByFailedLoad") as info:
            backend.ensure_slot("chat", RELEASES[2])
    assert not isinstance(info.value, ReadinessTimeout)
    assert backend.slot_info("chat", 2) is None


def test_set_routes_refuses_missing_or_unready_slots(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with fake_kserve(kube_ns):
        state = perform(backend, rollout.create("chat", 1))
    kube_ns.put_object(
        *KSERVE, inference_service("chat", RELEASES[2], backend.kube, backend.mlflow)
    )
    staged = rollout.stage_green(state, 2).state
    with pytest.raises(BackendError, match="not ready"):
        backend.set_routes("chat", rollout.shift(staged, 10, force=True).state.routes())
    with pytest.raises(BackendError, match="no InferenceService"):
        backend.set_routes("chat", rollout.stage_green(state, 3).state.routes())
    with pytest.raises(BackendError, match="summing to 100"):
        backend.set_routes("chat", [rollout.Route("blue", 1, 90)])
    assert stored_weights(kube_ns, "gateway") == {"chat-r1": 100}


def test_stale_resource_version_is_retried_after_a_fresh_read(server: FakeApiServer) -> None:
    """A write racing bgserve's between its read and its apply (the fake server injects
    it on cue): the apply carries the resourceVersion read, gets 409, reads again."""
    backend = kserve_backend(settings_for(server))
    with fake_kserve(server):
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
    applies = [
        r.status for r in server.requests if r.verb == "patch" and r.resource == "httproutes"
    ]
    assert applies[-2:] == [409, 200]
    assert stored_weights(server, "gateway") == expected_weights(state)
    (route,) = server.objects("httproutes")
    assert route["metadata"]["annotations"] == {"team": "platform"}
    backend.close()


def test_retire_deletes_only_managed_objects(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", RELEASES[2])
    by_hand = inference_service("chat", RELEASES[2], backend.kube, backend.mlflow)
    labels = {k: v for k, v in managed_labels("chat", 2).items() if k != MANAGED_BY}
    by_hand["metadata"] = {**by_hand["metadata"], "name": "chat-by-hand", "labels": labels}
    kube_ns.put_object(*KSERVE, by_hand)
    backend.retire_slot("chat", 2)
    backend.retire_slot("chat", 2)
    names = [o["metadata"]["name"] for o in kube_ns.objects("inferenceservices")]
    assert names == ["chat-by-hand"]


def test_unmanaged_object_in_the_way_is_not_overwritten(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    squatter = inference_service("chat", RELEASES[1], backend.kube, backend.mlflow)
    squatter["metadata"] = {**squatter["metadata"], "labels": {"team": "other"}}
    kube_ns.put_object(*KSERVE, squatter)
    with pytest.raises(BackendError, match="not managed by bgserve"):
        backend.ensure_slot("chat", RELEASES[1])
    backend.retire_slot("chat", 1)
    (left,) = kube_ns.objects("inferenceservices")
    assert left["metadata"]["labels"] == {"team": "other"}


def test_schema_invalid_object_surfaces_as_backend_error(kube_ns: KubeNamespace) -> None:
    backend = make_backend(kube_ns, kube_slot_cpu="lots")
    with pytest.raises(BackendError, match="HTTP 422") as info:
        backend.ensure_slot("chat", RELEASES[1])
    assert info.value.details["status"] == 422
    assert isinstance(info.value.__cause__, Exception)
    assert list(kube_ns.objects("inferenceservices")) == []


def test_unreachable_api_server_is_a_backend_error(server: FakeApiServer) -> None:
    settings = settings_for(server, kube_api_url="http://127.0.0.1:9")
    backend = kserve_backend(settings)
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


def test_a_field_bgserve_stops_writing_is_removed_and_others_fields_are_not(
    kube_ns: KubeNamespace,
) -> None:
    """An object that holds everything bgserve wants is not written again, unless bgserve
    owns a field it now leaves out: the apply then removes it. A field another manager
    set is not bgserve's to remove."""
    settings = kube_ns.settings(required_rbac("gateway"))
    api = CustomObjectsApi(kube_ns.api_for(settings))
    routes = KubeObjects(api, HTTP_ROUTE, kube_ns.namespace, 3)
    mirrored = http_route("chat", [rollout.Route("blue", 1, 100)], settings.kube)
    mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "b", "port": 80}}}
    mirrored["spec"]["rules"][0]["filters"] = [mirror]
    mirrored["metadata"]["annotations"] = {"bgserve.io/note": "mirroring"}
    plain = http_route("chat", [rollout.Route("blue", 1, 100)], settings.kube)
    name = plain["metadata"]["name"]
    routes.apply(mirrored)
    user = {"metadata": {"labels": {"team": "a"}}}
    kube_ns.merge_patch("httproutes", name, user, manager="kubectl")
    before = kube_ns.get("httproutes", name)
    assert before is not None
    routes.apply(plain)
    after = kube_ns.get("httproutes", name)
    assert after is not None
    assert "filters" not in after["spec"]["rules"][0]
    assert "bgserve.io/note" not in (after["metadata"].get("annotations") or {})
    assert after["metadata"]["labels"]["team"] == "a"
    # Nothing left to change: no write at all (the user's label is not bgserve's).
    routes.apply(plain)
    again = kube_ns.get("httproutes", name)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
