"""The data-plane process seen from bgserve: the router's control API, over the channel.

:class:`DataPlaneClient` binds the data-plane socket itself (so a bind error surfaces at once,
and the port and its backlog outlive a restart of the child), spawns
``python -m bgserve.dataplane.main`` and keeps everything the child was told:
routes with their versions, slots bgserve marked down, slots the child ejected. A child
that dies (or stops answering) is replaced by a fresh one started from that state before
it serves a single request. It speaks :mod:`bgserve.dataplane.wire`: the operations,
the route rows and the replies are defined there, for both sides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgserve.backends.local.slot_process import tail
from bgserve.dataplane.channel import Channel, ChannelClosed, ChannelError, Message
from bgserve.dataplane.wire import (
    DataPlaneControl,
    Op,
    RouterStats,
    RouteTarget,
    ShadowBatch,
    ShadowPage,
    shadow_batch,
)
from bgserve.errors import BackendError

log = logging.getLogger("bgserve.backends.local.dataplane_client")

Address = tuple[str, int]
Popen = Callable[[list[str], tuple[int, ...]], "subprocess.Popen[bytes]"]
EventHandler = Callable[[str, Address, str], None]
START_TIMEOUT_S = 30.0
SHADOW_PAGE = 100  # pairs per drain message: 100 x 3 bodies of 64 KiB stay under its bound


def bind(host: str, port: int) -> socket.socket:
    """The listening socket of the data plane. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


