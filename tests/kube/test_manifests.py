"""The kustomize base and overlays build, hang together, and grant only what is used.

kubectl is not available here, so :func:`build` does what ``kubectl kustomize`` does
for the few kustomization features the manifests use, and refuses any other.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgserve.kube.kserve.backend import required_rbac as kserve_rbac
from bgserve.kube.seldon.base import required_rbac as seldon_rbac
from bgserve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
EXTERNAL_SECRET = "bgserve-secrets"  # created by hand, documented in the base kustomization
SLOT_TOKEN_SECRET = "bgserve-slot-token"  # the same, for the shadow overlay
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

Obj = dict[str, Any]


def _json_patch(doc: Obj, ops: list[Obj]) -> None:
    for op in ops:
        *parents, last = [p for p in op["path"].split("/") if p]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "add" and last == "-":
            node.append(copy.deepcopy(op["value"]))
            continue
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] in ("replace", "add"):
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "test":
            assert node[key] == op["value"], f"patch test failed at {op['path']}"
        else:
            raise AssertionError(f"unsupported patch op {op['op']}")


def _transform(objects: list[Obj], kustomization: Obj) -> None:
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        hits = [
            o
            for o in objects
            if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
        ]
        assert hits, f"patch target {target} matches nothing"
        for obj in hits:
            _json_patch(obj, yaml.safe_load(patch["patch"]))
    for obj in objects:
        meta = obj["metadata"]
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = kustomization["namespace"]
        for labels in kustomization.get("labels", []):
            meta["labels"] = {**meta.get("labels", {}), **labels["pairs"]}
        for container in _containers(obj):
            for image in kustomization.get("images", []):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['name']}:{image['newTag']}"


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED
    assert not unsupported, f"{directory}: kustomization fields not checked here: {unsupported}"
    objects: list[Obj] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory}: missing resource {entry}"
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    _transform(objects, kustomization)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in {directory}"
    return objects


def _containers(obj: Obj) -> list[Obj]:
    if obj["kind"] != "Deployment":
        return []
    return list(obj["spec"]["template"]["spec"]["containers"])


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def rule_set(rules: list[Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


# each build and the settings it must produce
BUILDS: dict[str, tuple[str, dict[str, str]]] = {
    "base": ("base", {"backend": "kserve", "kserve_router": "gateway"}),
    "istio": ("overlays/istio", {"backend": "kserve", "kserve_router": "istio"}),
    "llm-group": (
        "overlays/llm-group",
        {"backend": "kserve", "kserve_router": "gateway", "kserve_llm_mode": "llminferenceservice"},
    ),
    "seldon": ("overlays/seldon", {"backend": "seldon", "seldon_flavour": "v2"}),
    "seldon-v1": ("overlays/seldon-v1", {"backend": "seldon", "seldon_flavour": "v1"}),
    "shadow": (
        "overlays/shadow",
        {
            "backend": "kserve",
            "kserve_router": "gateway",
            "kube_slot_token_secret": SLOT_TOKEN_SECRET,
        },
    ),
}
Built = tuple[list[Obj], dict[str, str]]


@pytest.fixture(params=sorted(BUILDS))
def built(request: pytest.FixtureRequest) -> Built:
    path, expected = BUILDS[request.param]
    return build(MANIFESTS / path), expected


def _required(expected: dict[str, str]) -> list[dict[str, list[str]]]:
    if expected["backend"] == "kserve":
        llm_mode = expected.get("kserve_llm_mode", "inferenceservice")
        shadow = "kube_slot_token_secret" in expected
        return kserve_rbac(expected["kserve_router"], llm_mode, shadow=shadow)
    return seldon_rbac(expected["seldon_flavour"])


def test_role_grants_exactly_what_the_backend_uses(built: Built) -> None:
    objects, expected = built
    role = one(objects, "Role", "bgserve")
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert "*" not in {x for rule in role["rules"] for key in rule for x in rule[key]}
    assert rule_set(role["rules"]) == rule_set(_required(expected))


def test_settings_in_the_configmap_are_real_and_consistent(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects, expected = built
    data = one(objects, "ConfigMap")["data"]
    known = Settings.env_names()
    assert {k for k in data if not k.startswith("MLFLOW_")} <= known
    apply_environment(objects, monkeypatch)
    settings = Settings()
    assert {name: settings.flat(name) for name in expected} == expected
    assert settings.auth_tokens_file is not None


def test_references_resolve(built: Built) -> None:
    objects, _ = built
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    deployment, binding = one(objects, "Deployment"), one(objects, "RoleBinding", "bgserve")
    pod = deployment["spec"]["template"]
    assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in names
    assert ("Role", binding["roleRef"]["name"]) in names
    (subject,) = binding["subjects"]
    assert ("ServiceAccount", subject["name"]) in names
    assert subject["namespace"] == deployment["metadata"]["namespace"]
    config_maps = {
        v["configMapRef"]["name"] for v in _walk(pod) if isinstance(v, dict) and "configMapRef" in v
    }
    assert {("ConfigMap", n) for n in config_maps} <= names and config_maps
    secrets = {v.get("name") or v.get("secretName") for v in _secret_refs(pod)}
    data = one(objects, "ConfigMap")["data"]
    slot_secret = data.get("BGSERVE_KUBE_SLOT_TOKEN_SECRET")
    assert secrets == {EXTERNAL_SECRET, *([slot_secret] if slot_secret else [])}
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def apply_environment(objects: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    """Set what bgserve's container would find in its environment: the ConfigMap's
    settings, and a stand-in for each value it takes from a Secret."""
    for key, value in one(objects, "ConfigMap")["data"].items():
        monkeypatch.setenv(key, value)
    (container,) = _containers(one(objects, "Deployment"))
    for env in container["env"]:
        if "secretKeyRef" in env.get("valueFrom", {}):
            monkeypatch.setenv(env["name"], "a value from the Secret")


def _secret_refs(pod: Obj) -> list[Obj]:
    refs = [v["secretKeyRef"] for v in _walk(pod) if isinstance(v, dict) and "secretKeyRef" in v]
    return refs + [v["secret"] for v in _walk(pod) if isinstance(v, dict) and "secret" in v]


def test_deployment_probes_state_and_security(built: Built) -> None:
    objects, _ = built
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "bgserve:0.1.0" and container["args"] == ["serve"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    env = {e["name"]: e for e in container["env"]}
    assert env["BGSERVE_STATE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "state-url"
    assert env["BGSERVE_KUBE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_dockerfile_runs_bgserve_as_non_root() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, parts in enumerate(instructions) if parts[0] == "FROM")
    final = {parts[0]: parts[1] for parts in instructions[last_from:] if len(parts) == 2}
    assert final["FROM"].startswith("python:") and final["FROM"].endswith("-slim")
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert final["ENTRYPOINT"] == '["bgserve"]' and final["CMD"] == '["serve"]'
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".git" in ignored and "tests" in ignored
