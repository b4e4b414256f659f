"""Hung slots: first-byte timeouts, one retry, ejection, re-admission only after a probe.

A hung slot is modelled exactly as the kernel presents a SIGSTOPped one: its listening
socket completes connections from the backlog and nothing ever answers.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bgserve.backends.local.backend import LocalBackend
from bgserve.dataplane.router import Router, RouteTarget
from tests.support.flow import deploy, infer_body, ok
from tests.support.load import Load

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST_BYTE_S = 1.0
CONNECT_S = 0.5


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 10 ms until true; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = (
            b'{"outputs": [{"name": "output", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


def serve_on(sock: socket.socket | None = None) -> ThreadingHTTPServer:
    """A stub slot that answers everything 200, on ``sock`` if given (it may hold a backlog)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer, bind_and_activate=sock is None)
    if sock is not None:
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hung() -> Iterator[socket.socket]:
    """A listener nobody accepts on: connections complete, no byte ever comes back."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    try:
        yield sock
    finally:
        sock.close()


@dataclass
class Events:
    """The router's ejection and re-admission events, as the data-plane process sends them."""

    seen: list[tuple[str, tuple[str, int], str]] = field(default_factory=list)

    def __call__(self, kind: str, address: tuple[str, int], reason: str) -> None:
        self.seen.append((kind, address, reason))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.seen]


def start_router(events: Events) -> tuple[Router, str]:
    router = Router(
        breaker=True,
        connect_timeout=CONNECT_S,
        first_byte_timeout=FIRST_BYTE_S,
        outlier_failures=3,
        probe_interval=0.05,
        on_event=events,
    )
    port = router.start("127.0.0.1", 0)
    return router, f"http://127.0.0.1:{port}/v2/models/d/infer"


def timed_post(http: httpx.Client, url: str) -> tuple[int, str, float]:
    started = time.monotonic()
    response = http.post(url, json=infer_body("x"))
    return (
        response.status_code,
        response.headers.get("x-bgserve-slot", ""),
        (time.monotonic() - started),
    )


def test_hung_slot_is_retried_once_ejected_after_three_and_readmitted_by_a_probe(
    hung: socket.socket,
) -> None:
    up = serve_on()
    events = Events()
    router, url = start_router(events)
    hung_address: tuple[str, int] = hung.getsockname()
    revived = None
    try:
        router.set_routes(
            "d",
            [
                RouteTarget("green", 2, hung_address[0], hung_address[1], 50),
                RouteTarget("blue", 1, "127.0.0.1", up.server_address[1], 50),
            ],
        )
        with httpx.Client(timeout=30) as http:
            answers = [timed_post(http, url) for _ in range(12)]
            assert [status for status, _, _ in answers] == [200] * 12
            assert {slot for _, slot, _ in answers} == {"blue"}
            assert max(seconds for _, _, seconds in answers) < FIRST_BYTE_S + 0.5
            assert sum(seconds > FIRST_BYTE_S for _, _, seconds in answers) == 3
            green = next(s for s in router.stats()["slots"] if s["role"] == "green")
            assert (green["retries"], green["errors"]) == (3, 3)
            assert router.is_down(*hung_address) and events.kinds() == ["ejected"]
            assert "3 consecutive failures" in events.seen[0][2]
            time.sleep(0.5)  # probes keep failing: still out
            assert router.is_down(*hung_address) and events.kinds() == ["ejected"]

            revived = serve_on(hung)  # answers the backlog, probes included
            wait_for(lambda: not router.is_down(*hung_address), 10, "re-admission")
            assert events.kinds() == ["ejected", "readmitted"]
            slots = [timed_post(http, url)[1] for _ in range(10)]
        assert slots.count("green") == 5
    finally:
        router.stop()
        up.shutdown()
        if revived is not None:
            revived.shutdown()


def test_no_second_retry_a_request_gets_504_after_two_first_byte_timeouts(
    hung: socket.socket,
) -> None:
    other = socket.create_server(("127.0.0.1", 0), backlog=128)
    events = Events()
    router, url = start_router(events)
    try:
        router.set_routes(
            "d",
            [
                RouteTarget("green", 2, "127.0.0.1", hung.getsockname()[1], 50),
                RouteTarget("blue", 1, "127.0.0.1", other.getsockname()[1], 50),
            ],
        )
        with httpx.Client(timeout=30) as http:
            status, _, seconds = timed_post(http, url)
            response = http.post(url, json=infer_body("x"))
        assert status == 504
        assert 2 * FIRST_BYTE_S <= seconds < 2 * (FIRST_BYTE_S + CONNECT_S) + 0.5
        assert response.status_code == 504
        assert "did not start answering" in response.json()["error"]
    finally:
        router.stop()
        other.close()


# ----- the whole stack: SIGSTOP green at 50% under load -----


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """What this module's ``app`` (tests/conftest.py) changes."""
    return {
        "upstream_first_byte_timeout_seconds": FIRST_BYTE_S,
        "upstream_connect_timeout_seconds": CONNECT_S,
    }


def test_sigstopped_green_at_50_is_ejected_reverted_and_back_only_after_a_probe(
    app: TestClient, tmp_path: Path
) -> None:
    backend = app.app.state.components.backend  # type: ignore[attr-defined]
    ids: dict[str, int] = app.app.state.ids  # type: ignore[attr-defined]
    assert isinstance(backend, LocalBackend)
    url = deploy(app, "hung", ids["v1"], ids["reworded"])
    ok(app.post("/deployments/hung/promote", json={"weight": 50, "force": True}))
    green = ids["reworded"]
    pid = backend.slot_pid("hung", green)
    info = backend.slot_info("hung", green)
    assert pid is not None and info is not None
    address = ("127.0.0.1", int(info.endpoint.rsplit(":", 1)[1]))
    stopped = False
    try:
        with Load(url) as load:
            wait_for(lambda: load.answered_by("green") >= 10, 30, "green to take traffic")
            os.kill(pid, signal.SIGSTOP)
            stopped = True
            stopped_at = time.monotonic()
            wait_for(lambda: ok(app.get("/deployments/hung"))["phase"] == "reverted", 20, "revert")
            reverted_s = time.monotonic() - stopped_at
            wait_for(lambda: load.answered_by("blue") >= len(load.calls) // 2 + 20, 30, "traffic")
        slowest = max(call.seconds for call in load.calls)
        failed = [c for c in load.calls if c[2] != 200]
        print(
            f"\ngreen SIGSTOPped at 50%: reverted after {reverted_s:.1f} s, slowest request "
            f"{slowest:.2f} s, {len(failed)} failures of {len(load.calls)}"
        )
        assert slowest < FIRST_BYTE_S + 1.0  # one first-byte timeout, then a retry on blue
        assert failed == []
        revert = next(e for e in events(app, "hung") if e["action"] == "revert")
        assert revert["principal"] == "bgserve" and revert["details"] == {"slot_lost": green}
        assert backend.router.is_down(*address)

        time.sleep(1.5)  # still stopped: probes fail, it stays out
        assert backend.router.is_down(*address)
        info = backend.slot_info("hung", green)
        assert info is not None and not info.ready
        os.kill(pid, signal.SIGCONT)
        stopped = False
        wait_for(lambda: not backend.router.is_down(*address), 10, "the probe to re-admit green")
        wait_for(lambda: (i := backend.slot_info("hung", green)) and i.ready, 10, "green ready")
        assert backend.slot_pid("hung", green) == pid  # the same process, probed back
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)


def events(client: TestClient, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ok(client.get(f"/deployments/{name}/history"))
    return result
