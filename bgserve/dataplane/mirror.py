"""Shadow traffic: copies of the requests blue answered, sent to green, answers paired.

The client never waits for green. A request picked for mirroring is forwarded to blue as
any other, through a :class:`Capture` that keeps a copy of what reaches the client, and
its copy joins a bounded queue per deployment, which one task per deployment empties
towards green's slot (its keep-alive pool, header ``x-bgserve-shadow: 1``). The copy
leaves beside the live call, once blue has the request: the loop sends it and reads
green's answer while it would otherwise wait for blue (sent after blue's answer, the
exchange met the client's next request and cost it up to 0.17 ms at p50). A pair is
kept only once blue answered with a 2xx. A full queue drops the copy; green's failures
and timeouts (the first-byte timeout, then the whole-answer one) are counted, never
raised. Answers wait as raw bytes in a bounded buffer until :meth:`Mirror.drain` parses
them into pairs, so the loop that answers clients does no more per copy than send it
and read green's answer; the oldest beyond the bound are dropped and counted. Pairs are
never logged.

Which requests are mirrored is deterministic: an accumulator adds ``percent`` per request
blue is picked for and mirrors when it reaches 100, so 100% mirrors every one and 25%
exactly every fourth.

Memory is bounded in bytes, across every deployment (:class:`ShadowBudget`): a queued copy
counts its whole request body, a kept pair its bodies cut at the pair's cap; a copy that
does not fit is dropped and counted. A large body goes to green a slice at a time, so the
socket's buffer never holds a second copy of it.

Each copy belongs to the blue/green pair routed when :meth:`Mirror.configure` started
mirroring, and to that run of mirroring: stopping, or another pair, empties the queue and
the pairs not drained yet and cancels the copy in flight; a copy is never sent to a green
other than the one it was taken for, and the freed memory is handed back to the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bgserve.dataplane.http1 import HEAD_LIMIT, ProxyError, Request
from bgserve.dataplane.http1_errors import READ_SIZE
from bgserve.dataplane.http1_relay import ResponseReader
from bgserve.dataplane.openai_api import assembled
from bgserve.dataplane.route_state import RouteState
from bgserve.dataplane.route_table import Table
from bgserve.dataplane.shadow_state import Capture, Exchange, Job, Shadow, ShadowBudget
from bgserve.dataplane.upstream import Conn, Pool
from bgserve.dataplane.wire import (
    BODY_CAP,
    SHADOW_MAX_BYTES,
    RouteTarget,
    ShadowPage,
    ShadowUsage,
)

MAX_PAIRS = 1000
SHADOW_HEADER = b"x-bgserve-shadow: 1\r\n"
SEND_SLICE = 256 * 1024
"""A body larger than this goes to green in slices of it, each sent before the next."""
Forward = Callable[..., Awaitable[bool]]


class Mirror:
    """Every deployment's :class:`Shadow`, and the task that sends their copies to green.

    :meth:`configure` and :meth:`drain` may be called from any thread; the rest runs on
    the router's loop. ``active`` (deployments mirroring now) is replaced whole, so the
    loop reads it without a lock.
    """

    def __init__(
        self,
        state: RouteState,
        pool: Callable[[RouteTarget], Pool],
        *,
        connect_timeout: float,
        upstream_timeout: float,
        max_pairs: int = MAX_PAIRS,
        body_cap: int = BODY_CAP,
        max_bytes: int = SHADOW_MAX_BYTES,
    ) -> None:
        self._state = state
        self._pool = pool
        self._connect_timeout = connect_timeout
        self._upstream_timeout = upstream_timeout
        self._max_pairs = max_pairs
        self._body_cap = body_cap
        self._budget = ShadowBudget(max_bytes)
        self._lock = threading.Lock()
        self._shadows: dict[str, Shadow] = {}
        self.active: dict[bytes, Shadow] = {}

    # ----- control, from any thread -----

    def configure(self, deployment: str, percent: int, max_queue: int) -> None:
        """Mirror ``percent`` of blue's infer requests through a queue of ``max_queue``,
        for the blue and green releases routed now.

        Idempotent. 0 stops: the copies queued and the pairs not drained yet are
        discarded, as they are when the routed pair is not the one mirrored so far.
        Raises ValueError for a percent outside 0-100, a queue bound below 1, or (to
        mirror) no blue and green route.
        """
        if not 0 <= percent <= 100 or max_queue < 1:
            raise ValueError(f"shadow percent must be 0-100 and max_queue 1 or more: {percent}")
        pair = self._routed_pair(deployment) if percent else None
        if percent and pair is None:
            raise ValueError(f"deployment {deployment!r} has no blue and green route to mirror")
        task = None
        with self._lock:
            shadow = self._shadows.get(deployment)
            if shadow is None:
                shadow = Shadow(deployment, self._max_pairs, self._budget)
                self._shadows[deployment] = shadow
            shadow.percent, shadow.max_queue = percent, max_queue
            if pair != shadow.pair or not percent:
                task = shadow.reset(pair)
            active = dict(self.active)
            if percent:
                active[shadow.key] = shadow
            else:
                active.pop(shadow.key, None)
                del self._shadows[deployment]
            self.active = active
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: nothing runs it
                task.get_loop().call_soon_threadsafe(task.cancel)
        elif not percent:
            release_memory()

    def usage(self) -> ShadowUsage:
        """The bytes shadow traffic holds now, the most it held, and the bound."""
        return self._budget.usage()

    def _routed_pair(self, deployment: str) -> tuple[int, int] | None:
        table = self._state.tables.get(deployment.encode())
        if table is None:
            return None
        blue = next((t for t in table.targets if t.role == "blue"), None)
        green = _green(table)
        return None if blue is None or green is None else (blue.release_id, green.release_id)

    def drain(self, deployment: str, limit: int) -> ShadowPage:
        """Up to ``limit`` pairs and the counters collected since the previous drain, as
        JSON-ready data; ``more`` says pairs remain."""
        with self._lock:
            shadow = self._shadows.get(deployment)
        if shadow is None:
            return {"pairs": [], "dropped": 0, "green_errors": 0, "more": False}
        exchanges, page = shadow.take(limit)
        page["pairs"] = [self._pair(exchange) for exchange in exchanges]
        with self._lock:
            if shadow.idle() and self._shadows.get(deployment) is shadow:
                del self._shadows[deployment]
        return page

    # ----- the router's loop -----

    async def forward(
        self,
        shadow: Shadow,
        forward: Forward,
        request: Request,
        writer: asyncio.StreamWriter,
        table: Table,
        index: int,
        **options: Any,
    ) -> bool:
        """Forward ``request`` to blue through a capture, its copy queued for green beside
        it: the copy leaves once blue has the request, while the loop waits for blue.
        ``options`` go to ``forward`` as they are."""
        pair = shadow.pair
        green = _green(table)
        if (
            pair is None
            or green is None
            or pair != (table.targets[index].release_id, green.release_id)
        ):
            # The routes moved on from the pair mirrored: its copies would be another's.
            return bool(await forward(request, writer, table, index, count=True, **options))
        capture = Capture(writer, self._body_cap + HEAD_LIMIT)
        loop = asyncio.get_running_loop()
        cost = len(request.upstream_head) + len(request.body) + capture.cap
        done = loop.create_future()
        extra = table.extra_headers[index]
        job = Job(request, capture.chunks, extra, done, *pair, shadow.generation, cost)
        if not shadow.enqueue(job):
            return bool(await forward(request, writer, table, index, count=True, **options))
        if shadow.task is None:
            shadow.task = loop.create_task(self._work(shadow))
        started = time.perf_counter()
        try:
            keep: bool = await forward(request, capture, table, index, count=True, **options)
            job.relayed = True
        finally:
            job.blue_ms = (time.perf_counter() - started) * 1000.0
            job.answer_capped = capture.size >= capture.cap
            job.blue_done.set_result(None)
        return keep

    async def _work(self, shadow: Shadow) -> None:
        try:
            while (job := shadow.next_job()) is not None:
                try:
                    await self._send(shadow, job)
                finally:
                    shadow.release(job)
        finally:
            if shadow.task is asyncio.current_task():
                shadow.task = None
            if not shadow.percent:
                release_memory()

    async def _send(self, shadow: Shadow, job: Job) -> None:
        table = self._state.tables.get(shadow.key)
        green = _green(table)
        if job.generation != shadow.generation:
            return  # mirroring stopped or moved to another pair since it was queued
        if green is None or green.release_id != job.green_release:
            shadow.drop()  # its green is gone: another green never gets it
            return
        started = time.perf_counter()
        body: bytes | None = None
        error: str | None = None
        try:
            first_byte = table.timeouts.first_byte if table is not None else None
            status, body = await self._call(green, job.request, first_byte)
            if status >= 400:
                error = f"green answered HTTP {status}"
        except TimeoutError:
            error = "green did not answer in time"
        except (OSError, ProxyError, ValueError) as exc:
            error = f"green failed: {exc}"
        green_ms = (time.perf_counter() - started) * 1000.0
        await job.blue_done
        if not job.relayed or not _blue_answered(job.answer, job.blue_extra):
            return  # blue did not answer it (a retry went elsewhere, an error, the client left)
        cap = self._body_cap
        sent = job.request.body
        cut = job.answer_capped or len(sent) > cap or (body is not None and len(body) > cap)
        exchange = Exchange(
            sent[:cap],
            job.answer,
            None if body is None else body[: cap + 1],
            error,
            job.blue_ms,
            green_ms,
            cut,
            job.blue_release,
            job.green_release,
        )
        shadow.add(job, exchange)

    def _pair(self, exchange: Exchange) -> dict[str, Any]:
        blue = _blue_answer(exchange.answer)
        green, error = exchange.green, exchange.error
        cap = self._body_cap
        cut = exchange.truncated or len(blue) > cap
        return {
            "request_id": uuid.uuid4().hex,
            "request_body": _text(exchange.request_body, cap),
            "blue_body": _text(assembled(blue), cap),
            "green_body": None if green is None else _text(assembled(green), cap),
            "green_error": error,
            "blue_ms": exchange.blue_ms,
            "green_ms": None if error is not None and green is None else exchange.green_ms,
            "truncated": cut,
            "blue_release": exchange.blue_release,
            "green_release": exchange.green_release,
        }

    async def _call(
        self, target: RouteTarget, request: Request, first_byte: float | None
    ) -> tuple[int, bytes]:
        """Send ``request`` to the slot, marked as a copy, and read its whole answer (the
        body cut at the cap)."""
        pool = self._pool(target)
        async with asyncio.timeout(self._upstream_timeout):
            conn = await pool.acquire(self._connect_timeout)
            reusable = False
            try:
                status, body, reusable = await self._exchange(conn, request, first_byte)
            finally:
                pool.release(conn, reusable)
        return status, body

    async def _exchange(
        self, conn: Conn, request: Request, first_byte: float | None
    ) -> tuple[int, bytes, bool]:
        await _send_request(conn.writer, request)
        response = conn.response
        if response is None:
            response = conn.response = ResponseReader()
        else:
            response.start()
        async with asyncio.timeout(first_byte):
            while not response.head_done:
                await _feed(conn, response)
        until_eof = response.length is None and not response.chunked
        pieces: list[bytes] = []
        size = 0
        while True:
            for piece in response.take_body():
                if size <= self._body_cap:
                    pieces.append(piece)
                    size += len(piece)
            if response.done or (until_eof and conn.reader.at_eof()):
                break
            await _feed(conn, response, until_eof=until_eof)
        reusable = response.done and response.keep and not response.extra and not until_eof
        return response.status, b"".join(pieces), reusable


async def _feed(conn: Conn, response: ResponseReader, *, until_eof: bool = False) -> None:
    data = await conn.reader.read(READ_SIZE)
    if data:
        response.feed(data)
    elif not until_eof:
        raise ProxyError(502, "the connection closed before the answer ended")


def _green(table: Table | None) -> RouteTarget | None:
    if table is None:
        return None
    return next((t for t in table.targets if t.role == "green"), None)


async def _send_request(writer: asyncio.StreamWriter, request: Request) -> None:
    """Write the request for green: its head ends with ``\\r\\n\\r\\n``, the marker goes
    before. A large body goes a slice at a time, each once the socket took the one before,
    so the transport's buffer never copies the whole body."""
    head = request.upstream_head[:-2] + SHADOW_HEADER + b"\r\n"
    body = request.body
    if len(body) <= SEND_SLICE:
        writer.write(head + body)
        return
    writer.write(head)
    view = memoryview(body)
    for start in range(0, len(body), SEND_SLICE):
        writer.write(view[start : start + SEND_SLICE])
        await writer.drain()


def release_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``), so the
    memory mirroring held is seen to go; a no-op where there is no such call."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def _blue_answered(answer: list[bytes], blue_extra: bytes) -> bool:
    """Whether blue answered what the client got, with a 2xx."""
    raw = answer[0] if len(answer) == 1 else b"".join(answer)
    end = raw.find(b"\r\n\r\n")
    return end >= 0 and raw.startswith(b"HTTP/1.1 2") and blue_extra in raw[: end + 4]


def _blue_answer(answer: list[bytes]) -> bytes:
    """Blue's body from what the client got (checked by :func:`_blue_answered`)."""
    raw = b"".join(answer)
    reader = ResponseReader()
    # A capture cut at its bound fails to parse: the body so far is what the pair keeps.
    with contextlib.suppress(ProxyError):
        reader.feed(raw)
    return b"".join(reader.take_body())


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")
