"""A real ``bgserve serve`` against slow-loris clients: connections that send a request line
and one header and stop are closed after the header timeout, more of them than the
connection bound cannot lock out ``/healthz`` or a deployer, and a huge head is refused."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import serving

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 64
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("loris")
    env = {
        "BGSERVE_BACKEND": "memory",
        "BGSERVE_CONTROL_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
        "BGSERVE_CONTROL_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with serving(home, mlflow_store, env) as url:
        yield url


def half_heads(url: str, n: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    opened = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HALF_HEAD)
        opened.append(s)
    return opened


def closed_by_server(s: socket.socket, wait_s: float) -> bool:
    s.settimeout(wait_s)
    try:
        return s.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_heads_are_closed_after_the_header_timeout(served: str) -> None:
    lorises = half_heads(served, 20)
    try:
        started = time.monotonic()
        assert not closed_by_server(lorises[0], HEADER_TIMEOUT_S / 3), "closed too early"
        assert all(closed_by_server(s, HEADER_TIMEOUT_S + 3) for s in lorises)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3
    finally:
        for s in lorises:
            s.close()


def test_a_slow_head_after_a_kept_alive_answer_is_closed_too(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        s.sendall(HALF_HEAD)
        assert closed_by_server(s, HEADER_TIMEOUT_S + 3)


def test_healthz_and_a_deployer_get_through_more_lorises_than_the_bound(served: str) -> None:
    lorises = half_heads(served, 3 * MAX_CONNECTIONS)
    try:
        for _ in range(5):
            assert httpx.get(f"{served}/healthz", timeout=5).status_code == 200
        created = httpx.post(f"{served}/releases", json={"name": "x"}, timeout=5)
        assert created.status_code == 422  # answered by the app, not reset
        alive = sum(not closed_by_server(s, 0.01) for s in lorises)
        assert alive <= MAX_CONNECTIONS
    finally:
        for s in lorises:
            s.close()


def test_a_request_head_over_the_limit_is_refused_with_431(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(40):
                s.sendall(b"x-filler: " + b"a" * 4000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
