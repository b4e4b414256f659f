"""A real Kubernetes control plane for the tests: etcd + kube-apiserver on loopback.

The binaries come from ``tools/kube-apiserver.sh`` (built from Go modules into
``~/.cache/bgserve/kube-<version>/``; the first build takes about 7 minutes, later runs
reuse it), or from ``$BGSERVE_KUBE_BIN_DIR``. One control plane serves the whole test
session; each test works in a namespace of its own (:meth:`KubeCluster.fresh_namespace`).

Use the session fixture ``kube_cluster`` (registered in ``tests/conftest.py``)::

    def test_something(kube_cluster: KubeCluster) -> None:
        ns = kube_cluster.fresh_namespace()
        api = kube_cluster.api_client()           # admin (system:masters), close it after
        settings = kube_cluster.settings(ns)      # bgserve pointed at the cluster and ns
        kube_cluster.grant(ns, rules)             # RBAC rules for user "bgserve", then
        settings = kube_cluster.settings(ns, as_bgserve=True)  # least privilege
        kube_cluster.set_status(INFERENCE_SERVICE, ns, "chat-r1", {...})  # as a controller

What it runs: etcd (no fsync) and kube-apiserver on free loopback ports, with an own CA
and serving certificate, static token authentication (an admin, ``kube_cluster.token``,
and a user ``bgserve`` with only what :meth:`KubeCluster.grant` gives it), RBAC
authorization, and every official CRD (``$BGSERVE_CRD_DIR``, else the ``tools/crds.py``
cache; see :func:`tests.support.crd_schema.require_crd_dir`) installed and Established.
There are no nodes and no controllers: objects are stored, validated, defaulted and pruned
as in a cluster, and tests write the status a controller would. Both processes die with
the test process (SIGKILL included: ``PR_SET_PDEATHSIG``); state lives in a temp dir
removed at the end.

Missing Go, a failed build or missing CRDs fail the test under ``CI=true`` and skip it
elsewhere (``tests/support/missing.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config

from bgserve.backends.local.slot_process import death_signal_preexec
from bgserve.kube.client import Resource
from bgserve.settings import Settings
from tests.support.crd_schema import require_crd_dir
from tests.support.kube_pki import install_crds, kubeconfig_text, write_pki
from tests.support.missing import missing

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "kube-apiserver.sh"
START_TIMEOUT = 120.0
_STATE_PREFIX = "bgserve-kube-"


def binaries() -> Path:
    """The directory holding kube-apiserver and etcd: ``$BGSERVE_KUBE_BIN_DIR``, else
    the project's cache, built now if needed (``tools/kube-apiserver.sh build``)."""
    explicit = os.environ.get("BGSERVE_KUBE_BIN_DIR")
    if explicit:
        return Path(explicit)
    return built_by(BUILD_SCRIPT, "kube-apiserver and etcd")


