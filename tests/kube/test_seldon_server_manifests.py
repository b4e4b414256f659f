"""The Seldon Core 2 Server and ServerConfig of the seldon overlay: valid, and coherent.

Valid: the pod the operator builds from the ServerConfig is accepted by a real API server
(the Server and ServerConfig CRDs themselves are not available to check against). Coherent:
the agent
advertises every capability bgserve's Models require, talks to the slot on the ports the
slot listens on, and shares the model folder the slot serves; the slot's command line is
one the slot's own parser accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bgserve.settings import Settings
from bgserve.slot.server import parse_args
from tests.kube.test_manifests import MANIFESTS, build, one
from tests.support.kube_real_apiserver import KubeCluster

Obj = dict[str, Any]
AGENT_FOLDER = "/mnt/agent"  # the agent's --agent-folder default; it serves <folder>/models


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return build(MANIFESTS / "overlays" / "seldon")


@pytest.fixture(scope="module")
def pod(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "ServerConfig")["spec"]["podSpec"]
    return spec


def container(pod: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    return found[0]


def env(item: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in item.get("env", [])}


def slot_args(pod: Obj) -> Any:
    args = container(pod, "bgserve")["args"]
    assert args[0] == "slot"
    return parse_args(args[1:])


def test_the_config_pod_is_a_pod_a_real_api_server_accepts(
    objects: list[Obj], pod: Obj, kube_cluster: KubeCluster
) -> None:
    # The Server/ServerConfig CRDs are not in the shared CRD set and no package registry
    # serves them, so their own schemas cannot be checked here; the pod the operator builds
    # from the ServerConfig can: the real API server validates it in a dry run.
    config = one(objects, "ServerConfig")
    namespace = kube_cluster.fresh_namespace("seldon-server")
    claims = [t["name"] for t in config["spec"].get("volumeClaimTemplates", [])]
    # The StatefulSet's claims become the pod's volumes; an emptyDir stands in for each.
    volumes = [*pod.get("volumes", []), *({"name": n, "emptyDir": {}} for n in claims)]
    spec = {**pod, "volumes": volumes}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server"}, "spec": spec}
    with kube_cluster.api_client() as api:
        created = client.CoreV1Api(api).create_namespaced_pod(namespace, body, dry_run="All")
    names = [c.name for c in created.spec.containers]
    assert names == [c["name"] for c in pod["containers"]]


def test_the_server_uses_the_config_and_lives_with_the_models(objects: list[Obj]) -> None:
    server, config = one(objects, "Server"), one(objects, "ServerConfig")
    deployment = one(objects, "Deployment")
    assert server["spec"]["serverConfig"] == config["metadata"]["name"]
    # Models go to bgserve's own namespace (BGSERVE_KUBE_NAMESPACE is the pod's namespace).
    assert server["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_the_agent_advertises_what_the_models_require(pod: Obj) -> None:
    agent = env(container(pod, "agent"))
    capabilities = set(agent["SELDON_SERVER_CAPABILITIES"]["value"].split(","))
    assert set(Settings().kube.seldon.requirements) <= capabilities
    # no stock capability: Models meant for MLServer must never land on this Server
    assert capabilities == {"bgserve"}


def test_the_agent_reaches_the_slot_where_it_listens(pod: Obj) -> None:
    agent, args = env(container(pod, "agent")), slot_args(pod)
    assert int(agent["SELDON_SERVER_HTTP_PORT"]["value"]) == args.port
    assert int(agent["SELDON_SERVER_GRPC_PORT"]["value"]) == args.grpc_port
    assert args.host == "0.0.0.0"  # the kubelet's probes come from outside the pod
    ports = {p["name"]: p["containerPort"] for p in container(pod, "bgserve")["ports"]}
    assert (ports["server-http"], ports["server-grpc"]) == (args.port, args.grpc_port)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container(pod, "bgserve")[probe]["httpGet"]["port"] in ports


def test_the_slot_serves_the_folder_the_agent_fills(objects: list[Obj], pod: Obj) -> None:
    args = slot_args(pod)
    assert args.model_repository == Path(AGENT_FOLDER) / "models"
    assert args.model_uri is None
    claims = {t["name"] for t in one(objects, "ServerConfig")["spec"]["volumeClaimTemplates"]}
    volumes = {v["name"] for v in pod["volumes"]} | claims
    mounts = {
        c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in pod["containers"]
    }
    assert {mounts[c][AGENT_FOLDER] for c in ("rclone", "agent", "bgserve")} <= claims
    assert len({mounts[c][AGENT_FOLDER] for c in ("rclone", "agent", "bgserve")}) == 1
    assert {name for m in mounts.values() for name in m.values()} <= volumes


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity such as ``2Gi`` or ``500M``."""
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * _UNITS[suffix]
    return int(quantity)


def test_the_server_has_room_for_blue_green_and_the_standby(pod: Obj) -> None:
    server = quantity_bytes(container(pod, "bgserve")["resources"]["requests"]["memory"])
    assert server >= 3 * quantity_bytes(Settings().kube.slot_memory)


def test_the_slot_runs_the_bgserve_image_as_its_deployment_does(
    objects: list[Obj], pod: Obj
) -> None:
    (api,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    slot = container(pod, "bgserve")
    assert slot["image"] == api["image"]
    memory = env(container(pod, "agent"))["MEMORY_REQUEST"]["valueFrom"]["resourceFieldRef"]
    assert memory["containerName"] == "bgserve" and slot["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
