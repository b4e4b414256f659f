"""The mirror copy leaves beside the live call: green works while blue does, and a pair is
kept only for a request blue answered with a 2xx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bgserve.backends.local.route_table import RouteTarget
from bgserve.backends.local.router import Router
from tests.helpers_models import infer_body, wait_until

Stub = tuple[int, list[float]]  # port, the monotonic times requests arrived


def _handler(label: str, status: int, delay: float, seen: list[float]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(time.monotonic())
            time.sleep(delay)
            output = {"name": "output", "datatype": "BYTES", "shape": [1], "data": [label]}
            body = json.dumps({"outputs": [output]}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def stubs() -> Iterator[Callable[[str, int, float], Stub]]:
    servers: list[ThreadingHTTPServer] = []

    def start(label: str, status: int, delay: float) -> Stub:
        seen: list[float] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(label, status, delay, seen))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1]), seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def router() -> Iterator[tuple[Router, str]]:
    router = Router()
    port = router.start("127.0.0.1", 0)
    try:
        yield router, f"http://127.0.0.1:{port}/v2/models/demo/infer"
    finally:
        router.stop()


def _mirror(rt: Router, blue: Stub, green: Stub) -> None:
    rt.set_routes(
        "demo",
        [
            RouteTarget("blue", 1, "127.0.0.1", blue[0], 100),
            RouteTarget("green", 2, "127.0.0.1", green[0], 0),
        ],
    )
    rt.set_shadow("demo", 100, max_queue=8)


def test_green_gets_the_copy_while_blue_still_works_on_the_request(
    stubs: Callable[[str, int, float], Stub], router: tuple[Router, str]
) -> None:
    rt, url = router
    blue, green = stubs("blue", 200, 0.3), stubs("green", 200, 0.0)
    _mirror(rt, blue, green)
    response = httpx.post(url, json=infer_body("hello"), timeout=10)
    answered = time.monotonic()

    assert response.status_code == 200 and response.headers["x-bgserve-slot"] == "blue"
    assert len(green[1]) == 1 and len(blue[1]) == 1
    assert green[1][0] < answered - 0.2, "green got its copy only after blue had answered"
    pairs: list[dict[str, object]] = []

    def paired() -> bool:
        pairs.extend(rt.shadow_pairs("demo")["pairs"])
        return bool(pairs)

    wait_until(paired, 10, "a pair")
    (pair,) = pairs
    assert '"blue"' in str(pair["blue_body"]) and '"green"' in str(pair["green_body"])
    assert float(pair["blue_ms"]) >= 300  # type: ignore[arg-type]
    assert pair["green_error"] is None


def test_a_request_blue_refuses_is_never_paired(
    stubs: Callable[[str, int, float], Stub], router: tuple[Router, str]
) -> None:
    rt, url = router
    blue, green = stubs("blue", 400, 0.1), stubs("green", 200, 0.0)
    _mirror(rt, blue, green)
    response = httpx.post(url, json=infer_body("hello"), timeout=10)

    assert response.status_code == 400
    wait_until(lambda: len(green[1]) == 1, 10, "green to get its copy")
    time.sleep(0.2)  # the copy's answer is in; a pair would be kept by now
    batch = rt.shadow_pairs("demo")
    assert (batch["pairs"], batch["dropped"], batch["green_errors"]) == ([], 0, 0)
