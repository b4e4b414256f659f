"""A client connection of the router: requests parsed as their bytes arrive, each handled
from the data callback that completed it.

The loop hands the client's bytes to :meth:`ClientConnection.data_received`, which feeds
them to the connection's :class:`~bgserve.dataplane.http1.RequestReader`. A complete
request's handler runs there and then up to its first wait
(:func:`~bgserve.dataplane.eager.start`): the routing, the slot's pick, a pooled
connection and the write to the slot happen in the same callback, with no task between
the request's arrival and its departure. A task is made after that only for what waits
(a new upstream connection, the answer, a slow client, the mirror).

One request is handled at a time. Bytes that arrive meanwhile (pipelined requests) wait
unparsed, and the connection stops being read once they pass :data:`PENDING_LIMIT`; the
task handles the requests they complete one after the other before it ends. A malformed
request is answered (and the connection closed) only after the complete ones before it.
A connection that waits longer than ``idle_timeout`` for a complete request is closed
without an answer; the time its requests are handled does not count.
"""

from __future__ import annotations

import asyncio
from asyncio.streams import FlowControlMixin
from collections.abc import Callable, Coroutine
from typing import Any, cast

from bgserve.dataplane.eager import Started, start
from bgserve.dataplane.http1 import HEAD_LIMIT, BadRequest, Request, RequestReader, error_response

Handler = Callable[[Request, asyncio.StreamWriter], Coroutine[Any, Any, bool]]
"""``handler(request, writer)``: answer the request on ``writer``; whether the connection
stays open."""

PENDING_LIMIT = 2 * HEAD_LIMIT
"""Unparsed bytes held while a request is handled before the connection stops being read
(what asyncio's stream reader held with the router's limit)."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientConnection(FlowControlMixin, asyncio.Protocol):
    """The protocol of one client connection, in ``clients`` while it is open; each
    request goes to ``handler``."""

    def __init__(
        self,
        handler: Handler,
        clients: set[ClientConnection],
        loop: asyncio.AbstractEventLoop,
        *,
        max_body: int,
        idle_timeout: float,
    ) -> None:
        super().__init__(loop)
        self._loop: asyncio.AbstractEventLoop = loop
        self._handler = handler
        self._clients = clients
        self._idle_timeout = idle_timeout
        self._reader = RequestReader(max_body)
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.StreamWriter | None = None
        # True from a request's arrival until its task has handled every request it could.
        self._busy = False
        self._started: Started | None = None  # the request's coroutine, while it runs
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._paused_reading = False
        self._eof = self._closed = False
        self._waiting_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # ----- the loop's callbacks -----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._writer = asyncio.StreamWriter(self._transport, self, None, self._loop)
        self._clients.add(self)
        self._start_idle_clock()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._busy:
            self._hold(data)
            return
        assert self._writer is not None
        self._reader.feed(data, self._writer)
        try:
            request = self._reader.next_request()
        except BadRequest as exc:
            self._refuse(exc)
            return
        if request is None:
            self._wait_for_bytes()
            return
        self._busy = True
        started = start(self._loop, self._serve(request))
        if self._busy:
            self._started = started

    def eof_received(self) -> bool:
        self._eof = True
        if not self._busy:
            self._wait_for_bytes()
        return True  # keep the transport open: an answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._clients.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    def abort(self) -> None:
        """Close the connection now, and cancel the request it is handling (shutdown)."""
        self._close()
        if self._started is not None:
            self._started.cancel()

    # ----- requests -----

    def _hold(self, data: bytes) -> None:
        """Keep bytes that arrived while a request is handled; stop reading past the limit."""
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > PENDING_LIMIT and not self._paused_reading:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused_reading = True

    async def _serve(self, request: Request) -> None:
        """Handle ``request``, then each complete request that arrived meanwhile."""
        writer = self._writer
        assert writer is not None
        try:
            next_request: Request | None = request
            while next_request is not None:
                keep = await self._handler(next_request, writer)
                await writer.drain()
                if not keep:
                    self._close()
                    return
                next_request = self._take_pending()
        except BadRequest as exc:
            self._refuse(exc)
            return
        except (ConnectionError, TimeoutError):
            self._close()
            return
        except BaseException:
            self._close()
            raise
        finally:
            self._busy = False
            self._started = None
        self._start_idle_clock()
        self._wait_for_bytes()

    def _take_pending(self) -> Request | None:
        """The next request among the bytes held meanwhile (parsed now). Raises
        BadRequest."""
        if self._closed:
            return None
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            assert self._writer is not None
            self._reader.feed(data, self._writer)
        if self._paused_reading:
            assert self._transport is not None
            self._transport.resume_reading()
            self._paused_reading = False
        return self._reader.next_request()

    def _wait_for_bytes(self) -> None:
        """No request is handled and none is complete: what the client sent so far decides
        (a request cut by its EOF, a body waiting for ``100 Continue``)."""
        if self._closed:
            return
        assert self._writer is not None
        if self._eof:
            if self._reader.in_message:
                self._refuse(BadRequest(400, "the connection closed in the middle of a request"))
            else:
                self._close()
        elif self._reader.continue_due():
            self._writer.write(_CONTINUE)

    def _refuse(self, exc: BadRequest) -> None:
        assert self._writer is not None
        self._writer.write(error_response(exc.status, exc.message, keep=False))
        self._close()

    def _close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()

    # ----- the idle timeout -----

    def _start_idle_clock(self) -> None:
        """Count the wait for the next request from now. One timer runs at a time: when
        it fires before the wait's end it is set again for that end."""
        self._waiting_since = self._loop.time()
        if self._idle_timer is None:
            due = self._waiting_since + self._idle_timeout
            self._idle_timer = self._loop.call_at(due, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._closed or self._busy:
            return  # the request's end starts the clock again
        due = self._waiting_since + self._idle_timeout
        if self._loop.time() >= due:
            self._close()
            return
        self._idle_timer = self._loop.call_at(due, self._check_idle)
