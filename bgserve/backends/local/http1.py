"""HTTP/1.1 on bare asyncio streams: the router's request parsing and response relaying.

The request head is split by hand and rewritten for the upstream (hop-by-hop headers
dropped, a content-length always written); the body is passed through unparsed. Nothing
here knows about deployments, routes or pools: :mod:`bgserve.backends.local.router` drives it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Protocol

HEAD_LIMIT = 64 * 1024
# Hop-by-hop headers, and content-length which the router always writes itself.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"content-length",
    }
)


class BadRequest(Exception):
    """The client sent something the router cannot forward; the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ProxyError(Exception):
    """The upstream failed; ``response_started`` means the client already got bytes."""

    def __init__(self, status: int, message: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response_started = response_started


@dataclass(slots=True)
class Request:
    """A client request, its head already rewritten for the upstream."""

    method: bytes
    target: bytes
    upstream_head: bytes
    body: bytes
    keep_alive: bool
    http10: bool


class UpstreamConn(Protocol):
    """The stream pair of an upstream connection (:mod:`bgserve.backends.local.upstream`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise BadRequest(400, f"invalid content-length {value.decode(errors='replace')!r}")
    return int(value)


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size in request body") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers are dropped: the body is forwarded with a content-length
            return b"".join(parts)
        total += size
        if total > max_body:
            raise BadRequest(413, f"request body exceeds {max_body} bytes")
        parts.append((await reader.readexactly(size + 2))[:-2])


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
) -> Request | None:
    """Read one request; None when the client closed between requests.

    Raises BadRequest for a malformed or oversized request.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, f"request head exceeds {HEAD_LIMIT} bytes") from None
    lines = head.lstrip(b"\r\n")[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(400, "malformed request line: use HTTP/1.1")
    method, target, version = parts
    http10 = version == b"HTTP/1.0"
    keep, length, chunked = not http10, 0, False
    forwarded = [b"%s %s HTTP/1.1" % (method, target)]
    for line in lines[1:]:
        name, sep, raw = line.partition(b":")
        key = name.lower()
        if not sep or key != key.strip():
            raise BadRequest(400, "malformed request header")
        if key not in _HOP_BY_HOP:
            forwarded.append(line)
            continue
        value = raw.strip().lower()
        if key == b"content-length":
            length = _content_length(value)
        elif key == b"transfer-encoding":
            if value != b"chunked":
                raise BadRequest(400, "only chunked transfer-encoding is supported")
            chunked = True
        elif key == b"connection":
            keep = b"keep-alive" in value if http10 else b"close" not in value
        elif key == b"expect" and value == b"100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        body = await _read_chunked(reader, max_body)
    elif length > max_body:
        raise BadRequest(413, f"request body of {length} bytes exceeds {max_body}")
    else:
        body = await reader.readexactly(length) if length else b""
    forwarded.append(b"content-length: %d\r\n\r\n" % len(body))
    return Request(method, target, b"\r\n".join(forwarded), body, keep, http10)


async def _read_response_head(reader: asyncio.StreamReader) -> bytes:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 1") or head.startswith(b"HTTP/1.1 101"):
            return head  # interim 1xx answers are swallowed


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        if int(line.split(b";", 1)[0].strip(), 16) == 0:
            while True:
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    return
        writer.write(await reader.readexactly(int(line.split(b";", 1)[0].strip(), 16) + 2))
        await writer.drain()


async def _relay_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def _parse_response_head(head: bytes) -> tuple[int, list[bytes], int | None, bool, bool]:
    """Status, head lines without hop-by-hop headers, content-length, chunked, reusable."""
    lines = head[:-4].split(b"\r\n")
    try:
        status = int(lines[0][9:12])
    except ValueError:
        raise ProxyError(502, "malformed response status line") from None
    kept, length, chunked, reusable = [lines[0]], None, False, True
    for line in lines[1:]:
        name, _, raw = line.partition(b":")
        key = name.lower()
        if key == b"content-length":
            length = int(raw)
        elif key == b"transfer-encoding":
            chunked = raw.strip().lower() == b"chunked"
        elif key == b"connection":
            reusable = b"close" not in raw.lower()
            continue
        elif key == b"keep-alive":
            continue
        kept.append(line)
    return status, kept, length, chunked, reusable


async def relay_response(
    request: Request, conn: UpstreamConn, writer: asyncio.StreamWriter, extra: bytes
) -> tuple[int, bool, bool]:
    """Send ``request`` upstream and pass the answer to the client with ``extra`` headers.

    Returns (status, keep the client connection, reuse the upstream connection).
    Raises ProxyError if the upstream fails.
    """
    conn.writer.write(request.upstream_head + request.body)
    try:
        head = await _read_response_head(conn.reader)
    except (OSError, EOFError, asyncio.LimitOverrunError) as exc:
        raise ProxyError(502, f"connection lost before a response ({exc!r})") from exc
    status, lines, length, chunked, reusable = _parse_response_head(head)
    keep = request.keep_alive
    bodiless = request.method == b"HEAD" or status in (204, 304)
    if not bodiless and length is None and not chunked:
        keep = reusable = False  # the body ends when the slot closes the connection
    if not keep:
        extra += b"connection: close\r\n"
    elif request.http10:
        extra += b"connection: keep-alive\r\n"
    out = b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"
    if bodiless:
        writer.write(out)
        return status, keep, reusable
    if length is not None:
        try:
            writer.write(out + await conn.reader.readexactly(length))
        except (OSError, EOFError) as exc:
            raise ProxyError(502, f"connection lost in the response body ({exc!r})") from exc
        return status, keep, reusable
    writer.write(out)
    try:
        if chunked:
            await _relay_chunked(conn.reader, writer)
        else:
            await _relay_until_eof(conn.reader, writer)
    except (OSError, EOFError, ValueError) as exc:
        raise ProxyError(502, f"response body cut ({exc!r})", response_started=True) from exc
    return status, keep, reusable


def _json_response(status: int, reason: str, payload: dict[str, object], keep: bool) -> bytes:
    body = json.dumps(payload).encode()
    connection = b"keep-alive" if keep else b"close"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: %s\r\n\r\n%s" % (status, reason.encode(), len(body), connection, body)
    )


_REASONS = {
    404: "Not Found",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


def _error(status: int, message: str, keep: bool) -> bytes:
    return _json_response(status, _REASONS[status], {"error": message}, keep)
