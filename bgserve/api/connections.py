"""The control API's connections: a deadline for each request head, a cap on its size, and a
bound on how many connections stay open.

uvicorn times out only an idle kept-alive connection (``timeout_keep_alive``); a client that
sends a request line and one header and then stops is kept for ever, and enough of them
take every file descriptor the process has. :func:`guarded_protocol` wraps uvicorn's HTTP
protocol so that:

- a connection must deliver a complete request head within ``header_timeout`` of opening, or
  of the end of its previous answer, else it is closed (a request being answered is never
  cut: its head has arrived);
- a head longer than ``max_header_bytes`` is answered 431 and the connection closed;
- at most ``max_connections`` connections are open: a new one beyond that closes the oldest
  connection still waiting for a head, or is itself closed when every connection is busy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("bgserve.api")

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\ncontent-length: 31\r\n\r\nrequest head too large; closing"
)
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of :func:`guarded_protocol`."""

    header_timeout: float
    max_connections: int
    max_header_bytes: int


@dataclass
class _Shed:
    """Connections closed for a limit, logged at most every :data:`LOG_EVERY_S`."""

    counts: dict[str, int] = field(default_factory=dict)
    logged_at: float = 0.0

    def add(self, why: str) -> None:
        self.counts[why] = self.counts.get(why, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_S:
            shown = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            log.warning("control API closed connections: %s", shown)
            self.counts.clear()
            self.logged_at = now


def guarded_protocol(limits: ConnectionLimits, base: type[Any] = AutoHTTPProtocol) -> type[Any]:
    """uvicorn's HTTP protocol ``base`` with ``limits`` (pass it as ``uvicorn.run(http=...)``).

    The class keeps its own table of open connections, so each server gets its own class.
    """
    # Insertion-ordered: the first entry waiting for a head is the oldest one.
    open_connections: dict[Any, None] = {}
    shed = _Shed()

    class Guarded(base):
        _deadline: asyncio.TimerHandle | None = None
        _awaited: object = None
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:
            if len(open_connections) >= limits.max_connections and not _evict_one():
                shed.add("over the connection limit")
                transport.abort()
                return
            super().connection_made(transport)
            open_connections[self] = None
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            open_connections.pop(self, None)
            self._cancel_deadline()
            if getattr(self, "transport", None) is not None:
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            waiting = self._waiting_for_head()
            super().data_received(data)
            if not waiting:
                return
            if self.cycle is not self._awaited:  # uvicorn made a new cycle: the head is in
                self._cancel_deadline()
                return
            self._head_bytes += len(data)
            if self._head_bytes > limits.max_header_bytes and not self.transport.is_closing():
                shed.add("with too large a head")
                self.transport.write(TOO_LARGE)
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def _await_head(self) -> None:
            self._cancel_deadline()
            self._awaited = self.cycle
            self._head_bytes = 0
            self._deadline = self.loop.call_later(limits.header_timeout, self._head_late)

        def _waiting_for_head(self) -> bool:
            # A pipelined request uvicorn parsed earlier may still be running.
            idle = self.cycle is None or self.cycle.response_complete
            return self._deadline is not None and self.cycle is self._awaited and idle

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _head_late(self) -> None:
            late = self._waiting_for_head()
            self._deadline = None
            if late and not self.transport.is_closing():
                shed.add("without a request head in time")
                self.transport.close()

    def _evict_one() -> bool:
        for protocol in open_connections:
            if protocol._waiting_for_head():
                shed.add("waiting for a head, for a newer one")
                del open_connections[protocol]
                protocol._cancel_deadline()
                protocol.transport.abort()
                return True
        return False

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
