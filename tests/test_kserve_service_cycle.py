"""A full release cycle through the real Service on KServe: real MLflow, real slots.

The test API server stands in for Kubernetes; a controller thread plays KServe for
real: every InferenceService gets a slot process serving its bundle, and deleting
the InferenceService stops that process. Comparison traffic reaches the slots
through the endpoints the backend reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bgserve.backends.kube.kserve.backend import KServeBackend
from bgserve.backends.kube.kserve.objects import isvc_name
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.crd_schema import Crd
from tests.k8s_apiserver import FakeApiServer
from tests.kube_helpers import (
    KSERVE,
    NS,
    READY_TIMEOUT,
    Controller,
    SlotProcesses,
    assert_requests_validate,
    bundle_uri,
    make_components,
    register,
    run_cycle,
    slot_key,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    assert_requests_validate(server, crds)
    backend.close()
    service.store.close()
