"""The failures of the router's HTTP/1.1 layer and its size limits (re-exported by http1)."""

from __future__ import annotations

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
