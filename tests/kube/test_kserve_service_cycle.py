"""A full release cycle through the real Service on KServe: real MLflow, real slots.

A real kube-apiserver with the official CRDs (bgserve as a user holding only its
declared Role); a controller thread plays KServe for real: every InferenceService gets
a slot process serving its bundle, and deleting the InferenceService stops that
process. Comparison traffic reaches the slots through the endpoints the backend reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError
from bgserve.kube.client import MANAGED_BY
from bgserve.kube.kserve.backend import required_rbac
from bgserve.kube.kserve.objects import HTTP_ROUTE, isvc_name, route_name, weighted_route
from tests.support.crd_schema import Crd
from tests.support.kube import (
    KSERVE,
    NS,
    READY_TIMEOUT,
    Cluster,
    Controller,
    SlotProcesses,
    assert_requests_validate,
    bundle_uri,
    kserve_backend,
    make_components,
    register,
    run_cycle,
    slot_key,
    wait_until,
)
from tests.support.kube_namespace import KubeNamespace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def kserve_controller(server: Cluster, slots: SlotProcesses) -> Controller:
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


def route_weights(server: Cluster) -> dict[str, int]:
    (route,) = server.objects("httproutes")
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {r["name"].removesuffix("-predictor"): r["weight"] for r in refs}


def test_kserve_cycle_through_the_service_with_real_slots(
    tmp_path: Path,
    mlflow_store: str,
    kube_ns: KubeNamespace,
    crds: Mapping[str, Crd],
    slots: SlotProcesses,
) -> None:
    server = kube_ns
    settings = kube_ns.settings(required_rbac("gateway"), slot_ready_timeout_seconds=READY_TIMEOUT)
    backend = kserve_backend(settings, api=kube_ns.api_for(settings))
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "kcycle")

    def check() -> None:
        state = service.get_deployment("kc").state
        weights = route_weights(server)
        assert sum(weights.values()) == 100
        assert weights == {isvc_name("kc", r.release_id): r.weight for r in state.routes()}

    with kserve_controller(server, slots) as controller:
        steps = run_cycle(parts, "kc", ids, check)
        info = backend.slot_info("kc", ids["v1"])
        assert info is not None and info.endpoint.startswith("http://127.0.0.1:")
        v1, green = str(ids["v1"]), str(ids["reworded"])
        assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
        assert route_weights(server) == {isvc_name("kc", ids["v1"]): 100,
                                         isvc_name("kc", ids["reworded"]): 0}  # fmt: skip
        with pytest.raises(BackendError, match="still takes 100%"):
            backend.retire_slot("kc", ids["v1"])  # blue: refused, nothing deleted
        backend.retire_slot("kc", ids["reworded"])  # green at 0% after the revert
        wait_until(lambda: slots.running() == [("kc", ids["v1"])], "green's slot to stop")
    assert controller.errors == []
    assert_requests_validate(kube_ns.requests, crds)
    backend.close()
    service.store.close()


def test_a_failed_deploy_or_stage_leaves_no_object_and_no_slot(
    tmp_path: Path, mlflow_store: str, kube_ns: KubeNamespace, slots: SlotProcesses
) -> None:
    """An HTTPRoute bgserve does not own sits on the route's name: deploying fails with
    a message, and the InferenceService it had started is gone, its slot stopped. Staging
    fails the same way once a user takes the route over (drops bgserve's label)."""
    settings = kube_ns.settings(required_rbac("gateway"), slot_ready_timeout_seconds=READY_TIMEOUT)
    backend = kserve_backend(settings, api=kube_ns.api_for(settings))
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "kfail")
    squatter = weighted_route("taken", [Route("blue", ids["v1"], 100)], settings.kube)
    squatter["metadata"]["labels"] = {"team": "web"}
    kube_ns.put_object(HTTP_ROUTE.group, HTTP_ROUTE.plural, squatter)
    with kserve_controller(kube_ns, slots) as controller:
        with pytest.raises(BgserveError, match="not managed by bgserve"):
            service.create_deployment("taken", ids["v1"], "test")
        wait_until(lambda: slots.running() == [], "the started slot to stop")
        assert [o["metadata"]["name"] for o in kube_ns.objects("inferenceservices")] == []
        assert service.store.list_deployments() == []

        service.create_deployment("kept", ids["v1"], "test")
        kube_ns.merge_patch(
            HTTP_ROUTE.plural, route_name("kept"), {"metadata": {"labels": {MANAGED_BY: None}}},
            manager="kubectl",
        )  # fmt: skip
        with pytest.raises(BgserveError, match="not managed by bgserve"):
            service.stage_green("kept", ids["reworded"], "test")
        wait_until(lambda: slots.running() == [("kept", ids["v1"])], "green's slot to stop")
        names = [o["metadata"]["name"] for o in kube_ns.objects("inferenceservices")]
        assert names == [isvc_name("kept", ids["v1"])]
        assert service.get_deployment("kept").state.green is None
    assert controller.errors == []
    backend.close()
    service.store.close()
