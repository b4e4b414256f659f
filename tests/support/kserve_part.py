"""KServe's controller played for tests on a real API server: Services, EndpointSlices
and a Ready status for each InferenceService, with real slot processes behind them when
the traffic matters (a gateway in front)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from kubernetes import client

from bgserve.kube.kserve.backend import required_rbac
from bgserve.kube.kserve.objects import SERVICE_PORT
from bgserve.settings import Settings
from tests.support.envoy_gateway import Gateway, routable_address
from tests.support.kube import (
    KSERVE,
    READY_TIMEOUT,
    Controller,
    PlatformStatus,
    SlotProcesses,
    bundle_uri,
    slot_key,
)
from tests.support.kube_namespace import KubeNamespace


class KServePart:
    """Plays KServe's controller: each InferenceService gets its ``<name>-predictor``
    Service (unless its name is in ``without_service``) and a Ready status."""

    def __init__(self, ns: KubeNamespace) -> None:
        self.ns = ns
        self.status = PlatformStatus(ns, "kserve")
        self.without_service: set[str] = set()
        self.controller = Controller(
            ns, ("inferenceservices",), self.reconcile, lambda _: None, interval=0.05
        )

    def reconcile(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.without_service:
            service = {
                "metadata": {"name": f"{name}-predictor"},
                "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": 8080}]},
            }
            with contextlib.suppress(client.ApiException):  # made at an earlier generation
                client.CoreV1Api(self.ns.admin).create_namespaced_service(
                    self.ns.namespace, service
                )
        self.status.reconcile(obj)


class KServeWithSlots(KServePart):
    """Plays KServe with pods: each InferenceService gets a real slot process at the
    host's routable address, a ``<name>-predictor`` Service and the EndpointSlice that
    puts the slot behind it, and a Ready status naming the slot's URL. With more
    ``replicas`` (one :class:`SlotProcesses` each), every InferenceService gets that many
    slot processes, one EndpointSlice each: a predictor of several pods."""

    def __init__(self, ns: KubeNamespace, slots: SlotProcesses, *replicas: SlotProcesses) -> None:
        super().__init__(ns)
        self.slots = slots
        self.pods = (slots, *replicas)

    def reconcile(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        (container,) = obj["spec"]["predictor"]["containers"]
        extra, env = self.pod_arguments(container)
        urls = [pods.start(*slot_key(obj), bundle_uri(obj), extra, env) for pods in self.pods]
        ports = [int(url.rsplit(":", 1)[1]) for url in urls]
        service = f"{meta['name']}-predictor"
        core, discovery = client.CoreV1Api(self.ns.admin), client.DiscoveryV1Api(self.ns.admin)
        with contextlib.suppress(client.ApiException):  # made at an earlier generation
            core.create_namespaced_service(
                self.ns.namespace,
                {
                    "metadata": {"name": service},
                    "spec": {"ports": [{"port": SERVICE_PORT, "targetPort": ports[0]}]},
                },
            )
            for n, port in enumerate(ports, start=1):
                discovery.create_namespaced_endpoint_slice(
                    self.ns.namespace, endpoint_slice(service, n, self.slots.host, port)
                )
        status = {
            "observedGeneration": meta["generation"],
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": f"http://{meta['name']}.{self.ns.namespace}.example.com",
            "address": {"url": urls[0]},
        }
        self.ns.set_status(*KSERVE, self.ns.namespace, meta["name"], status)

    def pod_arguments(self, container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """What a pod of ``container`` would run with beyond the slot's model: the
        exchange-records flag and the environment taken from Secrets, as the kubelet
        resolves ``secretKeyRef``."""
        args = list(container["args"])
        extra = []
        if "--exchange-records" in args:
            at = args.index("--exchange-records")
            extra = args[at : at + 2]
        env = {
            e["name"]: self.secret_value(**e["valueFrom"]["secretKeyRef"])
            for e in container.get("env", ())
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        return extra, env

    def secret_value(self, name: str, key: str) -> str:
        secret = client.CoreV1Api(self.ns.admin).read_namespaced_secret(name, self.ns.namespace)
        return base64.b64decode(secret.data[key]).decode()


class OnGateway(NamedTuple):
    """A namespace on a gateway's cluster, KServe played there with real slots, and the
    settings of a backend routing through the gateway."""

    ns: KubeNamespace
    kserve: KServeWithSlots
    settings: Settings


@contextlib.contextmanager
def kserve_on_gateway(
    gateway: Gateway, replicas: int = 1, *, shadow: bool = False, **settings: Any
) -> Iterator[OnGateway]:
    """:class:`OnGateway` for ``gateway``, ``replicas`` slot processes per
    InferenceService (``shadow`` and ``settings``: as :func:`gateway_settings` takes them);
    the slots are stopped and the namespace removed on the way out."""
    ns = KubeNamespace(gateway.cluster)
    pods = [SlotProcesses(routable_address()) for _ in range(replicas)]
    try:
        kserve = KServeWithSlots(ns, *pods)
        yield OnGateway(
            ns,
            kserve,
            gateway_settings(ns, gateway.namespace, gateway.name, shadow=shadow, **settings),
        )
    finally:
        for slots in pods:
            slots.stop_all()
        ns.close()


def endpoint_slice(service: str, n: int, host: str, port: int) -> dict[str, Any]:
    """The ``n``-th EndpointSlice of ``service``: one ready pod at ``host:port``."""
    return {
        "metadata": {
            "name": f"{service}-{n}",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
    }


def gateway_settings(
    ns: KubeNamespace,
    gateway_namespace: str,
    gateway_name: str,
    *,
    shadow: bool = False,
    **extra: Any,
) -> Settings:
    """Settings of a KServe backend in ``ns`` holding its declared Role (with ``shadow``,
    the one for draining the slots), routing through the Gateway
    ``gateway_namespace/gateway_name`` and waiting up to 60 s for it (``extra``: more
    settings, flat names)."""
    return ns.settings(
        required_rbac("gateway", shadow=shadow),
        slot_ready_timeout_seconds=READY_TIMEOUT,
        kube_gateway_name=gateway_name,
        kube_gateway_namespace=gateway_namespace,
        kube_route_accept_timeout_seconds=60,
        **extra,
    )
