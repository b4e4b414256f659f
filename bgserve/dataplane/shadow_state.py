"""The pieces of shadow traffic that hold data: the client writer that keeps a copy of
blue's answer, a mirrored request waiting for green and the exchange once green answered,
and one deployment's share, queue, collected exchanges and counters
(:mod:`bgserve.dataplane.mirror` moves them)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from bgserve.dataplane.http1 import Request
from bgserve.dataplane.wire import ShadowPage


class Capture:
    """A client writer that passes everything through and keeps the first ``cap`` bytes."""

    __slots__ = ("_writer", "cap", "chunks", "size")

    def __init__(self, writer: asyncio.StreamWriter, cap: int) -> None:
        self._writer = writer
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        if self.size < self.cap:
            self.chunks.append(data)
            self.size += len(data)

    async def drain(self) -> None:
        await self._writer.drain()


@dataclass(slots=True)
class Job:
    """One mirrored request and what the client got from blue: ``answer`` fills as blue's
    answer is relayed; ``blue_done`` resolves once the relay ended, with ``blue_ms`` and
    ``answer_capped`` set and ``relayed`` true if it ended normally."""

    request: Request
    answer: list[bytes]
    blue_extra: bytes
    blue_done: asyncio.Future[None]
    answer_capped: bool = False
    blue_ms: float = 0.0
    relayed: bool = False


class Exchange(NamedTuple):
    """A mirrored request green answered (or failed), before it is parsed into a pair."""

    job: Job
    green: bytes | None
    error: str | None
    green_ms: float


class Shadow:
    """One deployment's mirroring: its share, queue, collected pairs and counters.

    ``select`` and the queue live on the router's loop; ``pairs`` and the counters are
    guarded by a lock because :meth:`Mirror.drain` runs on the control thread.
    """

    def __init__(self, deployment: str, max_pairs: int) -> None:
        self.deployment = deployment
        self.key = deployment.encode()
        self.percent = 0
        self.max_queue = 1
        self.queue: deque[Job] = deque()
        self.task: asyncio.Task[None] | None = None
        self._credit = 0
        self._max_pairs = max_pairs
        self._lock = threading.Lock()
        self._pairs: deque[Exchange] = deque()
        self._dropped = 0
        self._green_errors = 0

    def select(self) -> bool:
        """Whether this request blue is picked for is mirrored (every 100/percent-th)."""
        self._credit += self.percent
        if self._credit >= 100:
            self._credit -= 100
            return True
        return False

    def drop(self) -> None:
        with self._lock:
            self._dropped += 1

    def add(self, pair: Exchange) -> None:
        """Keep ``pair``; beyond the buffer's bound the oldest is dropped and counted."""
        with self._lock:
            if pair.error is not None:
                self._green_errors += 1
            if len(self._pairs) >= self._max_pairs:
                self._pairs.popleft()
                self._dropped += 1
            self._pairs.append(pair)

    def take(self, limit: int) -> tuple[list[Exchange], ShadowPage]:
        """Up to ``limit`` oldest exchanges, and a page with the counters since the previous
        take (its ``pairs`` left empty for the caller to fill from the exchanges)."""
        with self._lock:
            count = min(limit, len(self._pairs))
            exchanges = [self._pairs.popleft() for _ in range(count)]
            page = ShadowPage(
                pairs=[],
                dropped=self._dropped,
                green_errors=self._green_errors,
                more=bool(self._pairs),
            )
            self._dropped = self._green_errors = 0
        return exchanges, page

    def idle(self) -> bool:
        with self._lock:
            return not self.percent and not self._pairs and not self.queue and self.task is None
