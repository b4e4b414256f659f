"""On the real API server: a route change is done only once the gateway reports the new
spec Accepted and ResolvedRefs; a refusal, or no report in time, puts the previous route
back and fails the step with what the gateway said."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bgserve.domain import rollout
from bgserve.errors import BackendError
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.route_status import route_taken
from tests.support.kube import PlatformStatus, at_ten_percent, kserve_backend, perform
from tests.support.kube_gateway import GatewayStatus
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration


def make_backend(ns: KubeNamespace, timeout: float) -> KServeBackend:
    settings = ns.settings(
        required_rbac("gateway"),
        slot_ready_timeout_seconds=10,
        kube_route_accept_timeout_seconds=timeout,
    )
    return kserve_backend(settings, api=ns.api_for(settings))


@pytest.fixture
def gateway(kube_ns: KubeNamespace) -> Iterator[GatewayStatus]:
    """The gateway stand-in reporting on routes a quarter of a second after each change,
    with KServe's status stand-in marking every InferenceService ready."""
    platform = PlatformStatus(kube_ns, "kserve")
    status = GatewayStatus(kube_ns)
    status.controller.interval = 0.25
    with platform.controller, status.controller:
        yield status
    assert platform.controller.errors == [] and status.controller.errors == []


def weights(ns: KubeNamespace) -> dict[str, int]:
    (route,) = ns.objects("httproutes")
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {r["name"].removesuffix("-predictor"): r["weight"] for r in refs}


def test_a_step_returns_only_once_the_gateway_took_the_new_spec(
    kube_ns: KubeNamespace, gateway: GatewayStatus
) -> None:
    backend = make_backend(kube_ns, timeout=10)
    state = at_ten_percent(backend)
    for weight in (50, 100):
        started = time.monotonic()
        state = perform(backend, rollout.shift(state, weight, force=True))
        took = time.monotonic() - started
        (route,) = kube_ns.objects("httproutes")
        assert route_taken(route) is True  # the report was in before the step returned
        assert took >= 0.05  # it waited for the stand-in's next look
        # What the history records of the step: the generation the gateway took.
        report = backend.route_report("chat")
        assert report is not None and report["generation"] == route["metadata"]["generation"]
        assert report["route"] == f"{kube_ns.namespace}/{route['metadata']['name']}"
    backend.close()


def test_a_route_the_gateway_refuses_is_undone_and_the_step_fails_saying_why(
    kube_ns: KubeNamespace, gateway: GatewayStatus
) -> None:
    backend = make_backend(kube_ns, timeout=10)
    state = at_ten_percent(backend)
    before = weights(kube_ns)
    gateway.refuse = {"ResolvedRefs": ("BackendNotFound", "Service chat-r2-predictor not found")}
    with pytest.raises(BackendError) as err:
        perform(backend, rollout.shift(state, 50, force=True))
    message = str(err.value)
    assert "ResolvedRefs=False (BackendNotFound): Service chat-r2-predictor not found" in message
    assert "the previous route is back" in message
    assert weights(kube_ns) == before == {"chat-r1": 90, "chat-r2": 10}
    backend.close()


def test_without_any_report_the_step_fails_in_time_and_the_previous_route_is_back(
    kube_ns: KubeNamespace, gateway: GatewayStatus
) -> None:
    backend = make_backend(kube_ns, timeout=1)
    state = at_ten_percent(backend)
    gateway.silent = True
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        perform(backend, rollout.shift(state, 50, force=True))
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert "no gateway took HTTPRoute" in message and "within 1s" in message
    assert "Accepted=True, ResolvedRefs=True" not in message  # the old report is not the new
    assert "BGSERVE_KUBE_GATEWAY_NAME" in message
    assert weights(kube_ns) == {"chat-r1": 90, "chat-r2": 10}
    backend.close()


def test_a_first_route_nobody_takes_is_deleted(
    kube_ns: KubeNamespace, gateway: GatewayStatus
) -> None:
    backend = make_backend(kube_ns, timeout=0.5)
    gateway.silent = True
    with pytest.raises(BackendError, match="no gateway took"):
        perform(backend, rollout.create("chat", 1))
    assert list(kube_ns.objects("httproutes")) == []
    backend.close()


def test_zero_does_not_wait(kube_ns: KubeNamespace, gateway: GatewayStatus) -> None:
    backend = make_backend(kube_ns, timeout=0)
    gateway.silent = True
    state: Any = at_ten_percent(backend)
    assert weights(kube_ns) == {"chat-r1": 90, "chat-r2": 10} and state.green_weight == 10
    assert backend.route_report("chat") is None  # nothing waited for, nothing to report
    backend.close()
