"""The pieces of shadow traffic that hold data: the client writer that keeps a copy of
blue's answer, a mirrored request waiting for green and the exchange once green answered,
one deployment's share, queue, collected exchanges and counters, and the byte budget every
deployment's copies and exchanges share (:mod:`bgserve.dataplane.mirror` moves them).

Every byte a copy or an exchange keeps alive is counted against the budget while it is
held: a queued copy its head, its whole request body and the most of blue's answer its
capture may keep; an exchange its request body cut at the pair's cap and both answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from bgserve.dataplane.http1 import Request
from bgserve.dataplane.wire import ShadowPage, ShadowUsage


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


class ShadowBudget:
    """The bytes shadow traffic holds across every deployment, against one bound.

    Thread-safe: copies are taken on the router's loop, pairs drained on the control
    thread.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the shadow byte bound must be 1 or more: {limit}")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes if they fit under the bound; False (nothing counted)
        if they do not."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            self.peak = max(self.peak, self.held)
            return True

    def give(self, size: int) -> None:
        """Stop counting ``size`` bytes."""
        with self._lock:
            self.held -= size

    def usage(self) -> ShadowUsage:
        """The bytes held now, the most held so far, and the bound."""
        with self._lock:
            return ShadowUsage(bytes=self.held, peak_bytes=self.peak, max_bytes=self.limit)


@dataclass(slots=True)
class Job:
    """One mirrored request and what the client got from blue: ``answer`` fills as blue's
    answer is relayed; ``blue_done`` resolves once the relay ended, with ``blue_ms`` and
    ``answer_capped`` set and ``relayed`` true if it ended normally.

    ``blue_release``, ``green_release`` and ``generation`` say which pair and which run
    of mirroring the copy was taken for; ``cost`` is the bytes it counts against the
    budget until it is released (then 0).
    """

    request: Request
    answer: list[bytes]
    blue_extra: bytes
    blue_done: asyncio.Future[None]
    blue_release: int
    green_release: int
    generation: int
    cost: int
    answer_capped: bool = False
    blue_ms: float = 0.0
    relayed: bool = False


@dataclass(slots=True)
class Exchange:
    """A mirrored request green answered (or failed), before it is parsed into a pair:
    the request body cut at the pair's cap, blue's answer as captured, green's answer."""

    request_body: bytes
    answer: list[bytes]
    green: bytes | None
    error: str | None
    blue_ms: float
    green_ms: float
    truncated: bool
    blue_release: int
    green_release: int

    @property
    def cost(self) -> int:
        """The bytes this exchange keeps alive."""
        green = 0 if self.green is None else len(self.green)
        return len(self.request_body) + sum(len(a) for a in self.answer) + green


class Shadow:
    """One deployment's mirroring: its share, the pair it mirrors, queue, collected pairs
    and counters.

    ``select`` runs on the router's loop; the queue, ``pairs`` and the counters are
    guarded by a lock because :meth:`Mirror.configure` and :meth:`Mirror.drain` run on
    the control thread. ``generation`` changes whenever what was collected must be
    thrown away (mirroring stopped, or another blue/green pair): a copy or exchange of an
    older generation is discarded, never sent or kept.
    """

    def __init__(self, deployment: str, max_pairs: int, budget: ShadowBudget) -> None:
        self.deployment = deployment
        self.key = deployment.encode()
        self.percent = 0
        self.max_queue = 1
        self.pair: tuple[int, int] | None = None
        self.generation = 0
        self.queue: deque[Job] = deque()
        self.task: asyncio.Task[None] | None = None
        self._credit = 0
        self._max_pairs = max_pairs
        self._budget = budget
        self._lock = threading.Lock()
        self._pairs: deque[Exchange] = deque()
        self._dropped = 0
        self._over_bytes = 0
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

    def enqueue(self, job: Job) -> bool:
        """Queue ``job`` if the queue has room and the budget its bytes; else count it as
        dropped and return False."""
        with self._lock:
            if job.generation != self.generation:
                return False
            if len(self.queue) >= self.max_queue:
                self._dropped += 1
                return False
            if not self._budget.take(job.cost):
                self._dropped += 1
                self._over_bytes += 1
                return False
            self.queue.append(job)
            return True

    def next_job(self) -> Job | None:
        """The oldest queued copy, None when the queue is empty. Its bytes stay counted
        until :meth:`add` or :meth:`release`."""
        with self._lock:
            return self.queue.popleft() if self.queue else None

    def release(self, job: Job) -> None:
        """Stop counting ``job``'s bytes. Idempotent."""
        with self._lock:
            self._release(job)

    def _release(self, job: Job) -> None:
        if job.cost:
            self._budget.give(job.cost)
            job.cost = 0

    def add(self, job: Job, exchange: Exchange) -> None:
        """Keep ``exchange`` in place of ``job`` (whose bytes are released). An exchange of
        an older generation is discarded; beyond the bound in pairs or bytes the oldest
        are dropped and counted, and one that fits in no budget is dropped itself."""
        with self._lock:
            self._release(job)
            if job.generation != self.generation:
                return
            if exchange.error is not None:
                self._green_errors += 1
            cost = exchange.cost
            while len(self._pairs) >= self._max_pairs or not self._budget.take(cost):
                if not self._pairs:
                    self._dropped += 1
                    self._over_bytes += 1
                    return
                self._budget.give(self._pairs.popleft().cost)
                self._dropped += 1
            self._pairs.append(exchange)

    def take(self, limit: int) -> tuple[list[Exchange], ShadowPage]:
        """Up to ``limit`` oldest exchanges (their bytes released), and a page with the
        counters since the previous take (its ``pairs`` left empty for the caller to fill
        from the exchanges)."""
        with self._lock:
            count = min(limit, len(self._pairs))
            exchanges = [self._pairs.popleft() for _ in range(count)]
            self._budget.give(sum(e.cost for e in exchanges))
            page = ShadowPage(
                pairs=[],
                dropped=self._dropped,
                green_errors=self._green_errors,
                more=bool(self._pairs),
                over_bytes=self._over_bytes,
            )
            self._dropped = self._green_errors = self._over_bytes = 0
        return exchanges, page

    def reset(self, pair: tuple[int, int] | None) -> asyncio.Task[None] | None:
        """Mirror ``pair`` from now on: a new generation, the queue and the pairs kept so
        far emptied and their bytes released, the counters zeroed. Returns the task that
        was sending copies, for the caller to cancel."""
        with self._lock:
            self.pair = pair
            self.generation += 1
            while self.queue:
                self._release(self.queue.popleft())
            self._budget.give(sum(e.cost for e in self._pairs))
            self._pairs.clear()
            self._dropped = self._green_errors = self._over_bytes = 0
            task, self.task = self.task, None
        return task

    def idle(self) -> bool:
        with self._lock:
            return not self.percent and not self._pairs and not self.queue and self.task is None
