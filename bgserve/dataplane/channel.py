"""The control channel between bgserve and its data-plane process.

One ``AF_UNIX`` socket pair, created by the backend and inherited by the data-plane child
(no path in the file system, so no other process can connect). Each message is a 4-byte
big-endian length followed by that many bytes of JSON:

- control to data plane: ``{"id": n, "op": "...", ...}`` (the operations and their
  arguments: :class:`bgserve.dataplane.wire.Op`), answered by
  ``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error": "..."}``;
- data plane to control, unprompted: ``{"event": "ejected" | "readmitted", "host", "port",
  "reason"}``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024

Message = dict[str, Any]


class ChannelClosed(Exception):
    """The other end of the channel went away (its process died or closed it)."""


class ChannelError(Exception):
    """The data plane refused an operation; the message says why."""


def send_message(sock: socket.socket, message: Message) -> None:
    """Write one framed message. Raises ChannelClosed if the peer is gone."""
    data = json.dumps(message, separators=(",", ":")).encode()
    try:
        sock.sendall(_HEADER.pack(len(data)) + data)
    except OSError as exc:
        raise ChannelClosed(str(exc)) from exc


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        try:
            chunk = sock.recv(min(size, 1 << 20))
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not chunk:
            raise ChannelClosed("end of stream")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> Message:
    """Read one framed message. Raises ChannelClosed at the end of the stream."""
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    if size > MAX_MESSAGE:
        raise ChannelClosed(f"message of {size} bytes exceeds {MAX_MESSAGE}")
    message: Message = json.loads(_read_exactly(sock, size))
    return message


class Channel:
    """The control end: synchronous calls, and events handed to ``on_event`` on a reader thread.

    Calls from several threads are safe; each waits for its own answer.
    """

    def __init__(self, sock: socket.socket, on_event: Callable[[Message], None]) -> None:
        self._sock = sock
        self._on_event = on_event
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._next_id = 0
        self.closed = False
        self._reader = threading.Thread(target=self._read, name="bgserve-dp-channel", daemon=True)
        self._reader.start()

    def call(self, op: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run ``op`` in the data plane and return its result.

        Raises ChannelClosed if the data plane is gone or does not answer within
        ``timeout``, ChannelError if it refused the operation.
        """
        future: Future[Any] = Future()
        with self._lock:
            if self.closed:
                raise ChannelClosed("the data-plane channel is closed")
            self._next_id += 1
            ident = self._next_id
            self._pending[ident] = future
        try:
            with self._send_lock:
                send_message(self._sock, {"id": ident, "op": op, **args})
            return future.result(timeout)
        except TimeoutError as exc:
            raise ChannelClosed(f"the data plane did not answer {op} within {timeout}s") from exc
        finally:
            with self._lock:
                self._pending.pop(ident, None)

    def close(self) -> None:
        """Close the socket (the data plane sees the end of stream and exits). Idempotent."""
        self._fail_all("the data-plane channel is closed")
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(5)

    def _read(self) -> None:
        try:
            while True:
                message = recv_message(self._sock)
                if "event" in message:
                    self._on_event(message)
                    continue
                with self._lock:
                    future = self._pending.get(message.get("id", -1))
                if future is None:
                    continue  # its caller gave up waiting
                with contextlib.suppress(InvalidStateError):  # failed by a close meanwhile
                    if message.get("ok"):
                        future.set_result(message.get("result"))
                    else:
                        future.set_exception(ChannelError(str(message.get("error"))))
        except (ChannelClosed, ValueError) as exc:
            self._fail_all(f"the data-plane channel closed: {exc}")

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            self.closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            with contextlib.suppress(InvalidStateError):
                future.set_exception(ChannelClosed(reason))
