"""The real control plane the Kubernetes tests run on: it starts, serves the official
CRDs, validates as a cluster does, and leaves no process behind."""

from __future__ import annotations

import pytest
from kubernetes import client

from bgserve.kube.kserve.objects import INFERENCE_SERVICE
from tests.support.kube_real_apiserver import KubeCluster

pytestmark = [pytest.mark.integration]


def isvc(name: str, **spec: object) -> dict[str, object]:
    predictor = {"model": {"modelFormat": {"name": "mlflow"}}, **spec}
    return {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "metadata": {"name": name},
        "spec": {"predictor": predictor},
    }


def test_crds_are_served_and_status_is_written_through_the_subresource(
    kube_cluster: KubeCluster,
) -> None:
    ns = kube_cluster.fresh_namespace()
    created = kube_cluster.create(INFERENCE_SERVICE, ns, isvc("chat-r1"))
    assert created["metadata"]["generation"] == 1
    kube_cluster.set_status(
        INFERENCE_SERVICE, ns, "chat-r1", {"conditions": [{"type": "Ready", "status": "True"}]}
    )
    stored = kube_cluster.get(INFERENCE_SERVICE, ns, "chat-r1")
    assert stored is not None
    assert stored["status"]["conditions"][0]["status"] == "True"
    assert stored["metadata"]["generation"] == 1  # status writes leave the generation
    assert [o["metadata"]["name"] for o in kube_cluster.objects(INFERENCE_SERVICE, ns)] == [
        "chat-r1"
    ]


def test_namespaces_are_fresh_and_separate(kube_cluster: KubeCluster) -> None:
    first, second = kube_cluster.fresh_namespace(), kube_cluster.fresh_namespace()
    assert first != second
    kube_cluster.create(INFERENCE_SERVICE, first, isvc("chat-r1"))
    assert kube_cluster.objects(INFERENCE_SERVICE, second) == []


def test_the_server_refuses_what_a_cluster_refuses(kube_cluster: KubeCluster) -> None:
    ns = kube_cluster.fresh_namespace()
    with kube_cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        r = INFERENCE_SERVICE
        with pytest.raises(client.ApiException) as invalid:  # schema: minReplicas is an integer
            custom.create_namespaced_custom_object(
                r.group, r.version, ns, r.plural, isvc("bad", minReplicas="two")
            )
        assert invalid.value.status == 422
        with pytest.raises(client.ApiException) as unknown:
            custom.create_namespaced_custom_object(
                r.group, r.version, ns, r.plural, isvc("odd", bogus=1), field_validation="Strict"
            )
        assert unknown.value.status == 400 and "bogus" in str(unknown.value.body)
    assert kube_cluster.get(INFERENCE_SERVICE, ns, "bad") is None


def test_an_unauthenticated_client_is_refused(kube_cluster: KubeCluster) -> None:
    configuration = client.Configuration()
    configuration.host = kube_cluster.server
    configuration.ssl_ca_cert = str(kube_cluster.ca_file)
    with client.ApiClient(configuration) as api, pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api).list_namespace()
    assert refused.value.status in (401, 403)


KILLED_RUNNER = """
import os, sys, time
from pathlib import Path
from tests.support.kube_real_apiserver import ControlPlane
plane = ControlPlane(Path(sys.argv[1]), Path(sys.argv[2]))
plane.start()
print(" ".join(str(p.pid) for p in plane.procs), plane.state, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_test_run_leaves_no_control_plane_behind(kube_cluster: KubeCluster) -> None:
    """SIGKILL the process that started etcd and kube-apiserver: both go with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.crd_schema import require_crd_dir
    from tests.support.kube_real_apiserver import REPO, binaries

    runner = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUNNER, str(binaries()), str(require_crd_dir())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    *pids, _state = runner.stdout.readline().split()
    assert len(pids) == 2
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 20
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in pids if _running(int(p))]
    assert alive == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
