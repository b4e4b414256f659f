"""A client connection of the router over time: its idle timeout, requests that arrive
while another is handled, an end of input in the middle, and answers written from the
data callback itself.

Each case runs a real Router in front of a real upstream over real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from bgserve.dataplane.client_conn import PENDING_LIMIT
from bgserve.dataplane.router import Router
from tests.support.http_harness import (
    ScriptedUpstream,
    assert_no_tracebacks,
    connect,
    parse_responses,
    read_to_close,
    running_router,
)

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
SLOW_S = 0.6


def infer(body: bytes = b"{}") -> bytes:
    return b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def slow_ok(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(SLOW_S)
    writer.write(OK)
    await writer.drain()


@pytest.fixture
def scripted(caplog: pytest.LogCaptureFixture) -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream([slow_ok, OK, OK, OK])
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
    assert_no_tracebacks(caplog)


@pytest.fixture
def router(scripted: ScriptedUpstream) -> Iterator[Router]:
    assert scripted.server is not None
    with running_router(scripted.server.port, idle_timeout=0.4) as started:
        yield started


def read_answers(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` complete answers arrived (the connection stays open)."""
    data = b""
    while len([a for a in parse_responses(data) if a.complete]) < count:
        chunk = sock.recv(65536)
        assert chunk, f"the router closed after {data!r}"
        data += chunk
    return data


def test_a_connection_idle_longer_than_the_idle_timeout_is_closed_without_an_answer(
    router: Router,
) -> None:
    started = time.monotonic()
    with connect(router) as sock:
        assert read_to_close(sock) == b""
    assert 0.3 <= time.monotonic() - started < 5


def test_a_request_trickling_in_is_cut_at_the_idle_timeout_counted_from_its_wait(
    router: Router, scripted: ScriptedUpstream
) -> None:
    request = infer()
    started = time.monotonic()
    closed_at = None
    with connect(router) as sock:
        try:
            for byte in request:  # one byte every 0.05 s: over 4 s for the whole request
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        else:
            pytest.fail("the router kept reading a request past its idle timeout")
        closed_at = time.monotonic() - started
    assert closed_at < 2.5
    assert scripted.seen == []


def test_an_answer_slower_than_the_idle_timeout_is_relayed_and_the_connection_goes_on(
    router: Router, scripted: ScriptedUpstream
) -> None:
    with connect(router) as sock:
        sock.sendall(infer())
        first = read_answers(sock, 1)
        sock.sendall(infer())
        both = first + read_answers(sock, 1)

    assert [a.status for a in parse_responses(both)] == [200, 200]
    assert len(scripted.seen) == 2


def test_requests_sent_while_one_is_handled_are_answered_in_order(
    router: Router, scripted: ScriptedUpstream
) -> None:
    big = b"x" * (3 * PENDING_LIMIT)  # held unparsed past the limit: reading pauses
    with connect(router) as sock:
        sock.sendall(infer(b"1"))
        time.sleep(SLOW_S / 3)  # the first request is at the upstream now
        sock.sendall(infer(big) + infer(b"3"))
        answers = parse_responses(read_answers(sock, 3))

    assert [a.body for a in answers] == [b"ok", b"ok", b"ok"]
    heads = [head for _, head in scripted.seen]
    assert len(heads) == 3
    assert len({number for number, _ in scripted.seen}) == 1  # one upstream connection


def test_a_bad_request_sent_while_one_is_handled_is_refused_after_its_answer(
    router: Router, scripted: ScriptedUpstream
) -> None:
    bad = b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    bad += b"Content-Length: 2\r\n\r\nab"
    with connect(router) as sock:
        sock.sendall(infer())
        time.sleep(SLOW_S / 3)
        sock.sendall(bad + infer())
        answers = parse_responses(read_to_close(sock))

    assert [a.status for a in answers] == [200, 400]
    assert len(scripted.seen) == 1


def test_a_client_ending_its_input_while_its_request_is_handled_gets_the_answer(
    router: Router, scripted: ScriptedUpstream
) -> None:
    with connect(router) as sock:
        sock.sendall(infer())
        sock.shutdown(socket.SHUT_WR)
        answers = parse_responses(read_to_close(sock))

    assert [a.status for a in answers] == [200]


def test_answers_the_router_writes_itself_keep_the_connection_for_the_next_request(
    router: Router, scripted: ScriptedUpstream
) -> None:
    # A 404 is written in the data callback that completed the request, with no wait.
    unknown = b"GET /v2/models/nowhere/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(router) as sock:
        sock.sendall(unknown)
        data = read_answers(sock, 1)
        sock.sendall(unknown)
        data += read_answers(sock, 1)
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        data += read_answers(sock, 1)

    assert [a.status for a in parse_responses(data)] == [404, 404, 200]
    assert scripted.seen == []