def built_by(script: Path, what: str) -> Path:
    """The directory ``script path`` prints, after ``script build`` if nothing is built
    yet; a build that fails is a missing dependency (:func:`missing`)."""
    found = subprocess.run(
        ["bash", str(script), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode == 0:
        return Path(found.stdout.strip())
    built = subprocess.run(
        ["bash", str(script), "build"], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        missing(
            f"{what} could not be built (needs Go >= 1.24 and the Go module proxy; run "
            f"{script.relative_to(REPO)} build): {built.stderr[-1500:]}"
        )
    return Path(built.stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _remove_stale_state() -> None:
    """State dirs of test runs that were killed (their pid is gone)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_STATE_PREFIX}*"):
        pid = path.name.removeprefix(_STATE_PREFIX).partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class KubeCluster:
    """A running etcd + kube-apiserver; see the module docstring for the interface."""

    server: str
    token: str
    ca_file: Path
    kubeconfig: Path
    bgserve_kubeconfig: Path
    state: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    def api_client(self) -> client.ApiClient:
        """A new admin (system:masters) API client; the caller closes it."""
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def settings(self, namespace: str, *, as_bgserve: bool = False, **extra: Any) -> Settings:
        """bgserve's settings for this cluster and ``namespace`` (``extra`` overrides):
        as the admin, or ``as_bgserve`` as user ``bgserve`` (rights from :meth:`grant`)."""
        kubeconfig = self.bgserve_kubeconfig if as_bgserve else self.kubeconfig
        # No gateway reports on routes unless a test runs one (tests.support.kube_gateway).
        values: dict[str, Any] = {
            "kube_config": kubeconfig,
            "kube_namespace": namespace,
            "kube_route_accept_timeout_seconds": 0,
        }
        return Settings(**{**values, **extra})

    def grant(self, namespace: str, rules: list[dict[str, list[str]]]) -> None:
        """Bind a Role of ``rules`` in ``namespace`` to user ``bgserve`` (replacing any)."""
        role = {"metadata": {"name": "bgserve"}, "rules": rules}
        binding = {
            "metadata": {"name": "bgserve"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bgserve"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bgserve"}
            ],
        }
        with self.api_client() as api:
            rbac = client.RbacAuthorizationV1Api(api)
            with contextlib.suppress(client.ApiException):
                rbac.delete_namespaced_role("bgserve", namespace)
            rbac.create_namespaced_role(namespace, role)
            with contextlib.suppress(client.ApiException):
                rbac.create_namespaced_role_binding(namespace, binding)

    def fresh_namespace(self, prefix: str = "t") -> str:
        """Create a namespace no other test uses and return its name."""
        name = f"{prefix}-{os.getpid()}-{next(self._names)}"
        with self.api_client() as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        return name

    def objects(self, resource: Resource, namespace: str) -> list[Obj]:
        """Every object of ``resource`` in ``namespace``."""
        with self.api_client() as api:
            found = client.CustomObjectsApi(api).list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural
            )
        return list(found["items"])

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        with self.api_client() as api:
            try:
                obj: Obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, name
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return obj

    def create(self, resource: Resource, namespace: str, obj: Obj) -> Obj:
        """Create ``obj`` as another tool would (admin, field manager ``kubectl``)."""
        with self.api_client() as api:
            created: Obj = client.CustomObjectsApi(api).create_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, obj,
                field_manager="kubectl",
            )  # fmt: skip
        return created

    def set_status(self, resource: Resource, namespace: str, name: str, status: Obj) -> Obj:
        """Replace the status through the ``/status`` subresource, as the platform's
        controller would; raises ``ApiException`` (404 once deleted)."""
        with self.api_client() as api:
            return set_status(api, resource, namespace, name, status)


def set_status(
    api: client.ApiClient, resource: Resource, namespace: str, name: str, status: Obj
) -> Obj:
    """Replace ``status`` of an object through ``/status`` with ``api`` (a JSON patch)."""
    written: Obj = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        resource.group, resource.version, namespace, resource.plural, name,
        [{"op": "add", "path": "/status", "value": status}],
        field_manager="test-controller", _content_type="application/json-patch+json",
    )  # fmt: skip
    return written


class ControlPlane:
    """Starts etcd and kube-apiserver, installs the CRDs; :meth:`stop` ends both."""

    def __init__(self, bin_dir: Path, crd_dir: Path) -> None:
        self.bin_dir, self.crd_dir = bin_dir, crd_dir
        self.state = Path(tempfile.mkdtemp(prefix=f"{_STATE_PREFIX}{os.getpid()}-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> KubeCluster:
        token, bgserve_token = os.urandom(24).hex(), os.urandom(24).hex()
        write_pki(self.state / "pki", token, bgserve_token)
        etcd_port, peer_port, api_port = _free_ports(3)
        self._start_etcd(etcd_port, peer_port)
        server = f"https://127.0.0.1:{api_port}"
        self._start_apiserver(etcd_port, api_port)
        ca = self.state / "pki" / "ca.crt"
        self._wait_ready(server, ca, token)
        kubeconfig, bgserve = self.state / "kubeconfig", self.state / "kubeconfig-bgserve"
        kubeconfig.write_text(kubeconfig_text(server, ca, token))
        bgserve.write_text(kubeconfig_text(server, ca, bgserve_token))
        cluster = KubeCluster(server, token, ca, kubeconfig, bgserve, self.state)
        with cluster.api_client() as api:
            install_crds(api, self.crd_dir)
        return cluster

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.state / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=death_signal_preexec(os.getpid()),
        )
        log.close()
        self.procs.append(proc)

    def _start_etcd(self, port: int, peer: int) -> None:
        self._spawn("etcd", [
            "--name=default",
            f"--data-dir={self.state / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{port}",
            f"--advertise-client-urls=http://127.0.0.1:{port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])  # fmt: skip

    def _start_apiserver(self, etcd_port: int, port: int) -> None:
        pki = self.state / "pki"
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
        ])  # fmt: skip

    def _wait_ready(self, server: str, ca: Path, token: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        headers = {"Authorization": f"Bearer {token}"}
        verify = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(verify=verify, headers=headers, timeout=2) as http:
            while time.monotonic() < deadline:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args!r} exited: {self._logs()}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{server}/readyz").text == "ok":
                        return
                time.sleep(0.1)
        raise RuntimeError(f"kube-apiserver not ready within {START_TIMEOUT:g}s: {self._logs()}")

    def _logs(self) -> str:
        return "\n".join(
            f"{p.name}: {p.read_text(errors='replace')[-2000:]}" for p in self.state.glob("*.log")
        )

    def stop(self) -> None:
        """SIGTERM kube-apiserver, then etcd (SIGKILL after 10 s); remove the state."""
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """One real etcd + kube-apiserver with the official CRDs for the whole session."""
    crd_dir = require_crd_dir()
    bin_dir = binaries()
    _remove_stale_state()
    plane = ControlPlane(bin_dir, crd_dir)
    try:
        cluster = plane.start()
    except BaseException:
        plane.stop()
        raise
    yield cluster
    plane.stop()
