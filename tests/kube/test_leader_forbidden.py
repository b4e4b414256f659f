"""A ``bgserve serve`` on KServe whose Role lacks ``coordination.k8s.io`` leases (the Role of
a deployment from before leader election), on a real kube-apiserver: it says so on
``/readyz`` and refuses a plan with 503 instead of accepting one nothing would advance; a
single step still works; once the Role grants leases it leads and takes plans again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bgserve.kube.kserve.backend import required_rbac
from tests.kube.test_kserve_service_cycle import kserve_controller
from tests.kube.test_leader_lease import leader_rules
from tests.support.flow import RELEASES, poll, register_demo
from tests.support.kube import READY_TIMEOUT, SlotProcesses
from tests.support.kube_namespace import KubeNamespace
from tests.support.processes import start_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = {"steps": [10, 100], "bake_s": 1.0, "analysis": {"on_inconclusive": "continue"}}


def call(url: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    response = httpx.request(method, f"{url}{path}", json=body, timeout=120)
    assert response.status_code == status, response.text
    return response.json()


def test_a_replica_without_lease_rights_is_not_ready_and_refuses_plans(
    tmp_path: Path, mlflow_store: str, kube_ns: KubeNamespace, slots: SlotProcesses
) -> None:
    register_demo(mlflow_store)
    backend_rules = required_rbac("gateway")
    settings = kube_ns.settings(backend_rules)  # no leases: the old Role
    env = {
        "BGSERVE_BACKEND": "kserve",
        "BGSERVE_KUBE_CONFIG": str(settings.kube.config),
        "BGSERVE_KUBE_NAMESPACE": settings.kube.namespace,
        # no gateway runs here: routes are done once stored (as the cluster's settings say)
        "BGSERVE_KUBE_ROUTE_ACCEPT_TIMEOUT_SECONDS": str(
            settings.kube.route_accept_timeout_seconds
        ),
        "BGSERVE_SLOT_READY_TIMEOUT_SECONDS": str(READY_TIMEOUT),
        "BGSERVE_LEADER_LEASE_DURATION_SECONDS": "3",
        "BGSERVE_LEADER_RENEW_DEADLINE_SECONDS": "2",
        "BGSERVE_LEADER_RETRY_PERIOD_SECONDS": "0.25",
    }
    # Not ready (503) is what this replica must say: any answer means it is up.
    url, proc = start_serve(tmp_path, mlflow_store, env, ready=(200, 503))

    try:
        with kserve_controller(kube_ns, slots):
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["ready"] is False and body["leadership"]["leader"] is False
            for needed in ("leases.coordination.k8s.io", "manifests/base/leader-election.yaml"):
                assert needed in body["reason"], body["reason"]
            assert httpx.get(f"{url}/healthz").status_code == 200

            ids = {}
            for key in ("v1", "reworded"):
                name, model, prompt = RELEASES[key]
                created = {"name": f"nl-{name}", "model_uri": model, "prompt_uri": prompt}
                ids[key] = call(url, "POST", "/releases", created, 201)["id"]
            call(url, "POST", "/deployments", {"name": "nl", "release_id": ids["v1"]}, 201)
            call(url, "POST", "/deployments/nl/green", {"release_id": ids["reworded"]})
            refused = call(
                url, "POST", "/deployments/nl/promote", {"plan": PLAN, "force": True}, 503
            )
            assert "leases.coordination.k8s.io" in refused["message"]
            assert call(url, "GET", "/deployments/nl")["plan"] is None
            stepped = call(url, "POST", "/deployments/nl/promote", {"weight": 10, "force": True})
            assert stepped["green"]["weight"] == 10

            kube_ns.settings(backend_rules + leader_rules())

            def leads() -> bool:
                answer = httpx.get(f"{url}/readyz")
                return answer.status_code == 200 and bool(answer.json()["leadership"]["leader"])

            poll(leads, 30, "bgserve leading once the Role grants leases")
            call(url, "POST", "/deployments/nl/promote", {"plan": PLAN, "force": True}, 202)
    finally:
        proc.kill()
        proc.wait(10)
