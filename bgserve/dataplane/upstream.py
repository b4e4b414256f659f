"""Keep-alive connections from the router to its slots, pooled per slot."""

from __future__ import annotations

import asyncio
import select
import time

from bgserve.dataplane.http1_errors import HEAD_LIMIT
from bgserve.dataplane.http1_relay import ResponseReader


class Conn:
    """A keep-alive connection to one slot, with the parser of its responses."""

    __slots__ = ("fd", "idle_since", "reader", "response", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response: ResponseReader | None = None
        self.fd = int(writer.get_extra_info("socket").fileno())
        self.idle_since = 0.0

    def buffered(self) -> bool:
        """Whether the stream holds bytes nobody read: the slot sent more than its answer."""
        # StreamReader has no public way to ask; the alternative is a read that would block.
        return bool(getattr(self.reader, "_buffer", b""))

    def usable(self, now: float, max_idle: float) -> bool:
        """Whether the idle connection can carry another request."""
        if now - self.idle_since > max_idle or self.reader.at_eof() or self.writer.is_closing():
            return False
        if self.buffered():
            return False
        # An idle keep-alive socket that is readable was closed by the slot (or it sent
        # garbage): the loop may not have seen the EOF yet, the kernel has.
        # poll, not select: select fails on descriptors above 1023 (a busy data plane).
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        """Close the connection (idempotent)."""
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

    async def acquire(self, timeout: float) -> Conn:
        """An idle live connection or a new one. Raises OSError (incl. TimeoutError)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self._max_idle_seconds):
                return conn
            conn.close()
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
        return Conn(reader, writer)

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
