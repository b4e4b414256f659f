"""Relaying one upstream response to the client, parsed by llhttp (through ``httptools``).

The response head is rewritten (hop-by-hop headers dropped, the router's headers added)
and the body is sent with framing the client can rely on: the slot's content-length,
re-chunked for HTTP/1.1 clients, or until close. An upstream connection is reusable only
after a complete, unambiguous response with nothing after it.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

import httptools

from bgserve.dataplane.eager import to_task
from bgserve.dataplane.http1 import Request
from bgserve.dataplane.http1_errors import (
    HEAD_LIMIT,
    READ_SIZE,
    ProxyError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from bgserve.dataplane.stream_meter import StreamMeter

# Hop-by-hop headers, and the slot's own naming of its release: the router writes the
# naming headers itself (``extra``), so a slot can neither double nor forge them.
_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-bgserve-release",
        b"x-bgserve-slot",
    }
)
_OWS = b" \t"
# How long a slot's model kept the request waiting before it began (bgserve.slot.openai_api).
_QUEUE_HEADER = b"x-bgserve-queue-ms"
_MAX_QUEUE_MS = 3_600_000.0


class ResponseReader:
    """The responses of one upstream connection, parsed by one llhttp parser.

    :meth:`start` before each response; the parser carries over to the next response
    only when the previous one ended cleanly (the pool drops the connection otherwise).
    """

    __slots__ = (
        "_interim",
        "_parser",
        "body",
        "chunked",
        "done",
        "extra",
        "head_bytes",
        "head_done",
        "head_size",
        "headers",
        "keep",
        "length",
        "queue_ms",
        "reason",
        "status",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.start()

    def start(self) -> None:
        """Forget the previous response."""
        self._reset_head()
        self.done = self.extra = self._interim = False
        self.head_bytes = self.head_size = 0
        self.body: list[bytes] = []

    def _reset_head(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[bytes] = []
        self.length: int | None = None
        self.chunked = self.keep = self.head_done = False
        self.queue_ms = 0.0

    def feed(self, data: bytes) -> None:
        """Parse ``data``. Raises ProxyError(502) for a malformed or oversized response."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.done:
                raise ProxyError(
                    502, "malformed response: 101 to a request without upgrade"
                ) from None
            self.extra = True
        except httptools.HttpParserError as exc:
            if self.done:
                self.extra = True  # garbage after the response: it is complete, close after it
                return
            cause = exc.__context__
            if isinstance(cause, ProxyError):
                raise cause from None
            raise ProxyError(502, f"malformed response: {exc}") from None
        # llhttp buffers a header until its end: bound what an unfinished head may hold.
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > HEAD_LIMIT:
                raise ProxyError(502, f"response head exceeds {HEAD_LIMIT} bytes")

    def take_body(self) -> list[bytes]:
        """The body bytes parsed since the last call."""
        body, self.body = self.body, []
        return body

    # ----- llhttp callbacks -----

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True  # a second response nobody asked for: never relayed
        else:
            self._reset_head()

    def on_status(self, status: bytes) -> None:
        if not self.done:
            self.reason += status
            self.head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done or self.head_done:
            return  # trailers, or a response nobody asked for
        self.head_size += len(name) + len(value) + 4
        key = name.lower()
        value = value.rstrip(_OWS)
        if key == b"content-length":
            self.length = int(value)  # llhttp has checked the digits and duplicates
        elif key == b"transfer-encoding":
            if value.lower() != b"chunked":
                message = f"unsupported transfer-encoding {value.decode(errors='replace')!r}"
                raise ProxyError(502, f"malformed response: {message}")
            self.chunked = True
        elif key not in _DROPPED:
            if key == _QUEUE_HEADER:
                self.queue_ms = _queue_ms(value)
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        if self.head_size > HEAD_LIMIT:
            raise ProxyError(502, f"response head exceeds {HEAD_LIMIT} bytes")
        self.status = self._parser.get_status_code()
        if self.status < 200:
            self._interim = True  # 1xx: the real answer follows
            return
        self.head_done = True
        self.keep = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self.done = True


