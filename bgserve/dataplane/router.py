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

``POST /openai/v1/chat/completions`` and ``POST /v1/chat/completions`` (KServe's and
OpenAI's paths) go to the slot's ``/openai/v1/chat/completions`` exactly as an infer
request goes to its slot: ``model`` in the JSON body names the deployment, the OpenAI
``user`` field is the sticky key when the sticky header is absent, and the answer,
streamed or not, is relayed as it arrives and measured on the way
(:mod:`~bgserve.dataplane.stream_meter`). ``GET /openai/v1/models`` lists the
deployments; errors on these paths are in OpenAI's shape
(:mod:`~bgserve.dataplane.openai_api`). How long the router waits for a deployment's
slots is set per deployment (:meth:`Router.set_timeouts`).

With a ``data_token``, every request but ``/v2/health/*`` needs ``Authorization: Bearer
<token>`` (compared in constant time) or gets a 401. In production the router runs in a
process of its own (:mod:`bgserve.dataplane.main`), so nothing the control
plane does can hold its GIL.

Where the rest lives: the control methods (:class:`~bgserve.dataplane.wire.DataPlaneControl`)
and the types they carry in :mod:`~bgserve.dataplane.wire`; HTTP/1.1 parsing in
:mod:`~bgserve.dataplane.http1` and relaying in :mod:`~bgserve.dataplane.http1_relay`;
route tables, down set and counters in :mod:`~bgserve.dataplane.route_state`;
forwarding to a slot (one retry on a refused connect or a first-byte timeout, keep-alive
pools) in :mod:`~bgserve.dataplane.forwarder`; ejecting failing slots in
:mod:`~bgserve.dataplane.outliers`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import uvloop

from bgserve.dataplane.forwarder import Forwarder
from bgserve.dataplane.http1 import (
    HEAD_LIMIT,
    BadRequest,
    Request,
    error_response,
    json_response,
    openai_error_response,
    read_request,
)
from bgserve.dataplane.mirror import Mirror
from bgserve.dataplane.openai_api import (
    CHAT_PATHS,
    MODELS_PATHS,
    OpenAIError,
    chat_call,
    for_slot,
    models_response,
    unknown_model,
)
from bgserve.dataplane.outliers import EventCallback, Outliers
from bgserve.dataplane.route_state import RouteState
from bgserve.dataplane.route_table import Table, Timeouts, weighted_schedule
from bgserve.dataplane.stream_meter import StreamMeter
from bgserve.dataplane.wire import (
    DataPlaneControl,
    RouterStats,
    RouteTarget,
    ShadowPage,
    SlotStats,
)

__all__ = ["RouteTarget", "Router", "RouterStats", "SlotStats", "Timeouts", "weighted_schedule"]


class Router:
    """The weighted OIP v2 reverse proxy, on its own thread and uvloop event loop.

    ``start`` binds and returns the port; ``set_routes``, ``mark_down`` and ``mark_up``
    may be called from any thread at any time; ``stop`` closes every connection and joins
    the thread.

    With ``breaker`` on, passive outlier detection runs: a slot that refuses a connection,
    or fails ``outlier_failures`` times in a row, is marked down at once (its share goes
    to the healthy slots), reported to ``on_event`` and probed every ``probe_interval``
    seconds until it answers ready again or leaves the route table.

    An infer request carrying ``sticky_header`` (None turns it off) goes to its key's slot:
    green iff the key's stable bucket 0..99 is below green's weight, so a key only ever
    moves blue to green as that weight rises. ``shadows`` (``{deployment: [percent,
    max_queue]}``) starts mirroring as :meth:`set_shadow` would
    (:mod:`~bgserve.dataplane.mirror`). ``first_byte_timeout`` and ``stream_idle_timeout``
    are every deployment's timeouts until :meth:`set_timeouts` gives it its own.
    """

    def __init__(
        self,
        *,
        upstream_timeout: float = 300.0,
        connect_timeout: float = 1.0,
        first_byte_timeout: float | None = 10.0,
        stream_idle_timeout: float | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        idle_timeout: float = 75.0,
        breaker: bool = False,
        probe_interval: float = 0.1,
        outlier_failures: int = 3,
        data_token: str | None = None,
        on_event: EventCallback | None = None,
        sticky_header: str | None = "x-bgserve-key",
        shadows: dict[str, list[int]] | None = None,
    ) -> None:
        self._idle_timeout = idle_timeout
        self._max_body = max_body_bytes
        self._token = data_token.encode() if data_token else None
        self._state = state = RouteState(Timeouts(first_byte_timeout, stream_idle_timeout))
        self._unrouted = state.unrouted  # the same list, never replaced
        self._outliers = Outliers(
            threshold=outlier_failures if breaker else 0,
            probe_interval=probe_interval,
            mark_down=state.mark_down,
            mark_up=state.mark_up,
            is_down=state.is_down,
            spare=state.others_healthy,
            on_event=on_event,
        )
        self._forwarder = Forwarder(
            self._outliers,
            upstream_timeout=upstream_timeout,
            connect_timeout=connect_timeout,
            breaker=breaker,
        )
        self._forward = self._forwarder.forward  # bound once: no lookup per request
        self._mirror = Mirror(
            state,
            self._forwarder.pool,
            connect_timeout=connect_timeout,
            upstream_timeout=upstream_timeout,
        )
        for deployment, (percent, max_queue) in (shadows or {}).items():
            self._mirror.configure(deployment, percent, max_queue)
        self._sticky = b"\r\n%s:" % sticky_header.lower().encode() if sticky_header else None
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

    def set_routes(self, deployment: str, routes: Sequence[RouteTarget]) -> None:
        """Replace the deployment's routes atomically. Raises ValueError on a negative weight."""
        self._state.set_routes(deployment, routes)
        self._schedule_prune()

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment`` (its requests get 404). Idempotent."""
        self._state.remove_routes(deployment)
        self._schedule_prune()

    def set_timeouts(
        self, deployment: str, first_byte_s: float | None, idle_s: float | None
    ) -> None:
        """Wait at most ``first_byte_s`` seconds for an answer of the deployment's slots to
        begin (then retry once elsewhere) and ``idle_s`` seconds between two pieces of an
        answer's body (then cut it); None keeps the router's default. Applies to requests
        picked from now on and to later routes. Idempotent. Raises ValueError for a
        value that is not above 0."""
        self._state.set_timeouts(deployment, first_byte_s, idle_s)

    def timeouts(self, deployment: str) -> Timeouts:
        """The deployment's timeouts now."""
        return self._state.timeouts(deployment)

    def mark_down(self, host: str, port: int) -> bool:
        """Stop routing to the slot at ``host:port`` until :meth:`mark_up`. Idempotent.

        Returns True if it was up. Stored weights are not touched: the schedule of every
        deployment using the slot is rebuilt from the healthy targets' weights.
        """
        return self._state.mark_down(host, port)

    def mark_up(self, host: str, port: int) -> None:
        """Route to the slot at ``host:port`` again by its weights. Idempotent."""
        self._state.mark_up(host, port)

    def probe_back(self, host: str, port: int) -> None:
        """Mark the slot down and probe it until it answers ready (an ejection handed over
        from an earlier data-plane process). Call after :meth:`start`."""
        self.mark_down(host, port)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._outliers.probe, (host, port))

    def is_down(self, host: str, port: int) -> bool:
        """Whether the slot at ``host:port`` is excluded from routing now."""
        return self._state.is_down(host, port)

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The deployment's current routes (empty if it is not routed)."""
        return self._state.routes(deployment)

    def stats(self) -> RouterStats:
        """Request, error and retry counts per (deployment, role, release) since start."""
        return self._state.stats()

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of the infer requests blue answers to the
        green slot, through a queue of at most ``max_queue`` copies. Idempotent.

        Raises ValueError for a percent outside 0-100, a queue below 1, or (mirroring) a
        deployment with no green route.
        """
        if percent and not any(t.role == "green" for t in self.routes(deployment)):
            raise ValueError(f"deployment {deployment!r} has no green route to mirror to")
        self._mirror.configure(deployment, percent, max_queue)

    def shadow_pairs(self, deployment: str, limit: int = 100) -> ShadowPage:
        """Up to ``limit`` collected pairs and the counters since the previous call, as
        JSON-ready data."""
        return self._mirror.drain(deployment, limit)

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
        self._forwarder.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _prune_pools(self) -> None:
        live = self._state.addresses()
        self._forwarder.prune(live)
        self._state.forget_down(live)

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
            if path in CHAT_PATHS or path in MODELS_PATHS:
                writer.write(OpenAIError(401, message, code="invalid_api_key").response(keep))
            else:
                writer.write(json_response(401, "Unauthorized", {"error": message}, keep))
            return keep
        if path.startswith(b"/v2/models/"):
            name, _, tail = path[11:].partition(b"/")
            table = self._state.tables.get(name)
            if table is None:
                self._unrouted[0] += 1
                message = f"deployment {name.decode(errors='replace')!r} is not served here"
                writer.write(error_response(404, message, keep))
                return keep
            infer = tail.endswith(b"infer")
            index = self._pick(request, table) if infer else table.primary
            if index is None:
                message = f"deployment {table.deployment!r} has no slot with traffic weight"
                if table.all_down:
                    message = f"every slot of {table.deployment!r} with traffic weight is down"
                writer.write(error_response(503, message, keep))
                return keep
            shadows = self._mirror.active
            if shadows and infer and table.targets[index].role == "blue":
                shadow = shadows.get(name)
                if shadow is not None and shadow.select():
                    return await self._mirror.forward(
                        shadow, self._forward, request, writer, table, index
                    )
            return await self._forward(request, writer, table, index, count=infer)
        if path in (b"/v2/health/ready", b"/v2/health/live"):
            writer.write(json_response(200, "OK", {"ready": True, "live": True}, keep))
            return keep
        if path in CHAT_PATHS:
            try:
                return await self._chat(request, writer, path)
            except OpenAIError as exc:
                writer.write(exc.response(keep))
                return keep
        if path in MODELS_PATHS and request.method == b"GET":
            names = [t.deployment for t in self._state.tables.values()]
            writer.write(models_response(names, keep))
            return keep
        self._unrouted[0] += 1
        writer.write(error_response(404, f"no route for {path.decode(errors='replace')}", keep))
        return keep

    async def _chat(self, request: Request, writer: asyncio.StreamWriter, path: bytes) -> bool:
        """Route a chat completion as an infer request. Raises OpenAIError."""
        call = chat_call(request)
        table = self._state.tables.get(call.model)
        if table is None:
            self._unrouted[0] += 1
            raise unknown_model(call.model)
        index = self._pick(request, table, call.user if self._sticky is not None else None)
        if index is None:
            message = f"deployment {table.deployment!r} has no slot with traffic weight"
            if table.all_down:
                message = f"every slot of {table.deployment!r} with traffic weight is down"
            raise OpenAIError(503, message)
        upstream = for_slot(request, path)
        meter = StreamMeter(call.stream)
        shadows = self._mirror.active
        if shadows and table.targets[index].role == "blue":
            shadow = shadows.get(call.model)
            if shadow is not None and shadow.select():
                return await self._mirror.forward(
                    shadow,
                    self._forward,
                    upstream,
                    writer,
                    table,
                    index,
                    meter=meter,
                    errors=openai_error_response,
                )
        return await self._forward(
            upstream, writer, table, index, count=True, meter=meter, errors=openai_error_response
        )

    def _pick(self, request: Request, table: Table, fallback: bytes | None = None) -> int | None:
        """The sticky key's slot if the request carries the sticky header (else the
        ``fallback`` key's, if given), else the next one in the weighted round-robin."""
        needle = self._sticky
        if needle is not None:
            head = request.upstream_head
            at = head.lower().find(needle)
            if at >= 0:
                start = at + len(needle)
                key = head[start : head.find(b"\r\n", start)].strip()
                if key:
                    return table.pick_sticky(key)
        if fallback is not None:
            return table.pick_sticky(fallback)
        return table.pick()

    def _authorized(self, path: bytes, request: Request) -> bool:
        if path.startswith(b"/v2/health/"):
            return True
        return self._token is not None and _bearer_matches(request.upstream_head, self._token)


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


if TYPE_CHECKING:
    _control: type[DataPlaneControl] = Router
