"""The data-plane process: the weighted router, driven by bgserve over a control channel.

    python -m bgserve.dataplane.main --listen-fd N --control-fd M

Both descriptors are inherited from bgserve: the listening socket it bound (so the port
survives a restart of this process, and connections wait in its backlog meanwhile) and
one end of the control socket pair (:mod:`bgserve.dataplane.channel`). The first
message is the configuration, with every route, version and down slot to start from;
the router serves only after applying it. The process exits when the channel closes
(bgserve stopped it or died) and, on Linux, when bgserve's spawning thread goes away.

Each control message names one operation of :class:`bgserve.dataplane.wire.Op`;
:class:`ControlDispatcher` hands it to the router through its table of handlers. Route
updates are versioned per deployment: one older than the last applied is ignored, so a
late update can never undo a newer one.

Once the router is started, everything alive is frozen out of the garbage collector's
reach and every later collection is timed; the ``stats`` reply carries those pauses
under ``"gc"`` (:class:`bgserve.gcpause.PauseStats`).
"""

from __future__ import annotations

import argparse
import queue
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from bgserve import gcpause
from bgserve.dataplane.channel import ChannelClosed, Message, recv_message, send_message
from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import DataPlaneControl, Op, RouterStats, RouteTarget

ROUTER_OPTIONS = (
    "upstream_timeout",
    "connect_timeout",
    "first_byte_timeout",
    "stream_idle_timeout",
    "breaker",
    "probe_interval",
    "outlier_failures",
    "data_token",
    "sticky_header",
    "shadow_max_bytes",
)


class Events:
    """Sends the router's events on their own thread, so the event loop never blocks."""

    def __init__(self, sock: socket.socket, send_lock: threading.Lock) -> None:
        self._sock = sock
        self._send_lock = send_lock
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="bgserve-dp-events", daemon=True).start()

    def __call__(self, kind: str, address: tuple[str, int], reason: str) -> None:
        print(f"slot {address[0]}:{address[1]} {kind}: {reason}", file=sys.stderr, flush=True)
        self._queue.put({"event": kind, "host": address[0], "port": address[1], "reason": reason})

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            try:
                with self._send_lock:
                    send_message(self._sock, message)
            except ChannelClosed:
                return


Handler = Callable[[Message], Any]


class ControlDispatcher:
    """Applies control messages to a router through one handler per :class:`Op`; one
    instance per process.

    Route updates are versioned per deployment: :meth:`set_routes` ignores one older than
    the last applied.
    """

    def __init__(
        self, router: DataPlaneControl, pauses: gcpause.PauseTracker | None = None
    ) -> None:
        self.router = router
        self.pauses = pauses
        self.versions: dict[str, int] = {}
        self.handlers: dict[Op, Handler] = {
            Op.SET_ROUTES: lambda m: self.set_routes(m["deployment"], m["version"], m["routes"]),
            Op.MARK_DOWN: lambda m: router.mark_down(m["host"], m["port"]),
            Op.MARK_UP: lambda m: router.mark_up(m["host"], m["port"]),
            Op.IS_DOWN: lambda m: router.is_down(m["host"], m["port"]),
            Op.STATS: lambda m: self.stats(),
            Op.SET_TIMEOUTS: lambda m: router.set_timeouts(
                m["deployment"], m["first_byte_s"], m["idle_s"]
            ),
            Op.SET_SHADOW: lambda m: router.set_shadow(
                m["deployment"], m["percent"], m["max_queue"]
            ),
            Op.SHADOW_PAIRS: lambda m: router.shadow_pairs(m["deployment"], m["limit"]),
            Op.PING: lambda m: "pong",
        }

    def restore(self, config: Message) -> None:
        """Apply the routes, down slots, timeouts and mirroring bgserve handed over at
        start."""
        for deployment, entry in config.get("routes", {}).items():
            self.set_routes(deployment, entry["version"], entry["routes"])
        for host, port in config.get("down", []):
            self.router.mark_down(host, port)
        for deployment, (first_byte_s, idle_s) in config.get("timeouts", {}).items():
            self.router.set_timeouts(deployment, first_byte_s, idle_s)
        # After the routes: mirroring is tied to the blue and green routed when it starts.
        for deployment, (percent, max_queue) in config.get("shadows", {}).items():
            try:
                self.router.set_shadow(deployment, percent, max_queue)
            except ValueError as exc:
                print(f"mirroring of {deployment} not resumed: {exc}", file=sys.stderr)

    def set_routes(self, deployment: str, version: int, rows: list[list[Any]] | None) -> bool:
        """Apply the update (route rows, or None to stop routing) unless a newer one was
        applied; True if applied. Raises ValueError or TypeError on a malformed row."""
        if version <= self.versions.get(deployment, -1):
            return False
        if rows is None:
            self.router.remove_routes(deployment)
        else:
            self.router.set_routes(deployment, [RouteTarget.from_row(row) for row in rows])
        self.versions[deployment] = version
        return True

    def stats(self) -> RouterStats:
        """The router's counters, and this process's collector pauses if they are timed."""
        stats = self.router.stats()
        if self.pauses is not None:
            stats["gc"] = self.pauses.snapshot()
        return stats

    def handle(self, message: Message) -> Any:
        """The result of one control operation. Raises ValueError for an unknown one, and
        what its handler raises (KeyError for a missing argument, ValueError)."""
        handler = self.handlers.get(message["op"])
        if handler is None:
            raise ValueError(f"unknown data-plane operation {message['op']!r}")
        return handler(message)


def serve(control: socket.socket, listener: socket.socket) -> None:
    """Configure, start the router, answer control messages until the channel closes."""
    send_lock = threading.Lock()
    config = recv_message(control)
    options = {k: config[k] for k in ROUTER_OPTIONS if k in config}
    router = Router(on_event=Events(control, send_lock), **options)
    dispatcher = ControlDispatcher(router)
    dispatcher.restore(config)
    port = router.start(sock=listener)
    for host, slot_port in config.get("ejected", []):
        router.probe_back(host, slot_port)
    dispatcher.pauses = gcpause.settle_after_start()
    try:
        with send_lock:
            send_message(control, {"id": config.get("id", 0), "ok": True, "result": port})
        while True:
            message = recv_message(control)
            try:
                reply = {"id": message["id"], "ok": True, "result": dispatcher.handle(message)}
            except (KeyError, TypeError, ValueError) as exc:
                reply = {"id": message.get("id"), "ok": False, "error": repr(exc)}
            with send_lock:
                send_message(control, reply)
    except ChannelClosed:
        pass
    finally:
        router.stop()


def main(argv: list[str] | None = None) -> None:
    """The process entry point."""
    parser = argparse.ArgumentParser(description="bgserve's data-plane process")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    listener = socket.socket(fileno=args.listen_fd)
    serve(control, listener)
    sys.exit(0)


if __name__ == "__main__":
    main()
