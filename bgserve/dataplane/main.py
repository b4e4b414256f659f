"""The data-plane process: the weighted router, driven by bgserve over a control channel.

    python -m bgserve.dataplane.main --listen-fd N --control-fd M

Both descriptors are inherited from bgserve: the listening socket it bound (so the port
survives a restart of this process, and connections wait in its backlog meanwhile) and
one end of the control socket pair (:mod:`bgserve.dataplane.channel`). The first
message is the configuration, with every route, version and down slot to start from;
the router serves only after applying it. The process exits when the channel closes
(bgserve stopped it or died) and, on Linux, when bgserve's spawning thread goes away.

Route updates are versioned per deployment: one older than the last applied is ignored,
so a late update can never undo a newer one.

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
from typing import Any

from bgserve import gcpause
from bgserve.dataplane.channel import ChannelClosed, Message, recv_message, send_message
from bgserve.dataplane.route_table import RouteTarget
from bgserve.dataplane.router import Router

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
    "shadows",
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


def targets(rows: list[list[Any]]) -> list[RouteTarget]:
    """Route targets from their JSON form ``[role, release_id, host, port, weight]``."""
    return [RouteTarget(str(r[0]), int(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


class Plane:
    """Applies control messages to the router; one instance per process."""

    def __init__(self, router: Router, pauses: gcpause.PauseTracker | None = None) -> None:
        self.router = router
        self.pauses = pauses
        self.versions: dict[str, int] = {}

    def restore(self, config: Message) -> None:
        """Apply the routes and down slots bgserve handed over at start."""
        for deployment, entry in config.get("routes", {}).items():
            self.set_routes(deployment, entry["version"], entry["routes"])
        for host, port in config.get("down", []):
            self.router.mark_down(host, port)
        for deployment, (first_byte_s, idle_s) in config.get("timeouts", {}).items():
            self.router.set_timeouts(deployment, first_byte_s, idle_s)

    def set_routes(self, deployment: str, version: int, routes: list[list[Any]] | None) -> bool:
        """Apply the update unless a newer one was applied; True if applied."""
        if version <= self.versions.get(deployment, -1):
            return False
        self.versions[deployment] = version
        if routes is None:
            self.router.remove_routes(deployment)
        else:
            self.router.set_routes(deployment, targets(routes))
        return True

    def stats(self) -> dict[str, Any]:
        """The router's counters, and this process's collector pauses if they are timed."""
        stats: dict[str, Any] = dict(self.router.stats())
        if self.pauses is not None:
            stats["gc"] = self.pauses.snapshot()
        return stats

    def handle(self, message: Message) -> Any:
        """The result of one control operation. Raises ValueError for an unknown one."""
        op = message["op"]
        if op == "set_routes":
            return self.set_routes(message["deployment"], message["version"], message["routes"])
        if op == "mark_down":
            return self.router.mark_down(message["host"], message["port"])
        if op == "mark_up":
            self.router.mark_up(message["host"], message["port"])
            return None
        if op == "is_down":
            return self.router.is_down(message["host"], message["port"])
        if op == "stats":
            return self.stats()
        if op == "set_timeouts":
            m = message
            return self.router.set_timeouts(m["deployment"], m["first_byte_s"], m["idle_s"])
        if op == "set_shadow":
            m = message
            return self.router.set_shadow(m["deployment"], m["percent"], m["max_queue"])
        if op == "shadow_pairs":
            return self.router.shadow_pairs(message["deployment"], message["limit"])
        if op == "ping":
            return "pong"
        raise ValueError(f"unknown data-plane operation {op!r}")


def serve(control: socket.socket, listener: socket.socket) -> None:
    """Configure, start the router, answer control messages until the channel closes."""
    send_lock = threading.Lock()
    config = recv_message(control)
    options = {k: config[k] for k in ROUTER_OPTIONS if k in config}
    router = Router(on_event=Events(control, send_lock), **options)
    plane = Plane(router)
    plane.restore(config)
    port = router.start(sock=listener)
    for host, slot_port in config.get("ejected", []):
        router.probe_back(host, slot_port)
    plane.pauses = gcpause.settle_after_start()
    try:
        with send_lock:
            send_message(control, {"id": config.get("id", 0), "ok": True, "result": port})
        while True:
            message = recv_message(control)
            try:
                reply = {"id": message["id"], "ok": True, "result": plane.handle(message)}
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
