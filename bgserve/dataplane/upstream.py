"""Keep-alive connections from the router to its slots, pooled per slot."""

from __future__ import annotations

import asyncio
import select
import time

from bgserve.dataplane.eager import to_task
from bgserve.dataplane.http1_errors import HEAD_LIMIT
from bgserve.dataplane.http1_relay import ResponseReader, Sink


class UpstreamProtocol(asyncio.StreamReaderProtocol):
    """A slot connection's protocol: its bytes go to the stream reader, or, while a
    response is relayed, straight to that relay's :class:`~bgserve.dataplane.http1_relay.Sink`
    from the loop's data callback (no task wake-up between a chunk's arrival and its write).
    """

    sink: Sink | None = None
    # The slot closed its side, or the connection broke: never reused.
    ended = False

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            super().data_received(data)
        else:
            sink.data(data)

    def eof_received(self) -> bool:
        self.ended = True
        if self.sink is not None:
            self.sink.lost(None)
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if self.sink is not None:
            self.sink.lost(exc)
        super().connection_lost(exc)


async def open_conn(host: str, port: int) -> Conn:
    """A new connection to ``host:port``. Raises OSError."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=HEAD_LIMIT, loop=loop)
    protocol = UpstreamProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return Conn(reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol)


class Conn:
    """A keep-alive connection to one slot, with the parser of its responses."""

    __slots__ = ("_poller", "fd", "idle_since", "protocol", "reader", "response", "writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: UpstreamProtocol,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.response: ResponseReader | None = None
        self.fd = int(writer.get_extra_info("socket").fileno())
        self.idle_since = 0.0
        # poll, not select: select fails on descriptors above 1023 (a busy data plane).
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)

    def buffered(self) -> bool:
        """Whether the stream holds bytes nobody read: the slot sent more than its answer."""
        # StreamReader has no public way to ask; the alternative is a read that would block.
        return bool(getattr(self.reader, "_buffer", b""))

    def usable(self, now: float, max_idle: float) -> bool:
        """Whether the idle connection can carry another request."""
        # The protocol's flag tells what at_eof and is_closing would, without their calls.
        if self.protocol.ended or now - self.idle_since > max_idle or self.buffered():
            return False
        # An idle keep-alive socket that is readable was closed by the slot (or it sent
        # garbage): the loop may not have seen the EOF yet, the kernel has.
        return not self._poller.poll(0)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.protocol.ended = True
        self.writer.close()


class Pool:
    """Idle keep-alive connections to one slot, most recently used first."""

    def __init__(
        self, host: str, port: int, *, max_idle: int = 64, max_idle_seconds: float = 30.0
    ) -> None:
        self.host = host
        self.port = port
        self._max_idle = max_idle
        # Below uvicorn's 65 s keep-alive, so the slot never closes a connection we reuse.
        self._max_idle_seconds = max_idle_seconds
        self._idle: list[Conn] = []
        self._closed = False

    def take_idle(self) -> Conn | None:
        """Take an idle live connection out of the pool, closing the stale ones met on
        the way; None if there is none. No I/O but a poll of each socket looked at.

        The request path calls this before :meth:`acquire`, so that a pooled connection
        is had with a plain call, without a coroutine step.
        """
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self._max_idle_seconds):
                return conn
            conn.close()
        return None

    async def acquire(self, timeout: float) -> Conn:
        """An idle live connection or a new one. Raises OSError (incl. TimeoutError)."""
        conn = self.take_idle()
        if conn is not None:
            return conn
        await to_task()  # a connect waits with a timeout: that needs the task
        async with asyncio.timeout(timeout):
            return await open_conn(self.host, self.port)

    def release(self, conn: Conn, reusable: bool) -> None:
        """Keep ``conn`` for reuse if ``reusable`` and it holds no unread bytes, else close it."""
        if (
            reusable
            and not self._closed
            and len(self._idle) < self._max_idle
            and not conn.buffered()
        ):
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close every idle connection; later releases close theirs."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
