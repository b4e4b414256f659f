"""The weighted router in front of real slot processes."""

from __future__ import annotations

import collections
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bgserve.dataplane.router import Router, RouteTarget, weighted_schedule
from tests.support.models import SlotProcess, infer_body, wait_until

# The echo bundle has no type hints on predict; MLflow warns about it every time.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]


@pytest.fixture(scope="module")
def upstreams(
    bundles: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SlotProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    started = {
        "blue": SlotProcess(bundles["v1"], "demo", 1, logs / "blue.log"),
        "green": SlotProcess(bundles["v2"], "demo", 2, logs / "green.log"),
    }
    try:
        for slot in started.values():
            slot.wait_ready()
        yield started
    finally:
        for slot in started.values():
            slot.stop()


@pytest.fixture
def router(demo_router: tuple[Router, str]) -> tuple[Router, str]:
    """The data plane and its base URL."""
    rt, url = demo_router
    return rt, url.partition("/v2/")[0]


def target(slot: SlotProcess, role: str, weight: int) -> RouteTarget:
    return RouteTarget(role, slot.release_id, "127.0.0.1", slot.port, weight)


def routes(upstreams: dict[str, SlotProcess], green: int) -> list[RouteTarget]:
    return [
        target(upstreams["blue"], "blue", 100 - green),
        target(upstreams["green"], "green", green),
    ]


def test_schedule_is_exact_and_spread() -> None:
    order = weighted_schedule([70, 30])

    assert len(order) == 10
    assert order.count(1) == 3
    assert 1 not in (order[i] for i in range(len(order) - 1) if order[i + 1] == 1)
    assert weighted_schedule([0, 0]) == ()
    assert weighted_schedule([100, 0]) == (0,)


def test_weights_give_exact_shares_and_slot_headers(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 30))
    seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
    with httpx.Client() as client:
        for _ in range(400):
            response = client.post(f"{url}/v2/models/demo/infer", json=infer_body("hi"))
            assert response.status_code == 200
            data = response.json()["outputs"][0]["data"][0]
            seen[
                (response.headers["x-bgserve-slot"], response.headers["x-bgserve-release"], data)
            ] += 1

    assert seen == {("blue", "1", "v1:HI"): 280, ("green", "2", "v2:HI"): 120}
    by_role = {(s["role"], s["release_id"]): s["requests"] for s in rt.stats()["slots"]}
    assert by_role == {("blue", 1): 280, ("green", 2): 120}


def test_health_ready_unknown_deployment_and_no_weight(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 0))
    rt.set_routes("idle", [target(upstreams["blue"], "blue", 0)])

    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/demo/ready").status_code == 200
    missing = httpx.post(f"{url}/v2/models/nope/infer", json=infer_body("x"))
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]
    assert httpx.get(f"{url}/v2/models/nope/ready").status_code == 404
    assert httpx.post(f"{url}/v2/models/idle/infer", json=infer_body("x")).status_code == 503
    assert httpx.get(f"{url}/v2/models/idle/ready").status_code == 503
    assert rt.stats()["unrouted"] == 2


def test_chunked_request_body_is_forwarded(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 100))
    body = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ch"]}]}'

    response = httpx.post(
        f"{url}/v2/models/demo/infer",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == ["v2:CH"]


def test_weight_changes_under_concurrent_load_fail_no_request(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 0))
    stop = threading.Event()
    failures: list[str] = []
    roles: collections.Counter[str] = collections.Counter()

    def client_loop() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{url}/v2/models/demo/infer", json=infer_body("x"))
                    roles[response.headers.get("x-bgserve-slot", "?")] += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop) for _ in range(4)]
        for step in range(60):
            rt.set_routes("demo", routes(upstreams, (step * 17) % 101))
            served = sum(roles.values())
            wait_until(lambda s=served: sum(roles.values()) >= s + 5, 20, "requests to flow")
        stop.set()
        for future in futures:
            future.result()

    assert failures == []
    assert roles["blue"] > 0
    assert roles["green"] > 0


def test_in_flight_request_finishes_on_its_slot(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 100))

    def green_requests() -> int:
        return sum(s["requests"] for s in rt.stats()["slots"] if s["role"] == "green")

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.post, f"{url}/v2/models/demo/infer", json=infer_body("slow:1.5"), timeout=30
        )
        wait_until(lambda: green_requests() == 1, 10, "the slow request to reach green")
        rt.set_routes("demo", routes(upstreams, 0))
        fast = httpx.post(f"{url}/v2/models/demo/infer", json=infer_body("fast"))
        finished = slow.result()

    assert fast.headers["x-bgserve-slot"] == "blue"
    assert finished.status_code == 200
    assert finished.headers["x-bgserve-slot"] == "green"
    assert finished.json()["outputs"][0]["data"] == ["v2:SLOW:1.5"]


def test_connect_failure_is_retried_on_the_other_slot(
    upstreams: dict[str, SlotProcess],
    bundles: dict[str, str],
    router: tuple[Router, str],
    tmp_path: Path,
) -> None:
    rt, url = router
    doomed = SlotProcess(bundles["v3"], "demo", 3, tmp_path / "doomed.log")
    try:
        doomed.wait_ready()
        rt.set_routes("demo", [target(doomed, "blue", 50), target(upstreams["green"], "green", 50)])
        with httpx.Client() as client:
            for _ in range(10):  # both upstreams now have pooled keep-alive connections
                assert (
                    client.post(f"{url}/v2/models/demo/infer", json=infer_body("a")).status_code
                    == 200
                )
            doomed.proc.send_signal(signal.SIGKILL)
            doomed.proc.wait(10)
            answers = [
                client.post(f"{url}/v2/models/demo/infer", json=infer_body("b")) for _ in range(40)
            ]
    finally:
        doomed.stop()

    assert [a.status_code for a in answers] == [200] * 40
    assert {a.headers["x-bgserve-slot"] for a in answers} == {"green"}
    blue = next(s for s in rt.stats()["slots"] if s["role"] == "blue")
    assert blue["retries"] == 20
