"""A quiet ``http.server`` handler that answers JSON: the base of the tests' stub servers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """Answers with :meth:`send_json`; logs nothing (the tests read what they assert)."""

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        """``payload`` as a JSON answer with a content length."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackServers:
    """Stub HTTP servers on loopback ports, one per key (a platform's endpoint), each
    answering on threads of its own until stopped."""

    def __init__(self) -> None:
        self.servers: dict[str, ThreadingHTTPServer] = {}

    def start(self, key: str, handler: type[BaseHTTPRequestHandler]) -> int:
        """Serve ``handler`` for ``key`` on a new loopback port; the port."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[key] = server
        return int(server.server_address[1])

    def stop(self, key: str) -> None:
        """Stop ``key``'s server, if it runs. Idempotent."""
        server = self.servers.pop(key, None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        """Stop every server."""
        for key in list(self.servers):
            self.stop(key)