def _queue_ms(value: bytes) -> float:
    """A slot's queue wait in milliseconds; 0 for anything but a plain, sane number (an
    upstream's header is never trusted further than that)."""
    try:
        waited = float(value)
    except ValueError:
        return 0.0
    return waited if math.isfinite(waited) and 0.0 <= waited <= _MAX_QUEUE_MS else 0.0


class SinkHolder(Protocol):
    """The protocol of an upstream connection that can hand its bytes to a :class:`Sink`."""

    sink: Sink | None


class UpstreamConn(Protocol):
    """An upstream connection (:class:`bgserve.dataplane.upstream.Conn`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    response: ResponseReader | None

    @property
    def protocol(self) -> SinkHolder | None: ...


class ClientWriter(Protocol):
    """Where an answer goes: the client's stream writer, or a wrapper of it."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


# Bytes a slow client may leave in its write buffer before the slot's connection stops
# being read (asyncio's own high-water mark).
_CLIENT_BUFFER = 64 * 1024
_WAKE_HEAD, _WAKE_DRAIN, _WAKE_END = 1, 2, 3


class Sink:
    """One response's bytes as the slot's connection delivers them (its protocol calls
    :meth:`data` and :meth:`lost` on the loop).

    Until the client's head is written, the bytes are only parsed, and the relaying task
    is woken (or made: :func:`~bgserve.dataplane.eager.start`) once the head is complete
    or the head's time limit passed (:meth:`await_head`, the one timer set while the
    slot reads the request). From then on (``relaying``), every body piece is
    written to the client transport from the data callback itself, then shown to the
    meter; the task is woken only at the end, on a failure, or to wait for a slow client
    to drain (the slot's connection is not read meanwhile).
    """

    __slots__ = (
        "_head_timer",
        "_upstream",
        "_waiter",
        "failure",
        "idle",
        "last",
        "loop",
        "meter",
        "paused",
        "rechunk",
        "relaying",
        "response",
        "transport",
        "until_eof",
        "wake",
    )

    def __init__(
        self,
        response: ResponseReader,
        upstream: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.response = response
        self._upstream = upstream
        self.loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.wake = 0
        self.relaying = self.rechunk = self.until_eof = self.paused = False
        self.transport: asyncio.WriteTransport | None = None
        self.meter: StreamMeter | None = None
        self.last = 0.0
        self.idle: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def await_head(self, head_timeout: float | None, deadline: float | None) -> None:
        """Fail with UpstreamTimeout if the head is not in within ``head_timeout`` seconds,
        or with TimeoutError at ``deadline`` (loop time) if that comes first (None: no
        limit). One timer, and nothing else to set up while the slot reads the request."""
        loop = self.loop
        head_due = None if head_timeout is None else loop.time() + head_timeout
        if head_due is not None and (deadline is None or head_due <= deadline):
            self._head_timer = loop.call_at(head_due, self._head_overdue, head_timeout)
        elif deadline is not None:
            self._head_timer = loop.call_at(deadline, self._head_overdue, None)

    def _head_overdue(self, head_timeout: float | None) -> None:
        self._head_timer = None
        if self.failure is None and not self.response.head_done:
            self.fail(TimeoutError() if head_timeout is None else UpstreamTimeout(head_timeout))

    def stop_timers(self) -> None:
        """Cancel the head and idle timers (the relay ended)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None

    async def wait(self) -> int:
        """The next event: ``_WAKE_HEAD``, ``_WAKE_DRAIN`` or ``_WAKE_END``. Raises the
        failure that ended the response."""
        if not self.wake and self.failure is None:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.failure is not None:
            raise self.failure
        wake, self.wake = self.wake, 0
        return wake

    def _notify(self, wake: int) -> None:
        self.wake = wake
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """End the response with ``exc`` (the first failure wins)."""
        if self.failure is None:
            self.failure = exc
            self._notify(0)

    def data(self, data: bytes) -> None:
        """Bytes from the slot."""
        if self.failure is not None:
            return  # the connection is closed after this response anyway
        response = self.response
        complete = response.done
        try:
            response.feed(data)  # bytes after a complete response only mark it ``extra``
        except ProxyError as exc:
            exc.response_started = self.relaying
            self.fail(exc)
            return
        if complete:
            return
        if not self.relaying:
            if response.head_done:
                if self._head_timer is not None:
                    self._head_timer.cancel()
                    self._head_timer = None
                self._notify(_WAKE_HEAD)
            return
        self.last = self.loop.time()
        pieces = response.take_body()
        if pieces or response.done:
            self.send(pieces)

    def send(self, pieces: list[bytes], head: bytes = b"") -> None:
        """Write ``head`` and ``pieces`` to the client in one write, then show them to
        the meter."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            self.fail(ConnectionResetError("the client went away"))
            return
        done = self.response.done
        if self.rechunk:
            out = head + b"".join([b"%x\r\n%s\r\n" % (len(p), p) for p in pieces])
            if done:
                out += b"0\r\n\r\n"
        elif head or len(pieces) != 1:
            out = head + b"".join(pieces)
        else:
            out = pieces[0]
        transport.write(out)
        if self.meter is not None:
            self.meter.feed(pieces)  # after the write: measuring never delays a chunk
        if done:
            self._notify(_WAKE_END)
        elif transport.get_write_buffer_size() > _CLIENT_BUFFER:
            self._upstream.pause_reading()
            self.paused = True
            self._notify(_WAKE_DRAIN)

    def resume_upstream(self) -> None:
        """Read the slot's connection again after a slow client drained."""
        self._upstream.resume_reading()

    def lost(self, exc: BaseException | None) -> None:
        """The slot closed the connection (EOF when ``exc`` is None) or it broke."""
        if self.failure is not None or self.wake == _WAKE_END:
            return
        if not self.relaying:
            if exc is None:
                self.fail(ProxyError(502, "the connection closed before a response"))
            else:
                message = f"connection lost before a response ({exc!r})"
                self.fail(ProxyError(502, message))
        elif exc is None and self.until_eof:
            self._notify(_WAKE_END)
        elif exc is None:
            self.fail(ProxyError(502, "response body cut by the slot", response_started=True))
        else:
            self.fail(ProxyError(502, f"response body cut ({exc!r})", response_started=True))


async def _read_head(response: ResponseReader, reader: asyncio.StreamReader) -> None:
    while not response.head_done:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ProxyError(502, "the connection closed before a response")
        response.feed(data)


async def _await_head(
    response: ResponseReader, reader: asyncio.StreamReader, head_timeout: float | None
) -> None:
    scope = asyncio.timeout(head_timeout)
    try:
        async with scope:
            await _read_head(response, reader)
    except TimeoutError as exc:
        if scope.expired() and head_timeout is not None:
            raise UpstreamTimeout(head_timeout) from None
        raise ProxyError(502, f"connection lost before a response ({exc!r})") from exc
    except OSError as exc:
        raise ProxyError(502, f"connection lost before a response ({exc!r})") from exc


def _framing(request: Request, response: ResponseReader, bodiless: bool) -> tuple[bytes, bool]:
    """The framing header for the client and whether the body is re-chunked."""
    if response.length is not None and response.status != 204:
        return b"content-length: %d\r\n" % response.length, False
    if response.chunked and not bodiless and not request.http10:
        return b"transfer-encoding: chunked\r\n", True
    return b"", False


def _client_head(
    request: Request, response: ResponseReader, framing: bytes, extra: bytes, keep: bool
) -> bytes:
    if not keep:
        extra += b"connection: close\r\n"
    elif request.http10:
        extra += b"connection: keep-alive\r\n"
    status_line = b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason)
    return status_line + b"".join(response.headers) + framing + extra + b"\r\n"


