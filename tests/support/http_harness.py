"""Real sockets around a real Router: recording and hostile upstreams, a raw client.

The upstreams run on their own asyncio loop in a thread; the recording one parses with
h11 (a different parser from the router's, so the two cross-check each other), the
scripted one answers each request with the exact bytes a test gives it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import h11
import pytest

from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import RouteTarget

DEPLOYMENT = "demo"
INFER = b"/v2/models/demo/infer"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
# An answer is raw bytes, or a coroutine given the writer (to delay, split or close).
Answer = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]


class ServerThread:
    """An asyncio TCP server on 127.0.0.1 in a thread of its own."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self._thread.start()
        assert self._ready.wait(10), "upstream server did not start"

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() cancelled a handler that was waiting on purpose: end it quietly
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._track, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(self._drain())
            self._loop.close()

    async def _drain(self) -> None:
        # The handlers swallow this cancellation: a task that ends cancelled makes
        # Python 3.11's stream callback log a CancelledError traceback.
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Seen:
    """One request as an upstream received it."""

    connection: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class RecordingUpstream(ServerThread):
    """A well-behaved HTTP/1.1 upstream (h11) that records requests and echoes them."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.connections = 0
        super().__init__(self._serve)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    seen = Seen(
                        number, request.method, request.target, request.headers.raw_items(), body
                    )
                    self.seen.append(seen)
                    writer.write(self._answer(conn, seen))
                    await writer.drain()
                    conn.start_next_cycle()
                else:
                    break
        finally:
            writer.close()

    @staticmethod
    def _answer(conn: h11.Connection, seen: Seen) -> bytes:
        payload = json.dumps({"target": seen.target.decode(), "body": seen.body.decode()}).encode()
        head = h11.Response(
            status_code=200,
            headers=[("content-type", "application/json"), ("content-length", str(len(payload)))],
        )
        return b"".join(
            conn.send(e) or b"" for e in (head, h11.Data(data=payload), h11.EndOfMessage())
        )


@dataclass
class ScriptedUpstream:
    """An upstream answering request N of its life with ``answers[N]`` verbatim."""

    answers: Sequence[Answer]
    seen: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0
    server: ServerThread | None = None

    def start(self) -> int:
        self.server = ServerThread(self._serve)
        return self.server.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                index = len(self.seen)
                self.seen.append((number, head.split(b"\r\n", 1)[0]))
                answer = self.answers[index]
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                else:
                    await answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@contextmanager
def running_router(port: int, **options: object) -> Iterator[Router]:
    """A Router routing deployment ``demo`` wholly to the upstream on ``port``."""
    router = Router(**options)  # type: ignore[arg-type]
    router.start("127.0.0.1", 0)
    router.set_routes(DEPLOYMENT, [RouteTarget("blue", 1, "127.0.0.1", port, 100)])
    try:
        yield router
    finally:
        router.stop()


@contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    """A :class:`RecordingUpstream`, stopped afterwards."""
    server = RecordingUpstream()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def checked_router(
    upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture, max_body_bytes: int
) -> Iterator[Router]:
    """A router in front of ``upstream`` (its record cleared) that must log no traceback."""
    upstream.seen.clear()
    with running_router(upstream.port, max_body_bytes=max_body_bytes) as started:
        yield started
    gc.collect()  # an exception nobody retrieved is only reported when its task is freed
    assert_no_tracebacks(caplog)


def connect(router: Router) -> socket.socket:
    assert router.port is not None
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the router sends until it closes; fails if it keeps the connection open."""
    chunks: list[bytes] = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except TimeoutError:
        message = f"the router kept the connection open after {b''.join(chunks)!r}"
        raise AssertionError(message) from None
    return b"".join(chunks)


def exchange(router: Router, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` on a fresh connection and return all the router answers until it closes."""
    with connect(router) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_to_close(sock)


@dataclass
class Answered:
    """One response the client received; ``complete`` once its whole body arrived."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes = b""
    complete: bool = False


def parse_responses(data: bytes, methods: Sequence[bytes] = ()) -> list[Answered]:
    """The responses in ``data`` (h11 as the client), 1xx included, until the data ends."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    answers: list[Answered] = []
    for method in methods or [b"POST"] * 64:
        request = h11.Request(method=method, target="/", headers=[("host", "x")])
        conn.send(request)
        conn.send(h11.EndOfMessage())
        try:
            _receive_one(conn, answers)
        except h11.RemoteProtocolError:
            return answers  # the data ended, cleanly between responses or not
        if conn.their_state is not h11.DONE:
            return answers
        conn.start_next_cycle()
    return answers


def _receive_one(conn: h11.Connection, answers: list[Answered]) -> None:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.InformationalResponse | h11.Response):
            answers.append(Answered(event.status_code, dict(event.headers.raw_items())))
        elif isinstance(event, h11.Data):
            answers[-1].body += event.data
        elif isinstance(event, h11.EndOfMessage):
            answers[-1].complete = True
            return
        else:
            return


def status_of(data: bytes) -> int:
    """The status of the first response in ``data``."""
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12])


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing logged at ERROR, and no record carrying a traceback, at any level."""
    bad = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR or record.exc_info or "Traceback" in record.getMessage()
    ]
    assert not bad, "\n".join(caplog.text.splitlines()[-40:])
