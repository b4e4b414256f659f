"""The failures of the router's HTTP/1.1 layer, its size limits and the answers it makes
itself (JSON bodies, the errors): re-exported by http1."""

from __future__ import annotations

import json

HEAD_LIMIT = 64 * 1024
READ_SIZE = 64 * 1024


class BadRequest(Exception):
    """The client sent something the router cannot forward; the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ProxyError(Exception):
    """The upstream failed; ``response_started`` means the client already got bytes.

    The upstream connection must not be reused after any ProxyError.
    """

    def __init__(self, status: int, message: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response_started = response_started


class UpstreamTimeout(ProxyError):
    """The upstream did not start answering within the head timeout (a 504)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(504, f"did not start answering within {timeout}s")
        self.timeout = timeout


def json_response(status: int, reason: str, payload: dict[str, object], keep: bool) -> bytes:
    """A complete response with a JSON body, ready to write."""
    body = json.dumps(payload).encode()
    connection = b"keep-alive" if keep else b"close"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: %s\r\n\r\n%s" % (status, reason.encode(), len(body), connection, body)
    )


REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def error_response(status: int, message: str, keep: bool) -> bytes:
    """A JSON ``{"error": message}`` response with ``status``, ready to write."""
    return json_response(status, REASONS[status], {"error": message}, keep)
