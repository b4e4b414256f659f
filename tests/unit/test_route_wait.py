"""A route change whose wait fails in any way is undone: refused, not taken in time, or
the route unreadable while bgserve waited."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from bgserve.errors import BackendError
from bgserve.kube.client import Obj
from bgserve.kube.kserve.objects import HTTP_ROUTE
from bgserve.kube.readiness import Readiness
from bgserve.kube.route_wait import await_route
from bgserve.settings import Settings


class _RefusedWatches:
    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=403, reason="Forbidden")


class Routes:
    """The route's objects: the first read after the write fails as ``failure`` says."""

    resource = HTTP_ROUTE
    namespace = "models"
    api = _RefusedWatches()

    def __init__(self, failure: BackendError | None) -> None:
        self.failure = failure
        self.applied: list[Obj] = []
        self.deleted: list[str] = []

    def get(self, name: str) -> Obj | None:
        if self.failure is not None:
            raise self.failure
        return None

    def apply_with(self, name: str, build: Any) -> Obj:
        applied: Obj = build(None)
        self.applied.append(applied)
        return applied

    def delete(self, name: str) -> bool:
        self.deleted.append(name)
        return True


def route(weight: int) -> Obj:
    return {
        "metadata": {"name": "chat", "namespace": "models", "generation": 2},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"weight": weight}]},
    }


@pytest.mark.parametrize("previous", [route(100), None])
def test_an_unreadable_route_while_waiting_is_undone(previous: Obj | None) -> None:
    routes = Routes(BackendError("the Kubernetes API is unreachable"))
    kube = Settings(kube_route_accept_timeout_seconds=5).kube
    readiness = Readiness(timeout=5, resync=0.01, poll_interval=0.0, sleep=lambda _: None)
    with pytest.raises(BackendError) as failed:
        await_route(routes, readiness, kube, route(50), previous, route(50))  # type: ignore[arg-type]
    assert "unreachable" in str(failed.value) and "the previous route is back" in str(failed.value)
    if previous is None:
        assert routes.deleted == ["chat"] and routes.applied == []
    else:
        assert [r["spec"] for r in routes.applied] == [previous["spec"]]
