"""Shadow traffic through a real gateway: bgserve writes Envoy Gateway a ``RequestMirror``,
Envoy copies live requests to green and discards green's answers, and bgserve pairs each
copy with blue's live answer from the slots' own records and scores the pairs."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from bgserve.compose import Components
from bgserve.errors import Conflict
from bgserve.kube.kserve.objects import route_name
from bgserve.settings import Settings
from tests.support.envoy_gateway import Gateway
from tests.support.flow import infer_body
from tests.support.kserve_part import kserve_on_gateway
from tests.support.kube import kserve_backend, make_components, register
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration

MIRRORED_ALL = 120  # requests sent while every one is mirrored
MIRRORED_HALF = 300  # requests sent while half are


@pytest.fixture
def shadowing(
    tmp_path: Path, mlflow_store: str, envoy_gateway: Gateway
) -> Iterator[tuple[KubeNamespace, Components]]:
    token = secrets.token_hex(16)
    # Two pods per slot: the gateway spreads requests and copies over both.
    with kserve_on_gateway(
        envoy_gateway,
        replicas=2,
        shadow=True,
        kube_slot_token_secret="slot-token",
        kube_slot_token=token,
    ) as (ns, kserve, settings):
        client.CoreV1Api(ns.admin).create_namespaced_secret(
            ns.namespace, {"metadata": {"name": "slot-token"}, "stringData": {"token": token}}
        )
        parts = started(tmp_path, mlflow_store, settings, ns)
        try:
            with kserve.controller:
                yield ns, parts
        finally:
            parts.close()
        assert kserve.controller.errors == []


def started(tmp_path: Path, mlflow_store: str, settings: Settings, ns: KubeNamespace) -> Components:
    """bgserve's parts on the KServe backend of ``settings``, leading and collecting."""
    backend = kserve_backend(settings, api=ns.api_for(settings))
    parts = make_components(tmp_path, mlflow_store, backend, leader_election="off")
    parts.start()
    return parts


def send(url: str, count: int, tag: str) -> int:
    """``count`` requests with distinct inputs through the gateway; how many answered 200."""
    answered = 0
    with httpx.Client(timeout=30) as http:
        for n in range(count):
            answer = http.post(url, json=infer_body(f"Shadow {tag} {n}. Keep it short."))
            answered += answer.status_code == 200
    return answered


def pairs_settled(parts: Components, name: str, at_least: int, timeout: float = 30.0) -> Any:
    """The shadow report once ``at_least`` pairs are in, or when no more came for 3 s."""
    deadline = time.monotonic() + timeout
    report = parts.shadow.gate_report(name)
    last, quiet_since = -1, time.monotonic()
    while report is not None and report.pairs < at_least and time.monotonic() < deadline:
        if report.pairs != last:
            last, quiet_since = report.pairs, time.monotonic()
        elif time.monotonic() - quiet_since > 3.0:
            break
        time.sleep(0.2)
        report = parts.shadow.gate_report(name)
    return report


def mirror_filters(ns: KubeNamespace, name: str) -> list[dict[str, Any]]:
    route = ns.get("httproutes", route_name(name))
    assert route is not None
    return mirror_filters_of(route)


def test_the_gateways_mirrored_copies_are_paired_with_blues_answers_and_scored(
    envoy_gateway: Gateway,
    shadowing: tuple[KubeNamespace, Components],
) -> None:
    ns, parts = shadowing
    service = parts.service
    ids = register(service, "sh")
    url = f"http://127.0.0.1:{envoy_gateway.port}/v2/models/sh/infer"
    service.create_deployment("sh", ids["v1"], "test")
    service.stage_green("sh", ids["reworded"], "test")

    parts.shadow.start_shadow("sh", 100)
    (mirror,) = mirror_filters(ns, "sh")
    assert mirror["backendRef"]["name"] == f"sh-r{ids['reworded']}-predictor"
    sent = send(url, MIRRORED_ALL, "all")
    report = pairs_settled(parts, "sh", MIRRORED_ALL)

    parts.shadow.start_shadow("sh", 50)
    assert [m["percent"] for m in mirror_filters(ns, "sh")] == [50]
    sent_half = send(url, MIRRORED_HALF, "half")
    half = pairs_settled(parts, "sh", report.pairs + MIRRORED_HALF // 2)
    parts.shadow.stop_shadow("sh")
    assert mirror_filters(ns, "sh") == []
    found_half = half.pairs - report.pairs
    print(
        f"\nthrough Envoy's mirror: {report.pairs} pairs found of {sent} requests sent at "
        f"100%; {found_half} of {sent_half} at 50%; dropped {half.dropped}, green errors "
        f"{half.green_errors}, differing {half.differing}"
    )
    assert sent == MIRRORED_ALL and sent_half == MIRRORED_HALF
    # Every live request had its copy, and each pair was found once: none lost, none
    # paired with another request's answer.
    assert report.pairs == sent
    assert (report.dropped, report.green_errors) == (0, 0)
    assert report.conclusive and report.verdict.passed, report.verdict.reasons
    # Envoy samples the copies at random: half, give or take.
    assert 0.35 * sent_half <= found_half <= 0.65 * sent_half
    assert half.dropped == 0


def test_without_a_drain_token_shadow_traffic_is_refused_and_the_route_is_unchanged(
    tmp_path: Path, mlflow_store: str, envoy_gateway: Gateway
) -> None:
    with kserve_on_gateway(envoy_gateway) as (ns, kserve, settings):
        parts = started(tmp_path, mlflow_store, settings, ns)
        try:
            with kserve.controller:
                ids = register(parts.service, "nt")
                parts.service.create_deployment("nt", ids["v1"], "test")
                parts.service.stage_green("nt", ids["reworded"], "test")
                before = ns.get("httproutes", route_name("nt"))
                with pytest.raises(Conflict, match="BGSERVE_KUBE_SLOT_TOKEN_SECRET"):
                    parts.shadow.start_shadow("nt", 100)
                after = ns.get("httproutes", route_name("nt"))
        finally:
            parts.close()
    assert before is not None and after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert mirror_filters_of(after) == []


def mirror_filters_of(route: dict[str, Any]) -> list[dict[str, Any]]:
    filters = route["spec"]["rules"][0].get("filters", [])
    return [f["requestMirror"] for f in filters if f["type"] == "RequestMirror"]
