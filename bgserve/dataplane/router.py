"""The weighted data plane: a lean HTTP/1.1 reverse proxy in front of a deployment's slots.

The hot path is bare asyncio protocols on uvloop: a request is parsed, routed and written
to its slot from the data callback its last bytes arrived in
(:mod:`~bgserve.dataplane.client_conn`), the body is passed through unparsed, and upstream
connections are kept alive in a small pool per slot. No framework and no per-request
client object: every added microsecond here is added to every inference.

``POST /v2/models/{deployment}/infer`` goes to the slot the weights pick (smooth
weighted round-robin: exact shares, deterministic order) and the response carries
``x-bgserve-slot`` and ``x-bgserve-release``. Other ``/v2/models/{deployment}...``
requests (ready, metadata) go to the deployment's heaviest slot. The route table is one
immutable object per deployment, swapped whole by :meth:`Router.set_routes` from any
thread; a request keeps the slot it picked even if the table changes under it.

Chat completions (``POST /openai/v1/chat/completions``, ``/v1/chat/completions``) go to
their slot exactly as infer requests do (:mod:`~bgserve.dataplane.openai_routes` handles
the OpenAI paths). How long the router waits for a deployment's
slots is set per deployment (:meth:`Router.set_timeouts`).

With a ``data_token``, every request but ``/v2/health/*`` needs ``Authorization: Bearer
<token>`` (compared in constant time) or gets a 401. In production the router runs in a
process of its own (:mod:`bgserve.dataplane.main`), so nothing the control
plane does can hold its GIL.

Where the rest lives: the control methods (:class:`~bgserve.dataplane.wire.DataPlaneControl`)
and the types they carry in :mod:`~bgserve.dataplane.wire`, their implementation in
:mod:`~bgserve.dataplane.router_control`; client connections in
:mod:`~bgserve.dataplane.client_conn`, HTTP/1.1 parsing in :mod:`~bgserve.dataplane.http1`
and relaying in :mod:`~bgserve.dataplane.http1_relay`;
route tables, down set and counters in :mod:`~bgserve.dataplane.route_state`; sticky keys
and the bearer token in :mod:`~bgserve.dataplane.request_head`;
forwarding to a slot (one retry on a refused connect or a first-byte timeout, keep-alive
pools) in :mod:`~bgserve.dataplane.forwarder`; ejecting failing slots in
:mod:`~bgserve.dataplane.outliers`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import TYPE_CHECKING, cast

import uvloop

from bgserve.dataplane.client_conn import ClientConnection
from bgserve.dataplane.forwarder import Forwarder
from bgserve.dataplane.http1 import Request, error_response, json_response
from bgserve.dataplane.mirror import Mirror
from bgserve.dataplane.openai_api import CHAT_PATHS
from bgserve.dataplane.openai_routes import OpenAIRoutes, serves, unauthorized
from bgserve.dataplane.outliers import EventCallback, Outliers
from bgserve.dataplane.request_head import SlotPicker, bearer_matches
from bgserve.dataplane.route_state import RouteState
from bgserve.dataplane.route_table import Timeouts, weighted_schedule
from bgserve.dataplane.router_control import RouterControl
from bgserve.dataplane.wire import (
    SHADOW_MAX_BYTES,
    DataPlaneControl,
    RouterStats,
    RouteTarget,
    SlotStats,
)

__all__ = ["RouteTarget", "Router", "RouterStats", "SlotStats", "Timeouts", "weighted_schedule"]


class Router(RouterControl):
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
    (:mod:`~bgserve.dataplane.mirror`), holding at most ``shadow_max_bytes`` for it.
    ``first_byte_timeout`` and ``stream_idle_timeout`` are every deployment's timeouts
    until :meth:`set_timeouts` gives it its own.
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
        shadow_max_bytes: int = SHADOW_MAX_BYTES,
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
            max_bytes=shadow_max_bytes,
        )
        for deployment, (percent, max_queue) in (shadows or {}).items():
            self._mirror.configure(deployment, percent, max_queue)
        self._picker = SlotPicker(sticky_header)
        self._openai = OpenAIRoutes(state, self._picker, self._forward, self._mirror)
        self._clients: set[ClientConnection] = set()
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

        def connection() -> ClientConnection:
            return ClientConnection(
                self._dispatch,
                self._clients,
                loop,
                max_body=self._max_body,
                idle_timeout=self._idle_timeout,
            )

        try:
            if sock is not None:
                serving = loop.create_server(connection, sock=sock, backlog=1024)
            else:
                serving = loop.create_server(connection, host, port, backlog=1024)
            server = cast(asyncio.Server, loop.run_until_complete(serving))
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
        for client in list(self._clients):
            client.abort()
        self._forwarder.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        path = request.target.partition(b"?")[0]
        keep = request.keep_alive
        if self._token is not None and not self._authorized(path, request):
            message = "this data plane needs its token: send Authorization: Bearer <token>"
            writer.write(unauthorized(path, message, keep))
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
            index = self._picker.pick(request, table) if infer else table.primary
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
        if path in CHAT_PATHS:  # after the OIP paths: nothing added to an infer request
            return await self._openai.chat(request, writer, path)
        if path in (b"/v2/health/ready", b"/v2/health/live"):
            writer.write(json_response(200, "OK", {"ready": True, "live": True}, keep))
            return keep
        if serves(path, request):
            return await self._openai.serve(request, writer, path)
        self._unrouted[0] += 1
        writer.write(error_response(404, f"no route for {path.decode(errors='replace')}", keep))
        return keep

    def _authorized(self, path: bytes, request: Request) -> bool:
        if path.startswith(b"/v2/health/"):
            return True
        return self._token is not None and bearer_matches(request.upstream_head, self._token)


if TYPE_CHECKING:
    _control: type[DataPlaneControl] = Router
