"""Keep-alive connections from the router to its slots, pooled per slot."""

from __future__ import annotations

import asyncio
import select
import time

from bgserve.backends.local.http1 import HEAD_LIMIT


class _Conn:
    """A keep-alive connection to one slot."""

    __slots__ = ("fd", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.fd = int(writer.get_extra_info("socket").fileno())
        self.idle_since = 0.0

    def usable(self, now: float, max_idle: float) -> bool:
        if now - self.idle_since > max_idle or self.reader.at_eof() or self.writer.is_closing():
            return False
        # An idle keep-alive socket that is readable was closed by the slot (or it sent
        # garbage): the loop may not have seen the EOF yet, the kernel has.
        readable, _, _ = select.select([self.fd], [], [], 0)
        return not readable

    def close(self) -> None:
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
        self._idle: list[_Conn] = []
        self._closed = False

    async def acquire(self, timeout: float) -> _Conn:
        """An idle live connection or a new one. Raises OSError (incl. TimeoutError)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self._max_idle_seconds):
                return conn
            conn.close()
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
        return _Conn(reader, writer)

    def release(self, conn: _Conn, reusable: bool) -> None:
        if reusable and not self._closed and len(self._idle) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
