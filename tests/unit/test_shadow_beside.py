"""The mirror copy leaves beside the live call: green works while blue does, and a pair is
kept only for a request blue answered with a 2xx."""

from __future__ import annotations

import time

import httpx

from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import RouteTarget
from tests.support.models import infer_body, wait_until
from tests.support.stub_slot import StubSlot, stub_slot


def _mirror(rt: Router, blue: StubSlot, green: StubSlot) -> None:
    rt.set_routes(
        "demo",
        [
            RouteTarget("blue", 1, "127.0.0.1", blue.port, 100),
            RouteTarget("green", 2, "127.0.0.1", green.port, 0),
        ],
    )
    rt.set_shadow("demo", 100, max_queue=8)


def test_green_gets_the_copy_while_blue_still_works_on_the_request(
    demo_router: tuple[Router, str],
) -> None:
    rt, url = demo_router
    with stub_slot("blue", delay=0.3) as blue, stub_slot("green") as green:
        _mirror(rt, blue, green)
        response = httpx.post(url, json=infer_body("hello"), timeout=10)
        answered = time.monotonic()

    assert response.status_code == 200 and response.headers["x-bgserve-slot"] == "blue"
    assert len(green.arrivals) == 1 and len(blue.arrivals) == 1
    assert green.arrivals[0] < answered - 0.2, "green got its copy only after blue answered"
    pairs: list[dict[str, object]] = []

    def paired() -> bool:
        pairs.extend(rt.shadow_pairs("demo")["pairs"])
        return bool(pairs)

    wait_until(paired, 10, "a pair")
    (pair,) = pairs
    assert '"blue"' in str(pair["blue_body"]) and '"green"' in str(pair["green_body"])
    assert float(pair["blue_ms"]) >= 300  # type: ignore[arg-type]
    assert pair["green_error"] is None


def test_a_request_blue_refuses_is_never_paired(demo_router: tuple[Router, str]) -> None:
    rt, url = demo_router
    with stub_slot("blue", status=400, delay=0.1) as blue, stub_slot("green") as green:
        _mirror(rt, blue, green)
        response = httpx.post(url, json=infer_body("hello"), timeout=10)
        wait_until(lambda: len(green.arrivals) == 1, 10, "green to get its copy")
        time.sleep(0.2)  # the copy's answer is in; a pair would be kept by now
        batch = rt.shadow_pairs("demo")

    assert response.status_code == 400
    assert (batch["pairs"], batch["dropped"], batch["green_errors"]) == ([], 0, 0)
