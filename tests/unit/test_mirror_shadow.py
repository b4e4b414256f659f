"""Shadow traffic on Kubernetes, bgserve's half: the route's mirror, and draining the slots'
records (a slot that answers badly is reported, never trusted)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bgserve.domain.state import Route
from bgserve.errors import BackendError, Conflict
from bgserve.kube.mirror_shadow import (
    MIRROR_ANNOTATION,
    POD_LIST_SECONDS,
    MirrorShadow,
    records_page,
)

ROUTES = [Route("blue", 1, 100), Route("green", 2, 0)]
ROUTE: dict[str, Any] = {
    "kind": "HTTPRoute",
    "metadata": {"name": "chat"},
    "spec": {"rules": [{"backendRefs": []}]},
}


def shadow(answer: httpx.Response | None = None, token: str = "t") -> MirrorShadow:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {token}"
        return answer or httpx.Response(200, json={"exchanges": [], "unread": 0, "more": False})

    http = httpx.Client(transport=httpx.MockTransport(handle))
    return MirrorShadow(token, lambda d, r: [f"http://slot-{r}"], "ns", http=http)


def test_without_a_token_mirroring_is_refused_naming_the_settings() -> None:
    with pytest.raises(Conflict, match="BGSERVE_KUBE_SLOT_TOKEN_SECRET"):
        shadow(token="").configure("chat", 50, ROUTES)
    assert shadow(token="").configure("chat", 0, ROUTES) == 0  # stopping needs none


def test_the_route_mirrors_to_green_while_on_and_says_off_once_stopped() -> None:
    mirror = shadow()
    assert mirror.mirrored("chat", ROUTE, ROUTES) == ROUTE
    assert mirror.configure("chat", 30, ROUTES) == 0
    on = mirror.mirrored("chat", ROUTE, ROUTES)
    (mirror_filter,) = on["spec"]["rules"][0]["filters"]
    assert mirror_filter["requestMirror"]["percent"] == 30
    assert mirror_filter["requestMirror"]["backendRef"]["name"] == "chat-r2-predictor"
    assert on["metadata"]["annotations"][MIRROR_ANNOTATION] == "30% to release 2"
    assert mirror.configure("chat", 0, ROUTES) == 30
    off = mirror.mirrored("chat", ROUTE, ROUTES, current=on)
    assert "filters" not in off["spec"]["rules"][0]
    assert off["metadata"]["annotations"][MIRROR_ANNOTATION] == "off"
    assert mirror.mirrored("chat", ROUTE, ROUTES, current=off) == ROUTE


@pytest.mark.parametrize(
    ("answer", "reported"),
    [
        (httpx.Response(401), "BGSERVE_KUBE_SLOT_TOKEN must hold"),
        (httpx.Response(404), "without a drain token"),
        (httpx.Response(200, text="<html>"), "something else than records"),
        (
            httpx.Response(
                200, json={"exchanges": [{"request_id": "a"}], "unread": 0, "more": False}
            ),
            "a record without",
        ),
        (httpx.Response(200, json={"exchanges": [], "unread": "many", "more": False}), "'unread'"),
    ],
)
def test_a_slot_answering_badly_is_reported(answer: httpx.Response, reported: str) -> None:
    with pytest.raises(BackendError, match=reported):
        shadow(answer).configure("chat", 50, ROUTES)


def test_pairs_are_empty_when_not_mirroring_or_without_a_green() -> None:
    mirror = shadow()
    assert mirror.pairs("chat", ROUTES).pairs == []
    mirror.configure("chat", 50, ROUTES)
    assert mirror.pairs("chat", [Route("blue", 1, 100)]).pairs == []


RECORD = {
    "request_id": "a",
    "mirrored": False,
    "digest": "d",
    "request_body": "{}",
    "answer_body": "{}",
    "status": 200,
    "ms": 1.0,
    "truncated": False,
    "release_id": 1,
}


def test_records_page_takes_well_formed_pages_only() -> None:
    page = {"exchanges": [RECORD], "unread": 0, "more": False}
    assert records_page(json.loads(json.dumps(page))) == page
    with pytest.raises(ValueError):
        records_page([page])


def test_a_pod_that_cannot_be_drained_is_skipped_while_another_can() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gone":
            raise httpx.ConnectError("refused")
        exchanges = [{**RECORD, "release_id": int(request.url.host[-1])}]
        return httpx.Response(200, json={"exchanges": exchanges, "unread": 1, "more": False})

    pods = {1: ["http://blue-1", "http://gone"], 2: ["http://green-2"]}
    http = httpx.Client(transport=httpx.MockTransport(handle))
    now = [0.0]
    mirror = MirrorShadow("t", lambda d, r: pods[r], "ns", http=http, clock=lambda: now[0])
    mirror.configure("chat", 100, ROUTES)
    batch = mirror.pairs("chat", ROUTES)
    assert [p.request_id for p in batch.pairs] == ["a"] and batch.dropped == 2
    pods[1] = ["http://gone"]
    now[0] += POD_LIST_SECONDS
    with pytest.raises(BackendError, match="cannot drain"):
        mirror.pairs("chat", ROUTES)


def test_a_slots_pods_are_listed_again_only_after_a_while_or_when_none_answers() -> None:
    """Drains come every half second: the EndpointSlices are not listed each time."""
    answering = {"http://blue-1", "http://green-2", "http://blue-3"}

    def handle(request: httpx.Request) -> httpx.Response:
        if f"http://{request.url.host}" not in answering:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"exchanges": [], "unread": 0, "more": False})

    pods = {1: ["http://blue-1"], 2: ["http://green-2"]}
    listed: list[int] = []

    def list_pods(deployment: str, release_id: int) -> list[str]:
        listed.append(release_id)
        return list(pods[release_id])

    now = [0.0]
    http = httpx.Client(transport=httpx.MockTransport(handle))
    mirror = MirrorShadow("t", list_pods, "ns", http=http, clock=lambda: now[0])
    mirror.configure("chat", 100, ROUTES)
    for _ in range(5):
        now[0] += 0.5
        mirror.pairs("chat", ROUTES)
    assert sorted(listed) == [1, 2]
    now[0] += POD_LIST_SECONDS
    mirror.pairs("chat", ROUTES)
    assert sorted(listed) == [1, 1, 2, 2]
    pods[1] = ["http://blue-3"]  # blue's pod was replaced: the cached one no longer answers
    answering.discard("http://blue-1")
    mirror.pairs("chat", ROUTES)
    assert sorted(listed) == [1, 1, 1, 2, 2]
    mirror.configure("chat", 0, ROUTES)
    mirror.configure("chat", 100, ROUTES)  # a new mirror lists afresh
    assert sorted(listed) == [1, 1, 1, 1, 2, 2, 2]
