"""A slow client slows the slot down: the router stops reading an answer its client does
not take, instead of holding it, and passes every byte on, in order, once the client reads.

The answer's body is written to the client from the slot connection's data callback, so
the router must pause that connection itself when the client's buffer fills. A real
scripted slot, a real Router and a real socket whose reader sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.http_harness import (
    ScriptedUpstream,
    assert_no_tracebacks,
    connect,
    parse_responses,
    read_to_close,
    running_router,
)

INFER = b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
PIECE = 64 * 1024
PIECES = 512  # 32 MiB: more than every socket buffer between the slot and the client holds


def piece(number: int) -> bytes:
    """A piece whose bytes say which it is, so a lost or reordered piece shows."""
    return (b"%08d" % number) * (PIECE // 8)


@pytest.fixture
def upstream(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[ScriptedUpstream, list[int]]]:
    written: list[int] = []  # pieces the slot managed to hand to its socket

    async def big_answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for number in range(PIECES):
            writer.write(b"%x\r\n%s\r\n" % (PIECE, piece(number)))
            await writer.drain()
            written.append(number)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = ScriptedUpstream([big_answer, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine"])
    server.start()
    try:
        yield server, written
    finally:
        server.stop()
    gc.collect()
    assert_no_tracebacks(caplog)


@pytest.mark.parametrize("idle", [None, 0.5], ids=["no-idle-timeout", "idle-timeout-0.5s"])
def test_a_client_that_does_not_read_stops_the_slot_and_then_gets_every_byte(
    upstream: tuple[ScriptedUpstream, list[int]], idle: float | None
) -> None:
    # The slot is silent while the client does not read for longer than the idle
    # timeout: that silence is the client's, and must not cut the answer.
    server, written = upstream
    assert server.server is not None
    with running_router(server.server.port, stream_idle_timeout=idle) as router:
        sock = connect(router)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(INFER + INFER)
        sock.shutdown(socket.SHUT_WR)
        time.sleep(1.5)  # the client reads nothing meanwhile
        stalled_at = len(written)
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(read_to_close(sock)))
        reader.start()
        reader.join(60)
        sock.close()

    assert stalled_at < PIECES // 2, f"the router read {stalled_at} pieces nobody took"
    answers = parse_responses(received[0])
    assert [a.status for a in answers] == [200, 200]
    assert answers[0].body == b"".join(piece(n) for n in range(PIECES))
    assert answers[1].body == b"fine"
    assert server.connections == 1  # the paused connection was resumed and reused
