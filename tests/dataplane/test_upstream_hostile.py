"""Hostile upstreams: a slot answering malformed, ambiguous or extra bytes never harms a client.

Each upstream is a real asyncio server answering with the exact bytes of the case; the
client talks to a real Router over a real socket. A bad answer is a 502 or a clean close,
never another client's response, and nothing is logged with a traceback.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from bgserve.dataplane.http1 import Request, UpstreamTimeout
from bgserve.dataplane.http1_relay import relay_response
from bgserve.dataplane.upstream import Pool
from tests.support.http_harness import (
    Answer,
    ScriptedUpstream,
    assert_no_tracebacks,
    connect,
    exchange,
    parse_responses,
    read_to_close,
    running_router,
    status_of,
)

INFER = (
    b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"  # keep-alive
)
FINE = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine"


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    gc.collect()  # an exception nobody retrieved is only reported when its task is freed
    assert_no_tracebacks(caplog)


@pytest.fixture
def scripted(no_tracebacks: None) -> Iterator[list[ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []
    yield started
    for upstream in started:
        upstream.stop()


def serve(started: list[ScriptedUpstream], answers: Sequence[Answer]) -> ScriptedUpstream:
    upstream = ScriptedUpstream(answers)
    upstream.start()
    started.append(upstream)
    return upstream


def port_of(upstream: ScriptedUpstream) -> int:
    assert upstream.server is not None
    return upstream.server.port


OK = b"HTTP/1.1 200 OK\r\n"
BAD_HEADS = {
    "content-length-letters": OK + b"content-length: abc\r\n\r\nhi",
    "content-length-negative": OK + b"content-length: -1\r\n\r\nhi",
    "content-length-overflow": OK + b"content-length: 99999999999999999999999\r\n\r\n",
    "content-lengths-conflicting": OK + b"content-length: 2\r\ncontent-length: 4\r\n\r\nhihi",
    "content-lengths-duplicate": OK + b"content-length: 2\r\ncontent-length: 2\r\n\r\nhi",
    "content-length-and-chunked": (
        OK + b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    ),
    "gzip-transfer-encoding": OK + b"transfer-encoding: gzip\r\n\r\nhi",
    "status-line-garbage": b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nhi",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\ncontent-length: 2\n\nhi",
    "nul-in-header": OK + b"x-a: a\x00b\r\ncontent-length: 2\r\n\r\nhi",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    "head-too-large": OK + b"x-big: " + b"a" * 70_000 + b"\r\ncontent-length: 0\r\n\r\n",
}


@pytest.mark.parametrize("answer", BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_a_malformed_response_head_is_a_502_and_the_connection_is_dropped(
    scripted: list[ScriptedUpstream], answer: bytes
) -> None:
    upstream = serve(scripted, [answer, FINE])
    with running_router(port_of(upstream)) as router:
        bad = exchange(router, INFER)
        after = exchange(router, INFER, half_close=True)

    assert status_of(bad) == 502
    assert b'"error": "blue slot: ' in bad
    assert parse_responses(after)[0].body == b"fine"
    assert upstream.connections == 2  # the connection that answered garbage was not reused


def test_an_extra_response_after_the_body_never_reaches_the_next_client(
    scripted: list[ScriptedUpstream],
) -> None:
    evil = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil"
    upstream = serve(scripted, [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + evil, FINE])
    with running_router(port_of(upstream)) as router:
        first = parse_responses(exchange(router, INFER, half_close=True))
        second = parse_responses(exchange(router, INFER, half_close=True))

    assert [(a.status, a.body) for a in first] == [(200, b"ok")]
    assert [(a.status, a.body) for a in second] == [(200, b"fine")]
    assert upstream.connections == 2


def test_an_extra_response_arriving_after_the_answer_is_not_read_as_the_next_one(
    scripted: list[ScriptedUpstream],
) -> None:
    sent = threading.Event()

    async def answer_then_more(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # lands while the connection sits idle in the pool
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil")
        await writer.drain()
        sent.set()

    upstream = serve(scripted, [answer_then_more, FINE])
    with running_router(port_of(upstream)) as router, connect(router) as sock:
        sock.sendall(INFER)
        first = sock.recv(65536)
        assert sent.wait(10)
        sock.sendall(INFER)
        sock.shutdown(socket.SHUT_WR)
        rest = read_to_close(sock)

    assert first.endswith(b"\r\n\r\nok")
    assert [(a.status, a.body) for a in parse_responses(rest)] == [(200, b"fine")]
    assert upstream.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX",
    ],
    ids=["body-cut", "bad-chunk-size", "chunk-without-crlf"],
)
def test_a_response_broken_after_its_head_closes_the_client_connection(
    scripted: list[ScriptedUpstream], answer: bytes
) -> None:
    async def answer_and_close(writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    upstream = serve(scripted, [answer_and_close, FINE])
    with running_router(port_of(upstream)) as router:
        cut = parse_responses(exchange(router, INFER))
        after = parse_responses(exchange(router, INFER, half_close=True))

    assert [(a.status, a.complete) for a in cut] in ([(200, False)], [(502, True)])
    assert [(a.status, a.body) for a in after] == [(200, b"fine")]


def test_closing_before_answering_is_a_502(scripted: list[ScriptedUpstream]) -> None:
    async def close(writer: asyncio.StreamWriter) -> None:
        writer.close()

    upstream = serve(scripted, [close, FINE])
    with running_router(port_of(upstream)) as router:
        answer = exchange(router, INFER)

    assert status_of(answer) == 502
    assert b"closed before a response" in answer


def test_a_body_delimited_by_close_is_relayed_and_both_connections_close(
    scripted: list[ScriptedUpstream],
) -> None:
    async def until_close(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    upstream = serve(scripted, [until_close, FINE])
    with running_router(port_of(upstream)) as router:
        answer = exchange(router, INFER + INFER)  # the second request is never answered
        after = parse_responses(exchange(router, INFER, half_close=True))

    assert answer.endswith(b"connection: close\r\n\r\nall of it")
    assert [(a.status, a.body) for a in after] == [(200, b"fine")]


def test_interim_responses_and_chunked_bodies_are_relayed(
    scripted: list[ScriptedUpstream],
) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
        b"x-kept: yes\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: t\r\n\r\n"
    )
    upstream = serve(scripted, [chunked, chunked, FINE])
    http10 = INFER.replace(b"HTTP/1.1", b"HTTP/1.0")
    with running_router(port_of(upstream)) as router:
        answers = parse_responses(exchange(router, INFER, half_close=True))
        old = exchange(router, http10)
        after = parse_responses(exchange(router, INFER, half_close=True))

    assert [(a.status, a.body, a.headers[b"x-kept"]) for a in answers] == [(200, b"abcde", b"yes")]
    assert answers[0].headers[b"transfer-encoding"] == b"chunked"
    assert b"transfer-encoding" not in old and old.endswith(b"\r\n\r\nabcde")
    assert [a.body for a in after] == [b"fine"]
    assert upstream.connections == 1  # complete chunked answers leave it reusable


def test_a_client_resetting_mid_answer_costs_no_traceback_and_no_reuse(
    scripted: list[ScriptedUpstream],
) -> None:
    half_sent = threading.Event()

    async def slow_body(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n" + b"a" * 100_000)
        await writer.drain()
        half_sent.set()
        for _ in range(19):
            await asyncio.sleep(0.01)
            writer.write(b"a" * 100_000)
            await writer.drain()

    upstream = serve(scripted, [slow_body, FINE])
    with running_router(port_of(upstream)) as router:
        sock = connect(router)
        sock.sendall(INFER)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert half_sent.wait(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # an RST, not a FIN
        after = parse_responses(exchange(router, INFER, half_close=True))

    assert [(a.status, a.body) for a in after] == [(200, b"fine")]
    assert upstream.connections == 2


def test_a_second_malformed_answer_on_a_kept_connection_is_a_502(
    scripted: list[ScriptedUpstream],
) -> None:
    upstream = serve(scripted, [FINE, b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n", FINE])
    with running_router(port_of(upstream)) as router, connect(router) as sock:
        sock.sendall(INFER)
        first = sock.recv(65536)
        sock.sendall(INFER)
        second = read_to_close(sock)

    assert first.endswith(b"fine")
    assert status_of(second) == 502


def test_router_answers_504_when_the_head_is_late(scripted: list[ScriptedUpstream]) -> None:
    async def never(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    upstream = serve(scripted, [never, FINE])
    with running_router(port_of(upstream), first_byte_timeout=0.2) as router:
        answer = exchange(router, INFER)

    assert status_of(answer) == 504
    assert b"did not start answering within 0.2s" in answer


def test_with_no_head_limit_the_whole_answer_limit_cuts_a_slot_that_never_answers(
    scripted: list[ScriptedUpstream],
) -> None:
    async def never(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    upstream = serve(scripted, [never])
    options = {"first_byte_timeout": None, "upstream_timeout": 0.3}
    with running_router(port_of(upstream), **options) as router:
        started = time.monotonic()
        answer = exchange(router, INFER)

    assert status_of(answer) == 504
    assert b"did not answer within 0.3s" in answer
    assert time.monotonic() - started < 5


def test_the_whole_answer_limit_cuts_a_body_that_goes_on_too_long(
    scripted: list[ScriptedUpstream],
) -> None:
    async def stalls(writer: asyncio.StreamWriter) -> None:
        writer.write(OK + b"content-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(30)

    upstream = serve(scripted, [stalls])
    with running_router(port_of(upstream), upstream_timeout=0.3) as router:
        started = time.monotonic()
        answer = exchange(router, INFER)

    assert status_of(answer) == 200 and b"\r\n\r\nabc" in answer
    assert 0.25 < time.monotonic() - started < 5  # cut, the connection closed


def test_relay_response_raises_upstream_timeout(scripted: list[ScriptedUpstream]) -> None:
    async def never(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    upstream = serve(scripted, [never])
    head = b"POST /v2/models/demo/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n"
    request = Request(b"POST", b"/v2/models/demo/infer", head, b"{}", True, False)

    async def attempt() -> UpstreamTimeout:
        pool = Pool("127.0.0.1", port_of(upstream))
        conn = await pool.acquire(5)
        ours, theirs = socket.socketpair()
        _, client = await asyncio.open_connection(sock=ours)
        try:
            with pytest.raises(UpstreamTimeout) as raised:
                await relay_response(request, conn, client, b"", head_timeout=0.1)
            return raised.value
        finally:
            conn.close()
            client.close()
            theirs.close()
            pool.close()

    error = asyncio.run(attempt())

    assert (error.status, error.timeout, error.response_started) == (504, 0.1, False)
    assert error.message == "did not start answering within 0.1s"


def test_a_slot_cannot_forge_or_double_the_routers_release_headers(
    scripted: list[ScriptedUpstream],
) -> None:
    # A slot names its release itself (for gateways); behind bgserve's router the router's
    # own naming is the one the client sees, once.
    forged = b"x-bgserve-release: 999\r\nX-Bgserve-Slot: green\r\nx-kept: 1\r\n"
    upstream = serve(scripted, [OK + forged + b"content-length: 2\r\n\r\nok"])
    with running_router(port_of(upstream)) as router:
        raw = exchange(router, INFER, half_close=True)

    head = raw.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n"
    assert head.count(b"x-bgserve-release:") == 1 and b"x-bgserve-release: 1\r\n" in head
    assert head.count(b"x-bgserve-slot:") == 1 and b"x-bgserve-slot: blue\r\n" in head
    assert b"x-kept: 1" in head
