"""On the real API server, with the Istio router: with the wait on, a route change is
done only once istiod reports the VirtualService's new generation ``Reconciled``; no
report in time puts the previous route back and fails the step saying what istiod said.
The wait is off by default (Istio writes no status unless told to)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bgserve.domain import rollout
from bgserve.errors import BackendError
from bgserve.kube.istio_status import reconciled_report
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from tests.support.kube import PlatformStatus, at_ten_percent, kserve_backend, perform
from tests.support.kube_istio import IstioStatus
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration


def make_backend(ns: KubeNamespace, timeout: float | None) -> KServeBackend:
    """The backend as user bgserve with its Role; ``timeout`` None leaves the default."""
    wait = {} if timeout is None else {"kube_istio_reconcile_timeout_seconds": timeout}
    settings = ns.settings(
        required_rbac("istio", istio_status=bool(timeout)),
        kserve_router="istio",
        slot_ready_timeout_seconds=10,
        **wait,
    )
    return kserve_backend(settings, api=ns.api_for(settings))


@pytest.fixture
def istiod(kube_ns: KubeNamespace) -> Iterator[IstioStatus]:
    """istiod's stand-in looking every quarter of a second, with KServe's marking every
    InferenceService ready."""
    platform = PlatformStatus(kube_ns, "kserve")
    status = IstioStatus(kube_ns)
    status.controller.interval = 0.25
    with platform.controller, status.controller:
        yield status
    assert platform.controller.errors == [] and status.controller.errors == []


def weights(ns: KubeNamespace) -> dict[str, int]:
    (service,) = ns.objects("virtualservices")
    return {
        d["destination"]["host"].split("-predictor")[0]: d.get("weight", 0)
        for d in service["spec"]["http"][0]["route"]
    }


def test_a_step_returns_only_once_istiod_pushed_the_new_generation(
    kube_ns: KubeNamespace, istiod: IstioStatus
) -> None:
    backend = make_backend(kube_ns, timeout=10)
    state = at_ten_percent(backend)
    for weight in (50, 100):
        started = time.monotonic()
        state = perform(backend, rollout.shift(state, weight, force=True))
        took = time.monotonic() - started
        (service,) = kube_ns.objects("virtualservices")
        report = reconciled_report(service)
        assert report is not None  # istiod's True was in before the step returned
        assert took >= 0.3  # a False report first, the True one on the next look
        assert backend.route_report("chat") == report
        assert report["generation"] == service["metadata"]["generation"]
        assert report["taken_by"] == ["istiod (2/2 complete)"]
    backend.close()


def test_a_push_that_never_completes_fails_the_step_and_the_previous_route_is_back(
    kube_ns: KubeNamespace, istiod: IstioStatus
) -> None:
    backend = make_backend(kube_ns, timeout=10)
    state = at_ten_percent(backend)
    before = weights(kube_ns)
    istiod.stuck = True
    backend.kube = backend.kube.model_copy(update={"istio_reconcile_timeout_seconds": 1.0})
    with pytest.raises(BackendError) as failed:
        perform(backend, rollout.shift(state, 50, force=True))
    message = str(failed.value)
    assert "Reconciled=False (stillPropagating, 1/2 complete)" in message
    assert "PILOT_ENABLE_STATUS" in message and "the previous route is back" in message
    assert weights(kube_ns) == before
    backend.close()


def test_the_wait_is_off_by_default_and_needs_no_more_rights(
    kube_ns: KubeNamespace, istiod: IstioStatus
) -> None:
    istiod.silent = True  # Istio's default: no status at all
    backend = make_backend(kube_ns, timeout=None)
    at_ten_percent(backend)
    assert weights(kube_ns) == {"chat-r1": 90, "chat-r2": 10}
    assert backend.kube.istio_reconcile_timeout_seconds == 0
    assert backend.route_report("chat") is None
    assert {r.verb for r in kube_ns.requests if r.resource == "virtualservices"} <= {
        "create",
        "get",
        "patch",
    }
    backend.close()
