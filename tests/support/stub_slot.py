"""A stand-in slot for the data plane's tests: an HTTP server on a thread that answers
every POST with one OIP output after a delay, and records when each request came and
its headers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StubSlot:
    """The stub's port, and each request's arrival (monotonic seconds), headers and the
    first 200 bytes of its body."""

    port: int
    arrivals: list[float] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@contextmanager
def stub_slot(label: str, status: int = 200, delay: float = 0.0) -> Iterator[StubSlot]:
    """Serve until the block ends: every POST gets ``status`` with output ``[label]``
    after ``delay`` seconds."""
    stub = StubSlot(0)
    output = {"name": "output", "datatype": "BYTES", "shape": [1], "data": [label]}
    body = json.dumps({"outputs": [output]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["content-length"]))
            stub.bodies.append(data[:200])
            stub.arrivals.append(time.monotonic())
            stub.headers.append(dict(self.headers.items()))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # The default backlog (5) drops connects from a router opening many at once,
        # and a dropped SYN waits a second: longer than the router's connect timeout.
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    stub.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
