"""Request framing at the router: the bytes nginx refuses are refused, nothing ambiguous passes.

Each case sends exact bytes over a real socket to a real Router in front of a real
(recording) upstream, and checks the answer, that the connection is closed, that the
upstream never saw the request, and that nothing was logged with a traceback.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator

import pytest

from bgserve.dataplane.router import Router
from tests.support.http_harness import (
    RecordingUpstream,
    checked_router,
    connect,
    exchange,
    parse_responses,
    read_to_close,
    recording_upstream,
    status_of,
)
from tests.support.models import wait_until

LIMIT = 1024
SMUGGLED = b"GET /v2/models/demo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with recording_upstream() as server:
        yield server


@pytest.fixture
def router(upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture) -> Iterator[Router]:
    with checked_router(upstream, caplog, max_body_bytes=LIMIT) as started:
        yield started


def post(head: bytes, body: bytes = b"") -> bytes:
    return b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body


REFUSED = {
    "two-content-lengths": post(
        b"Content-Length: 5\r\nContent-Length: %d\r\n" % (5 + len(SMUGGLED)), b"hello" + SMUGGLED
    ),
    "same-content-length-twice": post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "content-length-list": post(b"Content-Length: 5, 5\r\n", b"hello"),
    "content-length-then-chunked": post(
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "chunked-then-content-length": post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "chunk-size-0x": post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-underscore": post(b"Transfer-Encoding: chunked\r\n", b"5_0\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-plus": post(b"Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-negative": post(
        b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n-2\r\nxx\r\n0\r\n\r\n"
    ),
    "chunk-data-without-crlf": post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"),
    "no-host": b"POST /v2/models/demo/infer HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "two-hosts": post(b"Host: y\r\nContent-Length: 0\r\n"),
    "bare-lf-in-header-value": post(b"X-A: one\ntwo\r\nContent-Length: 0\r\n"),
    "bare-cr-in-header-value": post(b"X-A: one\rtwo\r\nContent-Length: 0\r\n"),
    "nul-in-header-value": post(b"X-A: one\x00two\r\nContent-Length: 0\r\n"),
    "bare-lf-line-ends": b"POST /v2/models/demo/infer HTTP/1.1\nHost: x\nContent-Length: 0\n\n",
    "lf-in-target": b"GET /v2/models/demo/re\nady HTTP/1.1\r\nHost: x\r\n\r\n",
    "cr-in-target": b"GET /v2/models/demo/re\rady HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /v2/models/demo/re\x00ady HTTP/1.1\r\nHost: x\r\n\r\n",
    "folded-header": post(b"X-A: one\r\n two\r\nContent-Length: 0\r\n"),
    "space-before-colon": post(b"X-A : one\r\nContent-Length: 0\r\n"),
    "content-length-letters": post(b"Content-Length: 5a\r\n", b"hello"),
}


@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_ambiguous_or_malformed_requests_get_400_and_close(
    router: Router, upstream: RecordingUpstream, data: bytes
) -> None:
    answer = exchange(router, data)

    assert status_of(answer) == 400
    assert b"connection: close" in answer
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (post(b"Content-Length: %d\r\n" % (LIMIT + 1)), 413),
        (
            post(b"Transfer-Encoding: chunked\r\n", b"401\r\n%s\r\n" % (b"a" * (LIMIT + 1))),
            413,
        ),
        (post(b"Transfer-Encoding: chunked\r\n", b"200\r\n%s\r\n" % (b"a" * 512) * 3), 413),
        (b"GET /v2/models/demo/ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 66000, 431),
        (
            b"GET /v2/models/demo/ready HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * 66000
            + b"\r\n\r\n",
            431,
        ),
        (post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
        (b"GET /v2/models/demo/ready HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
    ids=[
        "declared-body",
        "one-big-chunk",
        "chunks-adding-up",
        "head-unfinished",
        "head-finished",
        "gzip",
        "http2",
        "connect",
    ],
)
def test_limits_and_unsupported_framing(
    router: Router, upstream: RecordingUpstream, data: bytes, status: int
) -> None:
    answer = exchange(router, data)

    assert status_of(answer) == status
    assert upstream.seen == []


def test_complete_requests_before_a_bad_one_are_answered_then_the_connection_closes(
    router: Router, upstream: RecordingUpstream
) -> None:
    good = post(b"Content-Length: 2\r\n", b"ok")
    bad = post(b"Content-Length: 2\r\nContent-Length: 3\r\n", b"ok!")

    answers = parse_responses(exchange(router, good + bad + good))

    assert [a.status for a in answers] == [200, 400]
    assert [s.body for s in upstream.seen] == [b"ok"]


def test_keep_alive_chunked_and_pipelined_requests_are_forwarded_with_a_clean_head(
    router: Router, upstream: RecordingUpstream
) -> None:
    chunked = post(
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nTE: trailers\r\nX-Pad: a  \r\n",
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    plain = post(b"Content-Length: 3\r\nKeep-Alive: timeout=5\r\n", b"xyz")

    answers = parse_responses(exchange(router, chunked + plain, half_close=True))

    assert [a.status for a in answers] == [200, 200]
    assert [s.body for s in upstream.seen] == [b"abcde", b"xyz"]
    assert len({s.connection for s in upstream.seen}) == 1  # the upstream connection was reused
    names = [[n.lower() for n, _ in s.headers] for s in upstream.seen]
    assert names == [[b"host", b"x-pad", b"content-length"], [b"host", b"content-length"]]
    assert upstream.seen[0].headers[1:] == [(b"X-Pad", b"a"), (b"content-length", b"5")]


def test_http10_keep_alive_and_close(router: Router, upstream: RecordingUpstream) -> None:
    kept = b"GET /v2/models/demo/ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    closing = b"GET /v2/models/demo/ready HTTP/1.0\r\n\r\n"

    with connect(router) as sock:
        sock.sendall(kept)
        first = sock.recv(65536)
        sock.sendall(closing)
        rest = read_to_close(sock)

    assert status_of(first) == 200 and b"connection: keep-alive" in first
    assert status_of(rest) == 200 and b"connection: close" in rest
    assert len(upstream.seen) == 2


def test_expect_100_continue_is_answered_before_the_body(
    router: Router, upstream: RecordingUpstream
) -> None:
    with connect(router) as sock:
        sock.sendall(post(b"Content-Length: 5\r\nExpect: 100-continue\r\n"))
        interim = sock.recv(65536)
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        final = parse_responses(read_to_close(sock))

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert [a.status for a in final] == [200]
    assert [s.body for s in upstream.seen] == [b"hello"]
    assert all(n.lower() != b"expect" for n, _ in upstream.seen[0].headers)


def test_a_request_cut_short_is_a_400_and_nothing_is_forwarded(
    router: Router, upstream: RecordingUpstream
) -> None:
    answer = exchange(router, post(b"Content-Length: 10\r\n", b"short"), half_close=True)

    assert status_of(answer) == 400
    assert upstream.seen == []


def test_an_idle_client_closing_gets_no_answer(router: Router) -> None:
    assert exchange(router, b"", half_close=True) == b""


def test_closed_connections_leave_no_parser_behind(router: Router) -> None:
    from bgserve.dataplane.client_conn import ClientConnection
    from bgserve.dataplane.http1 import RequestReader

    for _ in range(20):
        exchange(router, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    def forgotten() -> bool:
        gc.collect()
        kinds = (ClientConnection, RequestReader)
        return not router._clients and not any(isinstance(o, kinds) for o in gc.get_objects())

    wait_until(forgotten, 10, "the router to drop the parsers of closed connections")
