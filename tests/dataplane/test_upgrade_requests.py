"""Requests asking to switch protocols (``Upgrade: websocket`` or ``h2c``) at the router.

The data plane does not switch protocols: such a request is forwarded as plain HTTP,
without ``Upgrade`` and ``Connection``, with its whole body, and the client connection
goes on to its next request (what nginx does when not told to pass ``Upgrade`` on). The
exact bytes go over a real socket to a real Router in front of a real (h11) upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bgserve.dataplane.router import Router
from tests.support.http_harness import (
    RecordingUpstream,
    checked_router,
    connect,
    exchange,
    parse_responses,
    recording_upstream,
)

WEBSOCKET = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
H2C = (
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)
NEXT = b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"


def infer(head: bytes, body: bytes) -> bytes:
    return b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with recording_upstream() as server:
        yield server


@pytest.fixture
def router(upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture) -> Iterator[Router]:
    with checked_router(upstream, caplog, max_body_bytes=1024) as started:
        yield started


def names(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    return {name.lower() for name, _ in headers}


UPGRADES = {
    "websocket-content-length": infer(WEBSOCKET + b"Content-Length: 5\r\n", b"hello"),
    "h2c-content-length": infer(H2C + b"Content-Length: 5\r\n", b"hello"),
    "websocket-chunked": infer(
        WEBSOCKET + b"Transfer-Encoding: chunked\r\n", b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", UPGRADES.values(), ids=UPGRADES.keys())
def test_an_upgrade_request_is_forwarded_with_its_body_and_the_next_request_is_answered(
    router: Router, upstream: RecordingUpstream, request_bytes: bytes
) -> None:
    answers = parse_responses(exchange(router, request_bytes + NEXT, half_close=True))

    assert [(a.status, a.complete) for a in answers] == [(200, True), (200, True)]
    assert [s.body for s in upstream.seen] == [b"hello", b"xyz"]
    first = upstream.seen[0]
    assert dict(first.headers)[b"content-length"] == b"5"
    assert not names(first.headers) & {b"upgrade", b"connection", b"transfer-encoding"}
    assert b'"body": "hello"' in answers[0].body
    assert b'"body": "xyz"' in answers[1].body


def test_the_connection_stays_open_after_an_upgrade_request(
    router: Router, upstream: RecordingUpstream
) -> None:
    with connect(router) as sock:
        sock.sendall(UPGRADES["websocket-content-length"])
        first = sock.recv(65536)
        sock.sendall(NEXT)
        second = sock.recv(65536)

    assert first.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in first.lower()
    assert b'"body": "hello"' in first
    assert second.startswith(b"HTTP/1.1 200 ") and b'"body": "xyz"' in second


def test_a_body_split_across_reads_after_an_upgrade_head_is_read_whole(
    router: Router, upstream: RecordingUpstream
) -> None:
    head = infer(WEBSOCKET + b"Content-Length: 5\r\n", b"")
    with connect(router) as sock:
        sock.sendall(head + b"he")
        sock.sendall(b"llo" + NEXT[:20])
        sock.sendall(NEXT[20:])
        first = sock.recv(65536)
        while first.count(b"HTTP/1.1 200") < 2:
            first += sock.recv(65536)

    assert [s.body for s in upstream.seen] == [b"hello", b"xyz"]


def test_an_upgrade_request_without_a_body_keeps_the_connection_too(
    router: Router, upstream: RecordingUpstream
) -> None:
    ready = b"GET /v2/models/demo/ready HTTP/1.1\r\nHost: x\r\n" + WEBSOCKET + b"\r\n"

    answers = parse_responses(exchange(router, ready + NEXT, half_close=True))

    assert [a.status for a in answers] == [200, 200]
    assert [(s.method, s.body) for s in upstream.seen] == [(b"GET", b""), (b"POST", b"xyz")]


def test_an_upgrade_request_body_over_the_limit_is_refused(
    router: Router, upstream: RecordingUpstream
) -> None:
    huge = b"%x\r\n%s\r\n0\r\n\r\n" % (2000, b"a" * 2000)
    answers = parse_responses(
        exchange(router, infer(WEBSOCKET + b"Transfer-Encoding: chunked\r\n", huge) + NEXT)
    )

    assert [a.status for a in answers] == [413]
    assert upstream.seen == []