async def relay_response(
    request: Request,
    conn: UpstreamConn,
    writer: asyncio.StreamWriter,
    extra: bytes,
    *,
    head_timeout: float | None = None,
    idle_timeout: float | None = None,
    meter: StreamMeter | None = None,
    timeout: float | None = None,
) -> tuple[int, bool, bool]:
    """Send ``request`` upstream and pass the answer to the client with ``extra`` headers.

    Each piece of the body is written to the client as soon as it arrives, then shown to
    ``meter`` (if any). Returns (status, keep the client connection, reuse the upstream
    connection). Raises UpstreamTimeout (a ProxyError) when the response head does not
    arrive within ``head_timeout`` seconds, ProxyError (504, ``response_started``) when the
    body pauses longer than ``idle_timeout`` seconds, ProxyError if the upstream fails or
    answers something malformed; the upstream connection must then be closed. Raises
    TimeoutError when the whole answer takes longer than ``timeout`` seconds (counted once
    the request is sent).
    """
    protocol = conn.protocol
    transport = getattr(writer, "transport", None)
    if protocol is not None and transport is not None:
        upstream = cast(asyncio.Transport, conn.writer.transport)
        upstream.write(request.upstream_head + request.body)
        # What the slot answers goes to the sink from now on (it may be read before the
        # task that relays it runs).
        sink = Sink(_fresh_response(conn), upstream, asyncio.get_running_loop())
        protocol.sink = sink
        try:
            return await _relay_direct(
                request, sink, writer, transport, extra, head_timeout, idle_timeout, meter, timeout
            )
        finally:
            protocol.sink = None
            sink.stop_timers()
    conn.writer.write(request.upstream_head + request.body)
    await to_task()  # the timeout below needs a task
    async with asyncio.timeout(timeout):
        return await _relay_streams(request, conn, writer, extra, head_timeout, idle_timeout, meter)


