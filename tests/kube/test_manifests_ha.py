"""The manifests run two replicas that elect a leader, and survive a voluntary disruption."""

from __future__ import annotations

import pytest

from bgserve.compose.election import leader_election_mode
from bgserve.settings import Settings
from tests.kube.test_manifests import (
    BUILDS,
    MANIFESTS,
    Obj,
    apply_environment,
    build,
    one,
    rule_set,
)

ALL_BUILDS = [*sorted(BUILDS), "external-postgres"]


def built(name: str) -> list[Obj]:
    path = BUILDS[name][0] if name in BUILDS else f"overlays/{name}"
    return build(MANIFESTS / path)


@pytest.mark.parametrize("name", ALL_BUILDS)
def test_two_replicas_roll_one_at_a_time_and_a_budget_keeps_one_up(name: str) -> None:
    objects = built(name)
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = spec["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]


@pytest.mark.parametrize("name", ALL_BUILDS)
def test_the_lease_role_grants_leases_only_in_the_namespace(name: str) -> None:
    objects = built(name)
    role = one(objects, "Role", "bgserve-leader-election")
    assert rule_set(role["rules"]) == {
        ("coordination.k8s.io", "leases", verb) for verb in ("create", "get", "update")
    }
    binding = one(objects, "RoleBinding", "bgserve-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "bgserve-leader-election",
    }
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (subject,) = binding["subjects"]
    assert subject["name"] == pod["serviceAccountName"]
    assert subject["namespace"] == role["metadata"]["namespace"]


@pytest.mark.parametrize("name", ALL_BUILDS)
def test_each_replica_names_itself_and_elects_on_a_lease(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = built(name)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    apply_environment(objects, monkeypatch)
    monkeypatch.setenv("POD_NAME", "bgserve-7d9f-abcde")
    settings = Settings()
    assert leader_election_mode(settings) == "lease"
    assert settings.leader.resolved_identity.startswith("bgserve-7d9f-abcde_")


def test_the_external_postgres_overlay_reads_the_operators_secret() -> None:
    objects = built("external-postgres")
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["BGSERVE_STATE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "bgserve-db-app",
        "key": "uri",
    }
