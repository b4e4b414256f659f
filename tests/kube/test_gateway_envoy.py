"""bgserve's routes on a real gateway: Envoy Gateway reads each HTTPRoute bgserve writes
from the real API server and reports on it, and a step is done only once it has taken
the new spec; a route it refuses (a backend Service it cannot find) is undone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from bgserve.domain import rollout
from bgserve.errors import BackendError
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.kserve.objects import SERVICE_PORT, route_name
from bgserve.kube.route_status import route_taken
from tests.support.envoy_gateway import Gateway
from tests.support.kube import Controller, PlatformStatus, kserve_backend, perform
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration


class KServePart:
    """Plays KServe's controller: each InferenceService gets its ``<name>-predictor``
    Service (unless its name is in ``without_service``) and a Ready status."""

    def __init__(self, ns: KubeNamespace) -> None:
        self.ns = ns
        self.status = PlatformStatus(ns, "kserve")
        self.without_service: set[str] = set()
        self.controller = Controller(
            ns, ("inferenceservices",), self.reconcile, lambda _: None, interval=0.05
        )

    def reconcile(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.without_service:
            service = {
                "metadata": {"name": f"{name}-predictor"},
                "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": 8080}]},
            }
            with contextlib.suppress(client.ApiException):  # made at an earlier generation
                client.CoreV1Api(self.ns.admin).create_namespaced_service(
                    self.ns.namespace, service
                )
        self.status.reconcile(obj)


@pytest.fixture
def on_gateway(envoy_gateway: Gateway) -> Iterator[tuple[KubeNamespace, KServePart]]:
    ns = KubeNamespace(envoy_gateway.cluster)
    kserve = KServePart(ns)
    with kserve.controller:
        yield ns, kserve
    ns.close()
    assert kserve.controller.errors == []


def make_backend(ns: KubeNamespace, gateway: Gateway) -> KServeBackend:
    settings = ns.settings(
        required_rbac("gateway"),
        slot_ready_timeout_seconds=30,
        kube_gateway_name=gateway.name,
        kube_gateway_namespace=gateway.namespace,
        kube_route_accept_timeout_seconds=60,
    )
    return kserve_backend(settings, api=ns.api_for(settings))


def stored_route(ns: KubeNamespace, deployment: str) -> dict[str, Any]:
    route = ns.get("httproutes", route_name(deployment))
    assert route is not None
    return route


def test_every_step_returns_once_envoy_gateway_took_the_route(
    envoy_gateway: Gateway, on_gateway: tuple[KubeNamespace, KServePart]
) -> None:
    ns, _ = on_gateway
    backend = make_backend(ns, envoy_gateway)
    state = perform(backend, rollout.create("chat", 1))
    assert route_taken(stored_route(ns, "chat")) is True
    state = perform(backend, rollout.stage_green(state, 2))
    for step in (
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
    ):
        state = perform(backend, step(state))
        route = stored_route(ns, "chat")
        # Taken by the real gateway for the spec now stored, before the step returned.
        assert route_taken(route) is True, route.get("status")
        (parent,) = route["status"]["parents"]
        assert parent["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
        weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
        assert weights == {f"chat-r{r.release_id}-predictor": r.weight for r in state.routes()}
    backend.close()


def test_a_backend_envoy_gateway_cannot_resolve_undoes_the_route(
    envoy_gateway: Gateway, on_gateway: tuple[KubeNamespace, KServePart]
) -> None:
    ns, kserve = on_gateway
    backend = make_backend(ns, envoy_gateway)
    state = perform(backend, rollout.create("chat", 1))
    kserve.without_service.add("chat-r2")
    with pytest.raises(BackendError) as err:  # green's Service is missing: even at 0%
        perform(backend, rollout.stage_green(state, 2))
    message = str(err.value)
    assert "ResolvedRefs=False" in message and "the previous route is back" in message
    route = stored_route(ns, "chat")
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("chat-r1-predictor", 100)]
    # A first route it cannot resolve is deleted.
    kserve.without_service.add("other-r1")
    with pytest.raises(BackendError, match="ResolvedRefs=False"):
        perform(backend, rollout.create("other", 1))
    assert ns.get("httproutes", route_name("other")) is None
    backend.close()