async def _relay_streams(
    request: Request,
    conn: UpstreamConn,
    writer: asyncio.StreamWriter,
    extra: bytes,
    head_timeout: float | None,
    idle_timeout: float | None,
    meter: StreamMeter | None,
) -> tuple[int, bool, bool]:
    """:func:`relay_response` through the connection's stream reader, a task wake-up a
    piece (for a connection without a sink, or a client writer without a transport)."""
    response = _fresh_response(conn)
    await _await_head(response, conn.reader, head_timeout)
    shape = _shape(request, response, extra)
    if shape.bodiless:
        writer.write(shape.head)
        return response.status, shape.keep, _reusable_bodiless(request, response)
    if meter is not None:
        meter.queued = response.queue_ms / 1000.0
    await _relay_body(
        response,
        conn.reader,
        writer,
        shape.head,
        rechunk=shape.rechunk,
        until_eof=shape.until_eof,
        idle_timeout=idle_timeout,
        meter=meter,
    )
    reusable = response.keep and not response.extra and not shape.until_eof
    return response.status, shape.keep, reusable


class _Shape(NamedTuple):
    """How an answer goes to the client: its head, and how its body is framed."""

    head: bytes
    bodiless: bool
    rechunk: bool
    until_eof: bool
    keep: bool


def _shape(request: Request, response: ResponseReader, extra: bytes) -> _Shape:
    bodiless = request.method == b"HEAD" or response.status in (204, 304)
    framing, rechunk = _framing(request, response, bodiless)
    until_eof = not bodiless and response.length is None and not response.chunked
    keep = request.keep_alive and not until_eof and (bool(framing) or bodiless)
    head = _client_head(request, response, framing, extra, keep)
    return _Shape(head, bodiless, rechunk, until_eof, keep)


def _reusable_bodiless(request: Request, response: ResponseReader) -> bool:
    """Whether the slot connection can serve another request after a bodiless answer."""
    head_request = request.method == b"HEAD"
    return response.keep and response.done and not response.extra and not head_request


