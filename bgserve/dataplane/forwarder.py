"""Forwarding one request to a slot: the router's upstream side, on its event loop.

A new upstream connection must open within ``connect_timeout`` and the answer's head
must arrive within the deployment's first-byte timeout (its table's
:class:`~bgserve.dataplane.route_table.Timeouts`); once the answer began, its body may
pause at most the deployment's idle timeout between two pieces. A refused connection,
or a first-byte timeout (nothing has reached the client yet), is retried once on
another weighted slot, so a client waits at most ``2 * (connect_timeout + first byte)``
before its first byte; a body that stalls is cut (the client sees an incomplete answer)
and counts as a failure of the slot. Every outcome is counted on the table's counters
and reported to :class:`~bgserve.dataplane.outliers.Outliers`; a chat completion's
:class:`~bgserve.dataplane.stream_meter.StreamMeter` figures go to its stream counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bgserve.dataplane.http1 import ProxyError, Request, UpstreamTimeout, error_response
from bgserve.dataplane.http1_relay import relay_response
from bgserve.dataplane.outliers import Outliers
from bgserve.dataplane.route_table import Table
from bgserve.dataplane.stream_meter import StreamMeter, record
from bgserve.dataplane.upstream import Conn, Pool
from bgserve.dataplane.wire import RouteTarget
from bgserve.domain.latency import bucket_of

ErrorAnswer = Callable[[int, str, bool], bytes]
"""``(status, message, keep) -> response bytes``: the error shape of the request's API."""


class Forwarder:
    """Relays requests to slots over per-slot keep-alive pools; event loop only.

    With ``breaker`` on, a refused connection ejects the slot at once.
    """

    def __init__(
        self,
        outliers: Outliers,
        *,
        upstream_timeout: float,
        connect_timeout: float,
        breaker: bool,
    ) -> None:
        self._outliers = outliers
        self._upstream_timeout = upstream_timeout
        self._connect_timeout = connect_timeout
        self._breaker = breaker
        self._pools: dict[tuple[str, int], Pool] = {}

    async def forward(
        self,
        request: Request,
        writer: asyncio.StreamWriter,
        table: Table,
        index: int,
        *,
        count: bool,
        meter: StreamMeter | None = None,
        errors: ErrorAnswer = error_response,
    ) -> bool:
        """Relay ``request`` to slot ``index`` of ``table`` and its answer to ``writer``.

        Writes an error answer itself (shaped by ``errors``) when no slot answers; with a
        ``meter``, the answer's streaming figures are added to the slot's stream counters.
        Returns whether the client connection may be kept alive. Raises only what writing
        to the client raises.
        """
        retry = True  # one retry per request, on a refused connect or a first-byte timeout
        started = time.perf_counter()
        timeouts = table.timeouts
        while True:
            pool = self._pool(table.targets[index])
            conn = pool.take_idle()
            if conn is None:
                try:
                    index, conn, pool, retry = await self._connect(table, index, retry)
                except ProxyError as exc:
                    if count:
                        table.counters[index].errors += 1
                    writer.write(errors(exc.status, exc.message, request.keep_alive))
                    return request.keep_alive
            counters = table.counters[index]
            if count:
                counters.requests += 1
            target = table.targets[index]
            if meter is not None:
                meter.started = started
            try:
                status, keep, reusable = await relay_response(
                    request,
                    conn,
                    writer,
                    table.extra_headers[index],
                    head_timeout=timeouts.first_byte,
                    idle_timeout=timeouts.idle,
                    meter=meter,
                    timeout=self._upstream_timeout,
                )
            except UpstreamTimeout as exc:
                counters.errors += 1
                conn.close()
                self._outliers.failed(target.address, exc.message)
                other = table.alternative(index) if retry and not exc.response_started else None
                if other is None:
                    writer.write(errors(504, f"{target.role} slot: {exc.message}", False))
                    return False
                counters.retries += 1
                index, retry = other, False
                continue
            except (ProxyError, TimeoutError) as exc:
                counters.errors += 1
                conn.close()
                self._answer_failure(exc, target, writer, errors)
                return False
            except BaseException:
                conn.close()  # the client went away mid-answer
                raise
            self._outliers.succeeded(target.address)
            if count:
                latency_ms = (time.perf_counter() - started) * 1000.0
                counters.latency_buckets[bucket_of(latency_ms)] += 1
                if status >= 500:
                    counters.errors += 1
                elif meter is not None and status < 300:
                    record(table.streams[index], meter)
            pool.release(conn, reusable)
            return keep

    def prune(self, live: set[tuple[str, int]]) -> None:
        """Close the pools of slots no longer routed to."""
        for key in [k for k in self._pools if k not in live]:
            self._pools.pop(key).close()

    def close(self) -> None:
        """Close every pooled upstream connection."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _answer_failure(
        self,
        exc: ProxyError | TimeoutError,
        target: RouteTarget,
        writer: asyncio.StreamWriter,
        errors: ErrorAnswer,
    ) -> None:
        if isinstance(exc, TimeoutError):
            message = f"did not answer within {self._upstream_timeout}s"
            self._outliers.failed(target.address, message)
            writer.write(errors(504, f"{target.role} slot {message}", False))
            return
        self._outliers.failed(target.address, exc.message)
        if not exc.response_started:
            writer.write(errors(exc.status, f"{target.role} slot: {exc.message}", False))

    async def _connect(self, table: Table, index: int, retry: bool) -> tuple[int, Conn, Pool, bool]:
        """A new connection to the picked slot (its pool had no idle one), or to one other
        weighted slot if it fails.

        Nothing has been sent when a connect fails, so the retry cannot run a request
        twice. Returns (slot index, connection, its pool, whether a retry is left).
        """
        try:
            pool = self._pool(table.targets[index])
            return index, await pool.acquire(self._connect_timeout), pool, retry
        except OSError as first:
            table.counters[index].retries += 1
            self._connect_failed(table.targets[index], first)
            other = table.alternative(index) if retry else None
            if other is None:
                message = f"{table.targets[index].role} slot is unreachable: {first!r}"
                raise ProxyError(502, message) from first
        try:
            pool = self._pool(table.targets[other])
            return other, await pool.acquire(self._connect_timeout), pool, False
        except OSError as second:
            self._connect_failed(table.targets[other], second)
            message = f"no slot of {table.deployment!r} is reachable: {second!r}"
            raise ProxyError(502, message) from second

    def _connect_failed(self, target: RouteTarget, exc: OSError) -> None:
        """A timeout counts as one failure; a refusal means nothing listens: eject now."""
        if isinstance(exc, TimeoutError):
            self._outliers.failed(target.address, f"no connection within {self._connect_timeout}s")
        elif self._breaker:
            self._outliers.eject(target.address, f"connection failed: {exc!r}")

    def pool(self, target: RouteTarget) -> Pool:
        """The keep-alive pool of the slot ``target`` names (made on first use)."""
        return self._pool(target)

    def _pool(self, target: RouteTarget) -> Pool:
        key = (target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(target.host, target.port)
        return pool
