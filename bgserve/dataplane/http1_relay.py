"""Relaying one upstream response to the client, parsed by llhttp (through ``httptools``).

The response head is rewritten (hop-by-hop headers dropped, the router's headers added)
and the body is sent with framing the client can rely on: the slot's content-length,
re-chunked for HTTP/1.1 clients, or until close. An upstream connection is reusable only
after a complete, unambiguous response with nothing after it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import httptools

from bgserve.dataplane.http1 import Request
from bgserve.dataplane.http1_errors import (
    HEAD_LIMIT,
    READ_SIZE,
    ProxyError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from bgserve.dataplane.stream_meter import StreamMeter

_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
_OWS = b" \t"


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


class UpstreamConn(Protocol):
    """An upstream connection (:class:`bgserve.dataplane.upstream.Conn`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    response: ResponseReader | None


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
) -> tuple[int, bool, bool]:
    """Send ``request`` upstream and pass the answer to the client with ``extra`` headers.

    Each piece of the body is written to the client as soon as it arrives, then shown to
    ``meter`` (if any). Returns (status, keep the client connection, reuse the upstream
    connection). Raises UpstreamTimeout (a ProxyError) when the response head does not
    arrive within ``head_timeout`` seconds, ProxyError (504, ``response_started``) when the
    body pauses longer than ``idle_timeout`` seconds, ProxyError if the upstream fails or
    answers something malformed; the upstream connection must then be closed.
    """
    conn.writer.write(request.upstream_head + request.body)
    response = conn.response
    if response is None:
        response = conn.response = ResponseReader()
    else:
        response.start()
    await _await_head(response, conn.reader, head_timeout)
    head_request = request.method == b"HEAD"
    bodiless = head_request or response.status in (204, 304)
    framing, rechunk = _framing(request, response, bodiless)
    until_eof = not bodiless and response.length is None and not response.chunked
    keep = request.keep_alive and not until_eof and (bool(framing) or bodiless)
    head = _client_head(request, response, framing, extra, keep)
    if bodiless:
        writer.write(head)
        reusable = response.keep and response.done and not response.extra and not head_request
        return response.status, keep, reusable
    await _relay_body(
        response,
        conn.reader,
        writer,
        head,
        rechunk=rechunk,
        until_eof=until_eof,
        idle_timeout=idle_timeout,
        meter=meter,
    )
    return response.status, keep, response.keep and not response.extra and not until_eof


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
