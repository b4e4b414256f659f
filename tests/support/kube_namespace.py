"""One test's namespace on the real API server, seen through the interface the Kubernetes
tests use: the objects of a resource, a controller's status write, an object put there by
someone else, and the log of the requests bgserve sent.

bgserve runs as user ``bgserve`` with exactly the Role rules its backend declares
(``required_rbac``): a verb it needs and does not declare is refused with 403.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bgserve.kube.client import Resource, api_client
from bgserve.kube.kserve.llm_isvc import LLM_INFERENCE_SERVICE
from bgserve.kube.kserve.objects import HTTP_ROUTE, INFERENCE_SERVICE, VIRTUAL_SERVICE
from bgserve.kube.seldon.objects import EXPERIMENT, MODEL, SELDON_DEPLOYMENT
from bgserve.settings import Settings
from tests.support.kube_fake_apiserver import Recorded
from tests.support.kube_real_apiserver import KubeCluster, set_status

Obj = dict[str, Any]
Rules = list[dict[str, list[str]]]
RESOURCES = {
    r.plural: r
    for r in (
        INFERENCE_SERVICE,
        LLM_INFERENCE_SERVICE,
        HTTP_ROUTE,
        VIRTUAL_SERVICE,
        MODEL,
        EXPERIMENT,
        SELDON_DEPLOYMENT,
    )
}


def _verb(method: str, name: str, query: dict[str, list[str]], status: int) -> str:
    if method == "GET":
        if query.get("watch", [""])[0].lower() == "true":
            return "watch"
        return "get" if name else "list"
    if method == "PATCH" and status == 201:
        return "create"  # a server-side apply that created the object
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]


class RequestLog:
    """Every request an instrumented API client sends, as :class:`Recorded` entries."""

    def __init__(self) -> None:
        self.entries: list[Recorded] = []
        self._lock = threading.Lock()

    def instrument(self, api: client.ApiClient) -> client.ApiClient:
        send: Callable[..., Any] = api.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            try:
                response = send(method, url, *args, **kwargs)
            except ApiException as exc:
                self._add(method, url, kwargs, int(exc.status or 0))
                raise
            self._add(method, url, kwargs, int(getattr(response, "status", 200)))
            return response

        api.request = request
        return api

    def _add(self, method: str, url: str, kwargs: dict[str, Any], status: int) -> None:
        parts = urlsplit(url).path.strip("/").split("/")
        query = {k: [str(v)] for k, v in kwargs.get("query_params") or []}
        query.update(parse_qs(urlsplit(url).query))
        group, plural = (parts[1], parts[5]) if len(parts) >= 6 else ("", "")
        name = parts[6] if len(parts) >= 7 else ""
        sub = f"/{parts[7]}" if len(parts) >= 8 else ""
        body = kwargs.get("body")
        entry = Recorded(
            method,
            _verb(method, name, query, status),
            group,
            plural + sub,
            name,
            body if isinstance(body, dict) else None,
            status,
        )
        with self._lock:
            self.entries.append(entry)

    def count(self, verb: str) -> int:
        with self._lock:
            return sum(1 for r in self.entries if r.verb == verb)


class KubeNamespace:
    """A fresh namespace of ``cluster`` with the fake API server's test interface."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.namespace = cluster.fresh_namespace()
        self.admin = cluster.api_client()
        self.log = RequestLog()

    def settings(self, rules: Rules, **extra: Any) -> Settings:
        """bgserve's settings as user ``bgserve``, granted ``rules`` in this namespace."""
        self.cluster.grant(self.namespace, rules)
        return self.cluster.settings(self.namespace, as_bgserve=True, **extra)

    def api_for(self, settings: Settings) -> client.ApiClient:
        """bgserve's own API client for ``settings``, its requests logged in :attr:`log`."""
        return self.log.instrument(api_client(settings.kube))

    @property
    def requests(self) -> list[Recorded]:
        return list(self.log.entries)

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.admin)

    def objects(self, plural: str) -> Iterator[Obj]:
        """The stored objects of one resource (``plural`` as in the URL)."""
        r = RESOURCES[plural]
        found = self._custom().list_namespaced_custom_object(
            r.group, r.version, self.namespace, r.plural
        )
        return iter(found["items"])

    def get(self, plural: str, name: str) -> Obj | None:
        r = RESOURCES[plural]
        try:
            obj: Obj = self._custom().get_namespaced_custom_object(
                r.group, r.version, self.namespace, r.plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def put_object(self, group: str, plural: str, obj: Obj) -> Obj:
        """Create an object as another tool would (bypassing bgserve; ``kubectl``)."""
        resource: Resource = RESOURCES[plural]
        assert resource.group == group
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        created: Obj = self._custom().create_namespaced_custom_object(
            group, resource.version, self.namespace, plural, body, field_manager="kubectl"
        )
        return created

    def apply_strict(self, plural: str, obj: Obj) -> Obj:
        """Server-side apply ``obj`` as the admin with strict field validation."""
        r = RESOURCES[plural]
        applied: Obj = self._custom().patch_namespaced_custom_object(
            r.group, r.version, self.namespace, r.plural, obj["metadata"]["name"], obj,
            field_manager="test", field_validation="Strict",
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
        return applied

    def merge_patch(self, plural: str, name: str, patch: Obj, *, manager: str) -> Obj:
        """Change an object as ``manager`` would (``kubectl patch --type merge``)."""
        r = RESOURCES[plural]
        patched: Obj = self._custom().patch_namespaced_custom_object(
            r.group, r.version, self.namespace, r.plural, name, patch, field_manager=manager
        )
        return patched

    def set_status(self, group: str, plural: str, namespace: str, name: str, status: Obj) -> None:
        """Play the controller: replace the object's status (``namespace`` is ignored:
        every object of the test lives in :attr:`namespace`)."""
        del namespace
        set_status(self.admin, RESOURCES[plural], self.namespace, name, status)

    def close(self) -> None:
        self.admin.close()


@pytest.fixture
def kube_ns(kube_cluster: KubeCluster) -> Iterator[KubeNamespace]:
    """A fresh namespace on the session's real API server (see :class:`KubeNamespace`)."""
    ns = KubeNamespace(kube_cluster)
    yield ns
    ns.close()
