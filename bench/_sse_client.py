"""The streaming client of bench/sse.py, run as its own process on raw keep-alive sockets.

``python bench/_sse_client.py SPEC OUT``: SPEC names paths (``name``, ``host``, ``port``,
the whole request as text, where ``#####`` becomes the call's number so that no two
prompts are alike and a model's prompt cache cannot answer), ``streams`` per path and
``warmup``. Path by path, request by
request (the order turns each round, so no path always follows the same one), it sends
the request and reads the chunked SSE answer, stamping every ``recv`` with
``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared with the upstream's process on Linux).
For each stream it keeps: its round, the send time, the receive time of each content
chunk (an event whose delta has text), the ``bench_sent_ns`` stamp the upstream put in
it, if any, and the first one's ``bench_request_ns`` (when the upstream had read the
request). OUT gets ``{"streams": {path: [stream, ...]}, "failures": {path: n},
"errors": {path: {kind: n}}}``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any


class Failed(Exception):
    """The answer was not a 200 chunked event stream."""


MARK = b"#####"  # in a request: replaced by a call number, so no two prompts are the same


class Stream:
    """One keep-alive connection that sends one request and reads SSE answers."""

    calls = 0  # over every connection: each call's number

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.address, self.request = (host, port), request
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _recv(self) -> int:
        """Read what is there into the buffer; its arrival time."""
        assert self.sock is not None
        data = self.sock.recv(65536)
        now = time.monotonic_ns()
        if not data:
            raise Failed("connection closed mid-answer")
        self.buffer += data
        return now

    def call(self) -> dict[str, Any]:
        """Send the request, read the whole stream; its timings."""
        if self.sock is None:
            self.sock = self._connect()
        Stream.calls += 1
        request = self.request.replace(MARK, b"%05d" % (Stream.calls % 100_000))
        sent = time.monotonic_ns()
        self.sock.sendall(request)
        try:
            return {"sent_ns": sent, **self._answer()}
        except BaseException:
            self.sock.close()
            self.sock, self.buffer = None, b""
            raise

    def _answer(self) -> dict[str, Any]:
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"transfer-encoding: chunked" not in head.lower():
            raise Failed(f"HTTP {status.decode()}: {head[:300]!r}")
        received: list[int] = []
        stamps: list[int] = []
        request_ns = 0
        pending = b""  # SSE text not yet cut into events
        arrived = time.monotonic_ns()
        while True:
            size_line_end = self.buffer.find(b"\r\n")
            if size_line_end < 0:
                arrived = self._recv()
                continue
            size = int(self.buffer[:size_line_end].split(b";")[0], 16)
            if len(self.buffer) < size_line_end + 2 + size + 2:
                arrived = self._recv()
                continue
            start = size_line_end + 2
            data, self.buffer = self.buffer[start : start + size], self.buffer[start + size + 2 :]
            if size == 0:
                found = {"received_ns": received, "upstream_sent_ns": stamps}
                return {**found, "upstream_request_ns": request_ns}
            pending += data
            *events, pending = pending.split(b"\n\n")
            for text in events:
                stamp = content_stamps(text)
                if stamp is None:
                    continue
                received.append(arrived)
                if stamp[0]:
                    stamps.append(stamp[0])
                    request_ns = request_ns or stamp[1]


def content_stamps(text: bytes) -> tuple[int, int] | None:
    """For an event with content: the upstream's send and request stamps (0 when it has
    none); None for any other event."""
    if not text.startswith(b"data: {"):
        return None
    payload = json.loads(text[6:])
    choices = payload.get("choices") or [{}]
    if not (choices[0].get("delta") or {}).get("content"):
        return None
    return int(payload.get("bench_sent_ns", 0)), int(payload.get("bench_request_ns", 0))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    paths = spec["paths"]
    conns = {p["name"]: Stream(p["host"], p["port"], p["request"].encode()) for p in paths}
    names = list(conns)
    streams: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    errors: dict[str, dict[str, int]] = {name: {} for name in names}
    for index in range(spec["warmup"] + spec["streams"]):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            try:
                timings = conns[name].call()
            except (Failed, OSError) as exc:
                failures[name] += 1
                kind = str(exc)[:80]
                errors[name][kind] = errors[name].get(kind, 0) + 1
                continue
            if index >= spec["warmup"]:
                streams[name].append({**timings, "round": index})
    return {"streams": streams, "failures": failures, "errors": errors}


if __name__ == "__main__":
    spec_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    result = run(json.loads(spec_path.read_text()))
    out_path.write_text(json.dumps(result))
