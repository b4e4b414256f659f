"""bgserve's routes on a real gateway: Envoy Gateway reads each HTTPRoute bgserve writes
from the real API server and reports on it, and a step is done only once it has taken
the new spec; a route it refuses (a backend Service it cannot find) is undone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgserve.app.golden_sets import load_golden_set
from bgserve.domain import rollout
from bgserve.errors import BackendError
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.kserve.objects import route_name
from bgserve.kube.route_status import route_taken
from tests.support.envoy_gateway import Gateway
from tests.support.kserve_part import KServePart, kserve_on_gateway
from tests.support.kube import (
    kserve_backend,
    make_components,
    perform,
    register,
)
from tests.support.kube_namespace import KubeNamespace
from tests.support.load import Load, hold, settled_after, share_of

pytestmark = pytest.mark.integration


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


# ----- traffic through Envoy, by bgserve's weights, with real slots -----

SHARE_TOLERANCE = 5.0  # percentage points
PER_WEIGHT = 1000  # calls counted at each weight


def test_traffic_through_envoy_follows_every_step_and_the_revert(
    tmp_path: Path, mlflow_store: str, envoy_gateway: Gateway
) -> None:
    with kserve_on_gateway(envoy_gateway) as (ns, kserve, settings):
        backend = kserve_backend(settings, api=ns.api_for(settings))
        parts = make_components(tmp_path, mlflow_store, backend)
        service = parts.service
        ids = register(service, "gw")
        url = f"http://127.0.0.1:{envoy_gateway.port}/v2/models/gw/infer"
        # Per step: how long bgserve's call took (it waits for the gateway's report), and
        # when, counted from the call's return, the traffic matched the new weights.
        took: dict[str, float] = {}
        effective: dict[str, float] = {}
        shares: dict[int, tuple[float, int]] = {}
        blue, green = str(ids["v1"]), str(ids["reworded"])
        try:
            with kserve.controller:
                service.create_deployment("gw", ids["v1"], "test")
                with Load(url, clients=4) as load:
                    hold(load, 50)
                    service.stage_green("gw", ids["reworded"], "test")
                    cases = load_golden_set("summarize", Path("prompts"))
                    _, report = parts.comparer.compare("gw", cases, "test")
                    assert report.verdict.passed, report.verdict.reasons
                    for weight in (10, 50, 100):
                        began = time.monotonic()
                        service.shift("gw", weight, "test")
                        returned = time.monotonic()
                        took[f"{weight}%"] = returned - began
                        done = hold(load, PER_WEIGHT)
                        settled = 0.0
                        if weight == 10:
                            firsts = [c.start for c in list(load.calls) if c.release == green]
                            effective["10%: first green answer"] = min(firsts) - returned
                        if weight == 100:
                            settled = settled_after(load, returned, done, green)
                            effective["100%: green alone"] = settled
                        shares[weight] = share_of(load, green, returned + settled, done)
                    began = time.monotonic()
                    service.revert("gw", "test")
                    returned = time.monotonic()
                    took["revert"] = returned - began
                    done = hold(load, PER_WEIGHT)
                    settled = effective["revert: blue alone"] = settled_after(
                        load, returned, done, blue
                    )
                    shares[0] = share_of(load, green, returned + settled, done)
                failures = load.failures()
                total = len(load.calls)
                # The history and the status say which generation of the route Envoy Gateway took.
                taken = [
                    e.details["route"]
                    for e in service.history("gw")
                    if e.details and "route" in e.details
                ]
                route = ns.get("httproutes", route_name("gw"))
                assert route is not None
                status_route = service.route_report("gw")
        finally:
            backend.close()
    print(
        f"\nthrough Envoy: {total} calls; green's share by weight {shares}; "
        f"bgserve's call took {took}; traffic matched, from the call's return {effective}"
    )
    generations = [r["generation"] for r in taken]
    assert generations == sorted(set(generations)) and len(generations) >= 6, taken
    assert status_route is not None and status_route["generation"] == generations[-1]
    assert generations[-1] == route["metadata"]["generation"]
    assert all(r["taken_by"] == [f"{envoy_gateway.namespace}/{envoy_gateway.name}"] for r in taken)
    envoy_lines = envoy_gateway.access_lines({c.status for c in failures})
    assert failures == [], f"{failures[:5]}\nthe gateway's log on them:\n" + "\n".join(envoy_lines)
    assert kserve.controller.errors == []
    for weight, (share, counted) in shares.items():
        assert counted >= PER_WEIGHT // 2, (weight, counted)
        assert abs(share - weight) <= SHARE_TOLERANCE, (weight, share)
    # bgserve returns once Envoy Gateway reported the route taken; Envoy has its new
    # configuration by then (within a second: the two are not ordered by contract).
    assert all(seconds < 1.0 for seconds in effective.values()), effective