async def _relay_direct(
    request: Request,
    sink: Sink,
    writer: ClientWriter,
    transport: asyncio.WriteTransport,
    extra: bytes,
    head_timeout: float | None,
    idle_timeout: float | None,
    meter: StreamMeter | None,
    timeout: float | None,
) -> tuple[int, bool, bool]:
    """:func:`relay_response` with the body written from the slot connection's data
    callback (:class:`Sink`): the loop passes a chunk on without waking this task.

    Until the head is in, only the sink's timer runs (the request's first step may have
    ended here with no task: :func:`~bgserve.dataplane.eager.start`).
    """
    loop = sink.loop
    response = sink.response
    deadline = None if timeout is None else loop.time() + timeout
    sink.await_head(head_timeout, deadline)
    await sink.wait()
    async with asyncio.timeout_at(deadline):
        shape = _shape(request, response, extra)
        if shape.bodiless:
            transport.write(shape.head)
            return response.status, shape.keep, _reusable_bodiless(request, response)
        rechunk, until_eof, keep = shape.rechunk, shape.until_eof, shape.keep
        sink.relaying, sink.rechunk, sink.until_eof = True, rechunk, until_eof
        sink.transport, sink.meter = transport, meter
        if meter is not None:
            meter.queued = response.queue_ms / 1000.0
        sink.send(response.take_body(), shape.head)
        if idle_timeout is not None:
            sink.last = loop.time()
            sink.idle = loop.call_at(sink.last + idle_timeout, _check_idle, sink, idle_timeout)
        while (wake := await sink.wait()) != _WAKE_END:
            if wake == _WAKE_DRAIN:
                await writer.drain()  # a client that went away raises here
                sink.last = loop.time()
                sink.paused = False
                sink.resume_upstream()
        return response.status, keep, response.keep and not response.extra and not until_eof


def _fresh_response(conn: UpstreamConn) -> ResponseReader:
    """The connection's response parser, ready for the next response."""
    response = conn.response
    if response is None:
        response = conn.response = ResponseReader()
    else:
        response.start()
    return response


def _check_idle(sink: Sink, idle_timeout: float) -> None:
    """The stream idle timer: fail the response after ``idle_timeout`` s without a byte."""
    loop = sink.loop
    if sink.failure is not None or sink.wake == _WAKE_END:
        return
    due = sink.last + idle_timeout
    if sink.paused:  # waiting for the client, not the slot: its silence is ours
        due = loop.time() + idle_timeout
    elif loop.time() >= due:
        message = f"sent nothing for {idle_timeout}s in the middle of its answer"
        sink.fail(ProxyError(504, message, response_started=True))
        return
    sink.idle = loop.call_at(due, _check_idle, sink, idle_timeout)


async def _relay_body(
    response: ResponseReader,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: bytes,
    *,
    rechunk: bool,
    until_eof: bool,
    idle_timeout: float | None,
    meter: StreamMeter | None,
) -> None:
    out = [head]
    while True:
        pieces = response.take_body()
        for piece in pieces:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
        if response.done:
            if rechunk:
                out.append(b"0\r\n\r\n")
            writer.write(b"".join(out))
            if meter is not None:
                meter.feed(pieces)
            return
        writer.write(b"".join(out))
        if meter is not None:
            meter.feed(pieces)  # after the write: measuring never delays a chunk
        out = []
        await writer.drain()  # a client that went away raises here, not as a ProxyError
        try:
            data = await _read_body(reader, idle_timeout)
        except OSError as exc:
            raise ProxyError(502, f"response body cut ({exc!r})", response_started=True) from exc
        if not data:
            if until_eof:
                return
            raise ProxyError(502, "response body cut by the slot", response_started=True)
        try:
            response.feed(data)
        except ProxyError as exc:
            exc.response_started = True
            raise


async def _read_body(reader: asyncio.StreamReader, idle_timeout: float | None) -> bytes:
    """The next bytes of a body; ProxyError(504) after ``idle_timeout`` seconds of silence."""
    if idle_timeout is None:
        return await reader.read(READ_SIZE)
    scope = asyncio.timeout(idle_timeout)
    try:
        async with scope:
            return await reader.read(READ_SIZE)
    except TimeoutError:
        if not scope.expired():
            raise
        message = f"sent nothing for {idle_timeout}s in the middle of its answer"
        raise ProxyError(504, message, response_started=True) from None
