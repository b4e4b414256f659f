"""Two ``bgserve serve`` replicas on KServe, a real kube-apiserver and one real PostgreSQL.

Replica A leads (it holds the Lease); a plan started through replica B is advanced by A;
A is SIGKILLed in the middle of a bake; B takes the Lease over and finishes the plan, and the
history shows every step once. A controller thread plays KServe with real slot processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_S, RENEW_S, RETRY_S = 3.0, 2.0, 0.25
PLAN = {
    "steps": [10, 50, 100],
    "bake_s": 4.0,
    "analysis": {"max_bake_s": 4.0, "on_inconclusive": "continue"},
}


def start_replica(name: str, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgserve", "serve", "--port", str(port)],
        env={**os.environ, **env, "BGSERVE_LEADER_IDENTITY": name},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"replica {name} exited while starting"
        try:
            return httpx.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    poll(ready, 120, f"replica {name} ready")
    return url, proc


def leadership(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/readyz").json()["leadership"]
    return status


def call(url: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    response = httpx.request(method, f"{url}{path}", json=body, timeout=120)
    assert response.status_code == status, response.text
    return response.json()


def test_b_finishes_the_plan_a_was_running_when_a_was_killed(
    tmp_path: Path,
    mlflow_store: str,
    kube_ns: KubeNamespace,
    slots: SlotProcesses,
    pg: PostgresServer,
) -> None:
    register_demo(mlflow_store)
    settings = kube_ns.settings(required_rbac("gateway") + leader_rules())
    env = {
        "BGSERVE_HOME": str(tmp_path),
        "BGSERVE_BACKEND": "kserve",
        "BGSERVE_KUBE_CONFIG": str(settings.kube.config),
        "BGSERVE_KUBE_NAMESPACE": settings.kube.namespace,
        # no gateway runs here: routes are done once stored (as the cluster's settings say)
        "BGSERVE_KUBE_ROUTE_ACCEPT_TIMEOUT_SECONDS": str(
            settings.kube.route_accept_timeout_seconds
        ),
        "BGSERVE_STATE_URL": pg.new_database(),
        "BGSERVE_SLOT_READY_TIMEOUT_SECONDS": str(READY_TIMEOUT),
        "BGSERVE_LEADER_LEASE_DURATION_SECONDS": str(LEASE_S),
        "BGSERVE_LEADER_RENEW_DEADLINE_SECONDS": str(RENEW_S),
        "BGSERVE_LEADER_RETRY_PERIOD_SECONDS": str(RETRY_S),
        "BGSERVE_ENGINE_INTERVAL_SECONDS": "0.1",
        "MLFLOW_TRACKING_URI": mlflow_store,
        "MLFLOW_REGISTRY_URI": mlflow_store,
    }
    with kserve_controller(kube_ns, slots):
        a_url, a = start_replica("replica-a", env)
        b_url, b = start_replica("replica-b", env)
        try:
            assert leadership(a_url)["leader"] and not leadership(b_url)["leader"]
            assert leadership(b_url)["holder"] == "replica-a"
            ids = {}
            for key in ("v1", "reworded"):
                name, model, prompt = RELEASES[key]
                body = {"name": f"ha-{name}", "model_uri": model, "prompt_uri": prompt}
                ids[key] = call(b_url, "POST", "/releases", body, 201)["id"]
            call(b_url, "POST", "/deployments", {"name": "ha", "release_id": ids["v1"]}, 201)
            call(b_url, "POST", "/deployments/ha/green", {"release_id": ids["reworded"]})
            call(b_url, "POST", "/deployments/ha/promote", {"plan": PLAN, "force": True}, 202)

            def at(weight: int) -> bool:
                return bool(call(b_url, "GET", "/deployments/ha")["green"]["weight"] == weight)

            poll(lambda: at(50), 30, "leader A stepping the plan to 50")
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            killed = time.monotonic()
            poll(lambda: leadership(b_url)["leader"], 3 * LEASE_S, "B taking the Lease")
            took = time.monotonic() - killed
            print(f"\nKServe replicas: B leads {took:.2f} s after A's SIGKILL (lease {LEASE_S} s)")
            assert took <= LEASE_S + 2 * RETRY_S + 1.0

            def stable() -> Any:
                body = call(b_url, "GET", "/deployments/ha")
                return body if body["phase"] == "stable" else None

            done = poll(stable, 60, "B finishing the plan")
            assert done["blue"]["release"]["id"] == ids["reworded"]
            history = call(b_url, "GET", "/deployments/ha/history")
            steps = [
                e["weights_after"][str(ids["reworded"])]
                for e in history
                if e["action"] in ("shift", "promote") and e["principal"] == "bgserve"
            ]
            # The first step too is the engine's: it follows green's warm-up.
            assert steps == [10, 50, 100], "each step applied once, across the failover"
            assert len(history) == done["version"]
        finally:
            for proc in (a, b):
                proc.kill()
                proc.wait(10)
