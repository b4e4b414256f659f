"""The weighted data plane: a lean HTTP/1.1 reverse proxy in front of a deployment's slots.

The hot path is bare asyncio streams on uvloop: the request head is split by hand, the
body is passed through unparsed, and upstream connections are kept alive in a small
pool per slot. No framework and no per-request client object: every added microsecond
here is added to every inference.

``POST /v2/models/{deployment}/infer`` goes to the slot the weights pick (smooth
weighted round-robin: exact shares, deterministic order) and the response carries
``x-bgserve-slot`` and ``x-bgserve-release``. Other ``/v2/models/{deployment}...``
requests (ready, metadata) go to the deployment's heaviest slot. The route table is one
immutable object per deployment, swapped whole by :meth:`Router.set_routes` from any
thread; a request keeps the slot it picked even if the table changes under it.

Hung and dead slots: a new upstream connection must open within ``connect_timeout`` and
the answer's head must arrive within ``first_byte_timeout``. A refused connection, or a
first-byte timeout (nothing has reached the client yet), is retried once on another
weighted slot, so a client waits at most ``2 * (connect_timeout + first_byte_timeout)``
before its first byte; :mod:`bgserve.backends.local.outliers` ejects a failing slot.

With a ``data_token``, every request but ``/v2/health/*`` needs ``Authorization: Bearer
<token>`` (compared in constant time) or gets a 401.

In production the router runs in a process of its own
(:mod:`bgserve.backends.local.dataplane`), so nothing the control plane does can hold
its GIL.

HTTP/1.1 parsing and relaying live in :mod:`bgserve.backends.local.http1`, the per-slot
keep-alive connection pools in :mod:`bgserve.backends.local.upstream`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import socket
import threading
import time
from typing import TypedDict

import uvloop

from bgserve.backends.local.http1 import (
    HEAD_LIMIT,
    BadRequest,
    ProxyError,
    Request,
    UpstreamTimeout,
    error_response,
    json_response,
    read_request,
    relay_response,
)
from bgserve.backends.local.outliers import EventCallback, Outliers
from bgserve.backends.local.route_table import RouteTarget, Table, weighted_schedule
from bgserve.backends.local.upstream import Conn, Pool
from bgserve.domain.latency import BUCKETS, bucket_of

# A slot's counters: requests, errors, retries, then the latency histogram's buckets.
_FIRST_BUCKET = 3

__all__ = ["RouteTarget", "Router", "RouterStats", "SlotStats", "weighted_schedule"]


class SlotStats(TypedDict):
    """Counters of one (deployment, slot role, release) since the router started."""

    deployment: str
    role: str
    release_id: int
    requests: int
    errors: int
    retries: int
    latency_buckets: list[int]  # answered requests per bucket of domain.latency


class RouterStats(TypedDict):
    """A snapshot of :meth:`Router.stats`; ``unrouted`` counts unknown deployments and paths."""

    slots: list[SlotStats]
    unrouted: int


class Router:
    """The weighted OIP v2 reverse proxy, on its own thread and uvloop event loop.

    ``start`` binds and returns the port; ``set_routes``, ``mark_down`` and ``mark_up``
    may be called from any thread at any time; ``stop`` closes every connection and joins
    the thread.

    With ``breaker`` on, passive outlier detection runs: a slot that refuses a connection,
    or fails ``outlier_failures`` times in a row, is marked down at once (its share goes
    to the healthy slots), reported to ``on_event`` and probed every ``probe_interval``
    seconds until it answers ready again or leaves the route table.
    """

    def __init__(
        self,
        *,
        upstream_timeout: float = 300.0,
        connect_timeout: float = 1.0,
        first_byte_timeout: float | None = 10.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        idle_timeout: float = 75.0,
        breaker: bool = False,
        probe_interval: float = 0.1,
        outlier_failures: int = 3,
        data_token: str | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self._upstream_timeout = upstream_timeout
        self._connect_timeout = connect_timeout
        self._first_byte_timeout = first_byte_timeout
        self._max_body = max_body_bytes
        self._idle_timeout = idle_timeout
        self._breaker = breaker
        self._token = data_token.encode() if data_token else None
        self._down: set[tuple[str, int]] = set()
        self._outliers = Outliers(
            threshold=outlier_failures if breaker else 0,
            probe_interval=probe_interval,
            mark_down=self.mark_down,
            mark_up=self.mark_up,
            is_down=self.is_down,
            spare=self._others_healthy,
            on_event=on_event,
        )
        self._tables: dict[bytes, Table] = {}
        self._counters: dict[tuple[str, str, int], list[int]] = {}
        self._unrouted = [0]
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, int], Pool] = {}
        self._clients: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ----- control, from any thread -----

    def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> int:
        """Bind ``host:port`` (0 picks a free port), or serve the listening ``sock`` given;
        return the bound port.

        Raises OSError if the address cannot be bound, RuntimeError if already started.
        """
        if self._thread is not None:
            raise RuntimeError("the router is already running")
        bound: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(host, port, sock, bound), name="bgserve-router", daemon=True
        )
        self._thread.start()
        try:
            self.port = bound.result(timeout=30)
        except BaseException:
            self._thread.join(5)
            self._thread = None
            raise
        return self.port

    def stop(self) -> None:
        """Close the listener, every client and upstream connection; join the thread.

        Idempotent.
        """
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._thread = None
        self._loop = None

    def set_routes(self, deployment: str, routes: list[RouteTarget]) -> None:
        """Replace the deployment's routes atomically. Raises ValueError on a negative weight."""
        if any(r.weight < 0 for r in routes):
            raise ValueError(f"negative weight in routes of {deployment}: {routes}")
        with self._lock:
            counters = [self._counter(deployment, r) for r in routes]
            table = Table(deployment, tuple(routes), counters, self._down)
            self._tables = {**self._tables, deployment.encode(): table}
        self._schedule_prune()

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment`` (its requests get 404). Idempotent."""
        with self._lock:
            tables = dict(self._tables)
            tables.pop(deployment.encode(), None)
            self._tables = tables
        self._schedule_prune()

    def mark_down(self, host: str, port: int) -> bool:
        """Stop routing to the slot at ``host:port`` until :meth:`mark_up`. Idempotent.

        Returns True if it was up. Stored weights are not touched: the schedule of every
        deployment using the slot is rebuilt from the healthy targets' weights.
        """
        with self._lock:
            if (host, port) in self._down:
                return False
            self._down.add((host, port))
            self._rebuild_locked((host, port))
        return True

    def mark_up(self, host: str, port: int) -> None:
        """Route to the slot at ``host:port`` again by its weights. Idempotent."""
        with self._lock:
            if (host, port) in self._down:
                self._down.discard((host, port))
                self._rebuild_locked((host, port))

    def probe_back(self, host: str, port: int) -> None:
        """Mark the slot down and probe it until it answers ready (an ejection handed over
        from an earlier data-plane process). Call after :meth:`start`."""
        self.mark_down(host, port)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._outliers.probe, (host, port))

    def is_down(self, host: str, port: int) -> bool:
        """Whether the slot at ``host:port`` is excluded from routing now."""
        return (host, port) in self._down

    def _others_healthy(self, address: tuple[str, int]) -> bool:
        """Whether every deployment routed to ``address`` has another healthy weighted slot."""
        for table in self._tables.values():
            for index, target in enumerate(table.targets):
                if target.address == address and table.alternative(index) is None:
                    return False
        return True

    def _rebuild_locked(self, address: tuple[str, int]) -> None:
        self._tables = {
            key: table.with_down(self._down) if address in table.addresses() else table
            for key, table in self._tables.items()
        }

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The deployment's current routes (empty if it is not routed)."""
        table = self._tables.get(deployment.encode())
        return list(table.targets) if table else []

    def stats(self) -> RouterStats:
        """Request, error and retry counts per (deployment, role, release) since start."""
        with self._lock:
            items = list(self._counters.items())
        slots: list[SlotStats] = [
            SlotStats(
                deployment=d,
                role=r,
                release_id=rel,
                requests=c[0],
                errors=c[1],
                retries=c[2],
                latency_buckets=c[_FIRST_BUCKET:],
            )
            for (d, r, rel), c in items
        ]
        return RouterStats(slots=slots, unrouted=self._unrouted[0])

    def _counter(self, deployment: str, route: RouteTarget) -> list[int]:
        key = (deployment, route.role, route.release_id)
        return self._counters.setdefault(key, [0] * (_FIRST_BUCKET + BUCKETS))

    def _schedule_prune(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed after the check
                loop.call_soon_threadsafe(self._prune_pools)

    # ----- the event loop thread -----

    def _run(
        self,
        host: str,
        port: int,
        sock: socket.socket | None,
        bound: concurrent.futures.Future[int],
    ) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        where = {"sock": sock} if sock is not None else {"host": host, "port": port}
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._serve_client, limit=HEAD_LIMIT, backlog=1024, **where)
            )
        except BaseException as exc:
            loop.close()
            bound.set_exception(exc)
            return
        self._loop = loop
        bound.set_result(int(server.sockets[0].getsockname()[1]))
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown(server))
            loop.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for writer in list(self._clients):
            writer.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _prune_pools(self) -> None:
        live = {(t.host, t.port) for table in self._tables.values() for t in table.targets}
        for key in [k for k in self._pools if k not in live]:
            self._pools.pop(key).close()
        with self._lock:
            self._down &= live

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._clients.add(writer)
        try:
            keep = True
            while keep:
                async with asyncio.timeout(self._idle_timeout):
                    request = await read_request(reader, writer, self._max_body)
                if request is None:
                    break
                keep = await self._dispatch(request, writer)
                await writer.drain()
        except BadRequest as exc:
            writer.write(error_response(exc.status, exc.message, keep=False))
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _dispatch(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        path = request.target.partition(b"?")[0]
        keep = request.keep_alive
        if self._token is not None and not self._authorized(path, request):
            message = "this data plane needs its token: send Authorization: Bearer <token>"
            writer.write(json_response(401, "Unauthorized", {"error": message}, keep))
            return keep
        if path.startswith(b"/v2/models/"):
            name, _, tail = path[11:].partition(b"/")
            table = self._tables.get(name)
            if table is None:
                self._unrouted[0] += 1
                message = f"deployment {name.decode(errors='replace')!r} is not served here"
                writer.write(error_response(404, message, keep))
                return keep
            infer = tail.endswith(b"infer")
            index = table.pick() if infer else table.primary
            if index is None:
                message = f"deployment {table.deployment!r} has no slot with traffic weight"
                if table.all_down:
                    message = f"every slot of {table.deployment!r} with traffic weight is down"
                writer.write(error_response(503, message, keep))
                return keep
            return await self._proxy(request, writer, table, index, count=infer)
        if path in (b"/v2/health/ready", b"/v2/health/live"):
            writer.write(json_response(200, "OK", {"ready": True, "live": True}, keep))
            return keep
        self._unrouted[0] += 1
        writer.write(error_response(404, f"no route for {path.decode(errors='replace')}", keep))
        return keep

    def _authorized(self, path: bytes, request: Request) -> bool:
        if path.startswith(b"/v2/health/"):
            return True
        return self._token is not None and _bearer_matches(request.upstream_head, self._token)

    async def _proxy(
        self,
        request: Request,
        writer: asyncio.StreamWriter,
        table: Table,
        index: int,
        *,
        count: bool,
    ) -> bool:
        retry = True  # one retry per request, on a refused connect or a first-byte timeout
        started = time.perf_counter()
        while True:
            try:
                index, conn, pool, retry = await self._connect(table, index, retry)
            except ProxyError as exc:
                if count:
                    table.counters[index][1] += 1
                writer.write(error_response(exc.status, exc.message, request.keep_alive))
                return request.keep_alive
            counters = table.counters[index]
            if count:
                counters[0] += 1
            target = table.targets[index]
            try:
                async with asyncio.timeout(self._upstream_timeout):
                    status, keep, reusable = await relay_response(
                        request,
                        conn,
                        writer,
                        table.extra_headers[index],
                        head_timeout=self._first_byte_timeout,
                    )
            except UpstreamTimeout as exc:
                counters[1] += 1
                conn.close()
                self._outliers.failed(target.address, exc.message)
                other = table.alternative(index) if retry and not exc.response_started else None
                if other is None:
                    writer.write(error_response(504, f"{target.role} slot: {exc.message}", False))
                    return False
                counters[2] += 1
                index, retry = other, False
                continue
            except (ProxyError, TimeoutError) as exc:
                counters[1] += 1
                conn.close()
                self._answer_failure(exc, target, writer)
                return False
            except BaseException:
                conn.close()  # the client went away mid-answer
                raise
            self._outliers.succeeded(target.address)
            if count:
                latency_ms = (time.perf_counter() - started) * 1000.0
                counters[_FIRST_BUCKET + bucket_of(latency_ms)] += 1
                if status >= 500:
                    counters[1] += 1
            pool.release(conn, reusable)
            return keep

    def _answer_failure(
        self, exc: ProxyError | TimeoutError, target: RouteTarget, writer: asyncio.StreamWriter
    ) -> None:
        if isinstance(exc, TimeoutError):
            message = f"did not answer within {self._upstream_timeout}s"
            self._outliers.failed(target.address, message)
            writer.write(error_response(504, f"{target.role} slot {message}", False))
            return
        self._outliers.failed(target.address, exc.message)
        if not exc.response_started:
            writer.write(error_response(exc.status, f"{target.role} slot: {exc.message}", False))

    async def _connect(self, table: Table, index: int, retry: bool) -> tuple[int, Conn, Pool, bool]:
        """A connection to the picked slot, or to one other weighted slot if it fails.

        Nothing has been sent when a connect fails, so the retry cannot run a request
        twice. Returns (slot index, connection, its pool, whether a retry is left).
        """
        try:
            pool = self._pool(table.targets[index])
            return index, await pool.acquire(self._connect_timeout), pool, retry
        except OSError as first:
            table.counters[index][2] += 1
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

    def _pool(self, target: RouteTarget) -> Pool:
        key = (target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(target.host, target.port)
        return pool


def _bearer_matches(head: bytes, token: bytes) -> bool:
    """Whether the head carries exactly one ``Authorization: Bearer <token>``."""
    found = [
        value
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if name.strip().lower() == b"authorization"
    ]
    if len(found) != 1:
        return False
    scheme, _, credential = found[0].strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), token)
