"""HTTP/1.1 for the router: its request parsing, fed by each client connection's data
callback (:mod:`bgserve.dataplane.client_conn`; the answer's relaying is in
:mod:`bgserve.dataplane.http1_relay`).

A plain request (one HTTP/1.1 request in one read, ``Name: value`` headers, one Host and
a Content-Length) is read by regular expressions
(:mod:`bgserve.dataplane.http1_simple`); every other request, and upstream responses,
are parsed by llhttp (through ``httptools``, the parser uvicorn uses), in its strict
mode: conflicting or duplicate Content-Length, Content-Length with Transfer-Encoding,
malformed chunk sizes and missing CRLFs, bare CR, LF or NUL in the head are all refused,
so nothing ambiguous is forwarded. On top of that a request needs exactly one Host
header (HTTP/1.1), a head under :data:`HEAD_LIMIT` and a body under the router's limit.
The request head is rewritten for the upstream (hop-by-hop headers dropped, a
content-length always written); the answer is relayed with its own framing
(content-length, re-chunked, or until close). The data plane never switches protocols: a
request with ``Upgrade`` (websocket, h2c) is forwarded as plain HTTP without it, body
included, and the connection goes on, as nginx does when it is not told to pass
``Upgrade`` on. Nothing here knows about deployments, routes or pools:
:mod:`bgserve.dataplane.router` drives it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import httptools

from bgserve.dataplane.http1_errors import (
    HEAD_LIMIT,
    REASONS,
    BadRequest,
    ProxyError,
    UpstreamTimeout,
    error_response,
    json_response,
)
from bgserve.dataplane.http1_simple import read_plain

__all__ = [
    "HEAD_LIMIT",
    "REASONS",
    "BadRequest",
    "ProxyError",
    "Request",
    "RequestReader",
    "UpstreamTimeout",
    "error_response",
    "json_response",
]

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
_OWS = b" \t"


@dataclass(slots=True)
class Request:
    """A client request, its head already rewritten for the upstream."""

    method: bytes
    target: bytes
    upstream_head: bytes
    body: bytes
    keep_alive: bool
    http10: bool


class RequestReader:
    """The requests of one client connection, parsed by one llhttp parser.

    Keep-alive and pipelined requests reuse the parser; requests that arrived together
    are queued and handed out one by one, and a malformed one is reported (as
    :class:`BadRequest`) only after the complete requests before it.
    """

    __slots__ = (
        "_body",
        "_chunked",
        "_continue_sent",
        "_expect",
        "_failure",
        "_head",
        "_head_bytes",
        "_head_size",
        "_hosts",
        "_http10",
        "_in_head",
        "_in_message",
        "_keep",
        "_length",
        "_max_body",
        "_method",
        "_parser",
        "_ready",
        "_resume",
        "_size",
        "_target",
        "_writer",
    )
    _target: bytes
    _head: list[bytes]
    _body: list[bytes]
    _size: int
    _hosts: int
    _head_bytes: int
    _head_size: int
    _length: int | None
    _chunked: bool
    _expect: bool
    _continue_sent: bool
    _method: bytes
    _keep: bool
    _http10: bool

    def __init__(self, max_body: int) -> None:
        # The client's writer, while its bytes are fed (to name the address it reached).
        self._writer: asyncio.StreamWriter | None = None
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._ready: deque[Request] = deque()
        # (status, message), not the exception: its traceback would hold the reader.
        self._failure: tuple[int, str] | None = None
        self._in_message = self._in_head = False
        # True while a fresh parser reads the body llhttp left unread after an upgrade
        # request's head (:meth:`_feed`): its stand-in head is not a request.
        self._resume = False
        self._reset()

    def feed(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        """Parse the bytes ``data`` the client sent on ``writer``'s connection; the
        requests they complete are queued for :meth:`next_request`."""
        if not (self._in_message or self._ready or self._resume or self._failure):
            plain = read_plain(data, self._max_body)
            if plain is not None:
                self._ready.append(Request(*plain, keep_alive=True, http10=False))
                return
        self._writer = writer
        try:
            self._feed(data)
        finally:
            self._writer = None

    def next_request(self) -> Request | None:
        """The next complete request, None if there is none yet.

        Raises BadRequest once the complete requests before a malformed or oversized one
        were handed out: answer it and close.
        """
        if self._ready:
            return self._ready.popleft()
        if self._failure is not None:
            raise BadRequest(*self._failure)
        return None

    @property
    def in_message(self) -> bool:
        """Whether a request has begun and is not complete yet."""
        return self._in_message

    def continue_due(self) -> bool:
        """Whether the request being read waits for ``100 Continue`` before its body; True
        once per request (the caller sends it)."""
        if self._in_message and self._expect and not self._in_head and not self._continue_sent:
            self._continue_sent = True
            return True
        return False

    def _feed(self, data: bytes) -> None:
        queued = len(self._ready)
        total = len(data)
        while True:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = self._after_upgrade(data[exc.args[0] :])
                continue
            except httptools.HttpParserError as exc:
                cause = exc.__context__
                if isinstance(cause, BadRequest):
                    self._failure = (cause.status, cause.message)
                else:
                    self._failure = (400, f"malformed HTTP/1.1 request: {exc}")
                return
            break
        # llhttp buffers a header until its end: bound what an unfinished head may hold.
        # (A head that began in this read after another request ended is counted from the
        # next read; the exact size of a finished head is checked in on_headers_complete.)
        if self._in_head and len(self._ready) == queued:
            self._head_bytes += total
            if self._head_bytes > HEAD_LIMIT:
                self._failure = (431, f"request head exceeds {HEAD_LIMIT} bytes")

    def _after_upgrade(self, rest: bytes) -> bytes:
        """What a fresh parser reads after llhttp stopped at an upgrade request's head.

        llhttp (as httptools drives it) leaves such a request's body unread and parses
        nothing after it. The data plane does not switch protocols, so the request goes
        on as plain HTTP: its body, framed as its head said, is read by a new parser
        behind a stand-in head that is not a request (``_resume``), then the requests
        that follow it.
        """
        self._parser = httptools.HttpRequestParser(self)
        if not self._resume:
            return rest
        if self._chunked:
            framing = b"transfer-encoding: chunked"
        else:
            framing = b"content-length: %d" % (self._length or 0)
        return b"POST / HTTP/1.1\r\nhost: body\r\n%s\r\n\r\n%s" % (framing, rest)

    def _reset(self) -> None:
        self._target = b""
        self._head = [b""]
        self._body = []
        self._size = self._hosts = self._head_bytes = self._head_size = 0
        self._length = None
        self._chunked = self._expect = self._continue_sent = False

    # ----- llhttp callbacks -----

    def on_message_begin(self) -> None:
        if self._resume:
            return
        self._reset()
        self._in_message = self._in_head = True

    def on_url(self, url: bytes) -> None:
        if self._resume:
            return
        self._target += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer: the body is forwarded with a content-length instead
        self._head_size += len(name) + len(value) + 4
        key = name.lower()
        value = value.rstrip(_OWS)
        if key not in _HOP_BY_HOP:
            self._hosts += key == b"host"
            self._head.append(b"%s: %s" % (name, value))
        elif key == b"content-length":
            self._length = int(value)  # llhttp has checked the digits and duplicates
        elif key == b"transfer-encoding":
            if value.lower() != b"chunked":
                text = value.decode(errors="replace")
                raise BadRequest(501, f"transfer-encoding {text!r} is not supported")
            self._chunked = True
        elif key == b"expect":
            self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        if self._resume:
            return
        self._in_head = False
        if self._head_size > HEAD_LIMIT:
            raise BadRequest(431, f"request head exceeds {HEAD_LIMIT} bytes")
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadRequest(505, f"HTTP/{version} is not supported: use HTTP/1.1")
        if self._hosts > 1 or (self._hosts == 0 and version == "1.1"):
            raise BadRequest(400, f"the request has {self._hosts} Host headers: send exactly one")
        method = parser.get_method()
        if method == b"CONNECT":
            raise BadRequest(405, "CONNECT is not supported")
        if self._length is not None and self._length > self._max_body:
            raise BadRequest(413, f"request body of {self._length} bytes exceeds {self._max_body}")
        self._method = method
        self._keep = parser.should_keep_alive()
        self._http10 = version == "1.0"
        self._head[0] = b"%s %s HTTP/1.1" % (method, self._target)
        if not self._hosts:
            self._head.append(self._own_host())
        self._expect = self._expect and version == "1.1" and (self._chunked or bool(self._length))

    def _own_host(self) -> bytes:
        # An HTTP/1.0 request may lack Host but the upstream request is HTTP/1.1, which
        # needs one: name the address the client reached, as its Host would have.
        assert self._writer is not None  # set while data is fed
        host, port = self._writer.get_extra_info("sockname")[:2]
        text = f"host: [{host}]:{port}" if ":" in host else f"host: {host}:{port}"
        return text.encode()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise BadRequest(413, f"request body exceeds {self._max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._resume:
            self._resume = False
        elif (self._chunked or self._length) and self._parser.should_upgrade():
            self._resume = True  # llhttp skipped the body: _after_upgrade reads it
            return
        self._in_message = False
        self._head.append(b"content-length: %d\r\n\r\n" % self._size)
        self._ready.append(
            Request(
                self._method,
                self._target,
                b"\r\n".join(self._head),
                b"".join(self._body),
                self._keep,
                self._http10,
            )
        )