class DataPlaneClient:
    """The control side's client of a supervised data-plane process: the control methods
    of :class:`~bgserve.dataplane.wire.DataPlaneControl`, each one message over the
    channel; every method is safe from any thread.

    ``popen(args, pass_fds)`` starts the child (the backend forks from one long-lived
    thread, for ``PR_SET_PDEATHSIG``); ``on_event(kind, (host, port), reason)`` hears the
    child's ejections and re-admissions, on the channel's reader thread.
    """

    def __init__(
        self,
        listener: socket.socket,
        *,
        options: dict[str, Any],
        popen: Popen,
        python: str,
        log_path: Path,
        on_event: EventHandler,
    ) -> None:
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._options = options
        self._popen = popen
        self._python = python
        self._log_path = log_path
        self._on_event = on_event
        self._lock = threading.RLock()  # one control operation or restart at a time
        # Guards the health sets only: the channel's reader thread takes it for events
        # while a caller holding ``_lock`` waits for that same thread to deliver an answer.
        self._health_lock = threading.Lock()
        self._routes: dict[str, tuple[int, list[RouteTarget] | None]] = {}
        self._down: set[Address] = set()
        self._ejected: set[Address] = set()
        self._shadows: dict[str, tuple[int, int]] = {}  # deployment -> (percent, max_queue)
        # deployment -> (first_byte_s, idle_s)
        self._timeouts: dict[str, tuple[float | None, float | None]] = {}
        self._version = 0
        self._closed = False
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        with self._lock:
            self._start()

    # ----- the control methods (DataPlaneControl) -----

    def set_routes(self, deployment: str, routes: Sequence[RouteTarget]) -> None:
        """Replace the deployment's routes atomically; returns once the data plane applied
        them. Raises ValueError on a negative weight, BackendError if the data plane is down."""
        if any(r.weight < 0 for r in routes):
            raise ValueError(f"negative weight in routes of {deployment}: {routes}")
        self._update(deployment, list(routes))

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment``. Idempotent."""
        self._update(deployment, None)

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The routes last given for the deployment (empty if none)."""
        with self._lock:
            entry = self._routes.get(deployment)
        return list(entry[1] or []) if entry else []

    def mark_down(self, host: str, port: int) -> bool:
        """Stop routing to the slot until :meth:`mark_up`; True if it was up."""
        with self._health_lock:
            self._down.add((host, port))
        return bool(self._call(Op.MARK_DOWN, host=host, port=port))

    def mark_up(self, host: str, port: int) -> None:
        """Route to the slot again by its weights. Idempotent."""
        with self._health_lock:
            self._down.discard((host, port))
            self._ejected.discard((host, port))
        self._call(Op.MARK_UP, host=host, port=port)

    def is_down(self, host: str, port: int) -> bool:
        """Whether the data plane excludes the slot from routing now."""
        return bool(self._call(Op.IS_DOWN, host=host, port=port))

    def stats(self) -> RouterStats:
        """The data plane's counters (since the current data-plane process started)."""
        result: RouterStats = self._call(Op.STATS)
        return result

    def set_shadow(self, deployment: str, percent: int, max_queue: int) -> None:
        """Mirror ``percent`` of blue's infer requests to green (0 stops); kept across a
        restart of the data plane. Raises BackendError if the data plane refuses it."""
        with self._lock:
            self._call(Op.SET_SHADOW, deployment=deployment, percent=percent, max_queue=max_queue)
            if percent:
                self._shadows[deployment] = (percent, max_queue)
            else:
                self._shadows.pop(deployment, None)

    def set_timeouts(
        self, deployment: str, first_byte_s: float | None, idle_s: float | None
    ) -> None:
        """Give the deployment its own first-byte and between-chunks timeouts (None: the
        data plane's default); kept across a restart of the data plane. Idempotent.
        Raises BackendError if the data plane refuses them (a value not above 0)."""
        with self._lock:
            self._call(
                Op.SET_TIMEOUTS, deployment=deployment, first_byte_s=first_byte_s, idle_s=idle_s
            )
            self._timeouts[deployment] = (first_byte_s, idle_s)

    def shadow_pairs(self, deployment: str, limit: int = SHADOW_PAGE) -> ShadowPage:
        """Take one page of the deployment's pairs and counters from the data plane."""
        page: ShadowPage = self._call(Op.SHADOW_PAIRS, deployment=deployment, limit=limit)
        return page

    def drain_shadow(self, deployment: str) -> ShadowBatch:
        """Every pair and the counters the data plane collected for the deployment since
        the previous drain, taken a page at a time. Raises BackendError if the data plane
        cannot be asked."""
        pages = [self.shadow_pairs(deployment)]
        while pages[-1]["more"]:
            pages.append(self.shadow_pairs(deployment))
        return shadow_batch(pages)

    # ----- the process -----

    @property
    def pid(self) -> int | None:
        """The data-plane process id (it changes on a restart)."""
        return self._proc.pid if self._proc else None

    def check(self) -> bool:
        """Restart the data plane if its process died or its channel closed; True if so."""
        with self._lock:
            if self._closed or (self._alive() and not self._channel_closed()):
                return False
            self._restart("its process exited" if not self._alive() else "its channel closed")
            return True

    def stop(self) -> None:
        """Stop the process (closing the channel ends it) and close the socket. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._terminate(grace=5.0)
            self._listener.close()

    def _update(self, deployment: str, routes: list[RouteTarget] | None) -> None:
        with self._lock:
            self._version += 1
            self._routes[deployment] = (self._version, routes)
            self._call(Op.SET_ROUTES, deployment=deployment, version=self._version, routes=routes)

    def _call(self, op: Op, **args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise BackendError("the local backend is closed")
            try:
                return self._channel_call(op, **args)
            except ChannelClosed as exc:
                self._restart(f"it did not answer: {exc}")
            try:
                return self._channel_call(op, **args)  # the new process has the state already
            except ChannelClosed as exc:
                raise BackendError(f"the data plane is not answering: {exc}") from exc

    def _channel_call(self, op: Op, **args: Any) -> Any:
        assert self._channel is not None
        try:
            return self._channel.call(op, **args)
        except ChannelError as exc:
            raise BackendError(f"the data plane refused {op}: {exc}") from exc

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        args = [
            self._python,
            "-m",
            "bgserve.dataplane.main",
            "--listen-fd",
            str(self._listener.fileno()),
            "--control-fd",
            str(theirs.fileno()),
        ]
        try:
            self._proc = self._popen(args, (self._listener.fileno(), theirs.fileno()))
        except OSError as exc:
            ours.close()
            raise BackendError(f"cannot start the data-plane process: {exc}") from exc
        finally:
            theirs.close()  # the child holds its own copy
        self._channel = Channel(ours, self._event)
        try:
            self._channel.call(Op.CONFIGURE, timeout=START_TIMEOUT_S, **self._config())
        except (ChannelClosed, ChannelError) as exc:
            self._terminate(grace=0)
            raise BackendError(
                f"the data-plane process did not start ({exc}); log {self._log_path} "
                "ends with:\n" + tail(self._log_path)
            ) from exc

    def _config(self) -> dict[str, Any]:
        routes = {
            name: {"version": version, "routes": rows}
            for name, (version, rows) in self._routes.items()
        }
        with self._health_lock:
            down, ejected = sorted(self._down - self._ejected), sorted(self._ejected)
        shadows = {name: list(shadow) for name, shadow in self._shadows.items()}
        timeouts = {name: list(pair) for name, pair in self._timeouts.items()}
        return {
            **self._options,
            "routes": routes,
            "down": down,
            "ejected": ejected,
            "shadows": shadows,
            "timeouts": timeouts,
        }

    def _restart(self, why: str) -> None:
        log.warning("restarting the data-plane process: %s", why)
        self._terminate(grace=0)
        self.restarts += 1
        self._start()

    def _terminate(self, grace: float) -> None:
        if self._channel is not None:
            self._channel.close()
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _channel_closed(self) -> bool:
        return self._channel is None or self._channel.closed

    def _event(self, message: Message) -> None:
        address = (str(message["host"]), int(message["port"]))
        kind = str(message["event"])
        with self._health_lock:
            if kind == "ejected":
                self._ejected.add(address)
            else:
                self._ejected.discard(address)
                self._down.discard(address)
        self._on_event(kind, address, str(message.get("reason", "")))


if TYPE_CHECKING:
    _control: type[DataPlaneControl] = DataPlaneClient
