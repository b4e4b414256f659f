"""Leader election on a real kube-apiserver's Lease, with the manifests' own RBAC.

Every replica here runs as user ``bgserve`` holding only the rules of
``manifests/base/leader-election.yaml``: if the Role lacks a verb the lease needs, these
tests fail.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from bgserve.kube.client import api_client
from bgserve.kube.lease import KubeLease
from tests.support.kube_real_apiserver import KubeCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LEASE = "bgserve-leader"


def leader_rules() -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((ROOT / "manifests/base/leader-election.yaml").read_text())
    role = next(d for d in documents if d["kind"] == "Role")
    rules: list[dict[str, Any]] = role["rules"]
    return rules


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> str:
    ns = kube_cluster.fresh_namespace("lease")
    kube_cluster.grant(ns, leader_rules())
    return ns


def lease_of(
    kube_cluster: KubeCluster, ns: str, identity: str, clock: Clock | None = None
) -> KubeLease:
    settings = kube_cluster.settings(ns, as_bgserve=True)
    api = api_client(settings.kube)
    return KubeLease(api, ns, LEASE, identity, lease_duration=15, clock=clock or time.monotonic)


def stored(kube_cluster: KubeCluster, ns: str) -> client.V1LeaseSpec:
    with kube_cluster.api_client() as api:
        spec: client.V1LeaseSpec = (
            client.CoordinationV1Api(api).read_namespaced_lease(LEASE, ns).spec
        )
        return spec


def test_the_first_replica_takes_the_lease_and_the_second_waits_its_whole_duration(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    clock = Clock()
    a = lease_of(kube_cluster, namespace, "replica-a")
    b = lease_of(kube_cluster, namespace, "replica-b", clock)
    assert a.try_acquire_or_renew()
    first = stored(kube_cluster, namespace)
    assert first.holder_identity == "replica-a" and first.lease_duration_seconds == 15

    assert not b.try_acquire_or_renew() and b.holder() == "replica-a"
    assert a.try_acquire_or_renew(), "the holder renews"
    assert stored(kube_cluster, namespace).renew_time > first.renew_time

    # a stops renewing (killed). b judges expiry on its own clock from when it last saw the
    # record change: a renewal seen at t restarts the wait.
    assert not b.try_acquire_or_renew()
    clock.now += 14.9
    assert not b.try_acquire_or_renew(), "inside the lease duration"
    clock.now += 0.2
    assert b.try_acquire_or_renew(), "after the lease duration nobody renewed"
    taken = stored(kube_cluster, namespace)
    assert taken.holder_identity == "replica-b" and taken.lease_transitions == 1
    assert not a.try_acquire_or_renew(), "the old leader sees it lost the lease"
    assert a.holder() == "replica-b"


def test_a_released_lease_is_taken_at_once(kube_cluster: KubeCluster, namespace: str) -> None:
    a = lease_of(kube_cluster, namespace, "replica-a")
    b = lease_of(kube_cluster, namespace, "replica-b", Clock())  # a clock that never moves
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert stored(kube_cluster, namespace).holder_identity is None
    assert b.try_acquire_or_renew()
    b.release()
    b.release()  # idempotent


def test_of_replicas_racing_for_a_free_lease_exactly_one_wins(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    leases = [lease_of(kube_cluster, namespace, f"replica-{i}") for i in range(6)]
    start = threading.Barrier(len(leases))
    won: list[str] = []

    def race(lease: KubeLease) -> None:
        start.wait(10)
        if lease.try_acquire_or_renew():
            won.append(lease.identity)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert stored(kube_cluster, namespace).holder_identity == won[0]


def test_without_the_lease_rights_renewing_says_which_rbac_is_missing(
    kube_cluster: KubeCluster,
) -> None:
    from bgserve.errors import ElectionForbidden

    ns = kube_cluster.fresh_namespace("nolease")
    kube_cluster.grant(ns, [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    with pytest.raises(
        ElectionForbidden, match=r"'get' on leases\.coordination\.k8s\.io"
    ) as refused:
        lease_of(kube_cluster, ns, "replica-a").try_acquire_or_renew()
    assert "manifests/base/leader-election.yaml" in refused.value.message


HOLDER = """
import sys, time
from bgserve.app.leadership import Leadership, Timing
from bgserve.kube.client import api_client
from bgserve.kube.lease import KubeLease
from bgserve.settings import Settings

settings = Settings(kube_config=sys.argv[1], kube_namespace=sys.argv[2])
lease = KubeLease(api_client(settings.kube), sys.argv[2], "bgserve-leader", "doomed", 2.0)
timing = Timing(lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)
leadership = Leadership(lease, timing, lambda: print("leading", flush=True), lambda: None)
leadership.start()
time.sleep(600)
"""


def test_a_sigkilled_leader_is_replaced_within_the_lease_duration_and_one_retry(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    import subprocess
    import sys

    from bgserve.app.leadership import Leadership, Timing

    kubeconfig = str(kube_cluster.settings(namespace, as_bgserve=True).kube.config)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kubeconfig, namespace], stdout=subprocess.PIPE, text=True
    )
    timing = Timing(lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)
    led = threading.Event()
    successor = Leadership(
        lease_of(kube_cluster, namespace, "successor"), timing, led.set, lambda: None
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "leading"
        successor.start()
        time.sleep(1.0)
        assert not successor.is_leader, "the holder renews; no takeover while it lives"
        holder.kill()
        holder.wait(10)
        killed = time.monotonic()
        assert led.wait(10)
        took = time.monotonic() - killed
        print(f"\nLease failover after SIGKILL (duration 2 s, retry 0.25 s): {took:.2f} s")
        assert took <= timing.lease_duration + 2 * timing.retry_period + 0.5
        assert stored(kube_cluster, namespace).holder_identity == "successor"
    finally:
        holder.kill()
        successor.close()
