"""A quiet ``http.server`` handler that answers JSON: the base of the tests' stub servers."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
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
