"""A stand-in LLM slot for the data plane's tests: a real HTTP/1.1 server on a thread that
speaks ``POST /openai/v1/chat/completions`` as KServe's OpenAI runtime does (a JSON
``chat.completion``, or with ``stream: true`` server-sent events in chunked encoding,
``usage`` last when ``stream_options.include_usage`` asks), answers
``GET /v2/health/ready``, and records every request.

Streams can be slowed and stopped: ``first_token_s`` before the first content chunk,
``chunk_s`` between chunks, ``stall_after`` chunks after which it goes silent, and
``lockstep``, which sends chunk ``n + 1`` only once the test called :meth:`release`
(or after 10 s, noted in ``lockstep_timeouts``): a test that sees chunk ``n`` before it
releases chunk ``n + 1`` proves nothing between it and the slot holds chunks back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support.json_handler import JsonHandler

LOCKSTEP_WAIT_S = 10.0


@dataclass
class OpenAIStub:
    """The stub's port, behaviour and what it saw."""

    label: str
    port: int = 0
    tokens: int = 4
    first_token_s: float = 0.0
    chunk_s: float = 0.0
    stall_after: int | None = None
    stall_s: float = 30.0
    lockstep: bool = False
    # Sent as x-bgserve-queue-ms on streams, as a slot whose model kept the call waiting.
    queue_ms: float | None = None
    paths: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0  # content chunks sent by the last streamed answer
    lockstep_timeouts: int = 0
    _released: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def release(self) -> None:
        """Let a lockstep stream send its next chunk."""
        self._released.release()

    def words(self) -> list[str]:
        """The content chunks of every answer: ``"<label>-0 "``, ``"<label>-1 "``, ..."""
        return [f"{self.label}-{i} " for i in range(self.tokens)]

    def answer_text(self) -> str:
        return "".join(self.words())


def _chunk(stub: OpenAIStub, delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": stub.label,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _usage(stub: OpenAIStub) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": stub.tokens, "total_tokens": 5 + stub.tokens}


class _Handler(JsonHandler):
    protocol_version = "HTTP/1.1"
    stub: OpenAIStub

    def do_GET(self) -> None:
        self.send_json(200 if self.path == "/v2/health/ready" else 404, {"ready": True})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        stub = self.stub
        stub.paths.append(self.path)
        stub.bodies.append(body)
        stub.headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.path != "/openai/v1/chat/completions":
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        elif body.get("stream"):
            self._stream(body)
        else:
            time.sleep(stub.first_token_s)
            message = {"role": "assistant", "content": stub.answer_text()}
            self.send_json(
                200,
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": stub.label,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": _usage(stub),
                },
            )

    def _stream(self, body: dict[str, Any]) -> None:
        stub = self.stub
        stub.sent = 0
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        if stub.queue_ms is not None:
            self.send_header("x-bgserve-queue-ms", str(stub.queue_ms))
        self.end_headers()
        self._write(_chunk(stub, {"role": "assistant", "content": ""}))
        time.sleep(stub.first_token_s)
        for index, word in enumerate(stub.words()):
            if index:
                self._pause()
            if stub.stall_after is not None and index >= stub.stall_after:
                time.sleep(stub.stall_s)
                return
            stub.sent += 1  # before the write: the client may read the chunk at once
            self._write(_chunk(stub, {"content": word}))
        self._write(_chunk(stub, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            event: dict[str, Any] = {"id": "chatcmpl-stub", "object": "chat.completion.chunk"}
            event |= {"choices": [], "usage": _usage(stub)}
            self._write(b"data: " + json.dumps(event).encode() + b"\n\n")
        self._write(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _pause(self) -> None:
        stub = self.stub
        if stub.lockstep and not stub._released.acquire(timeout=LOCKSTEP_WAIT_S):
            stub.lockstep_timeouts += 1
        time.sleep(stub.chunk_s)

    def _write(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


@contextmanager
def openai_stub(label: str, **behaviour: Any) -> Iterator[OpenAIStub]:
    """Serve until the block ends; ``behaviour`` sets :class:`OpenAIStub`'s fields."""
    stub = OpenAIStub(label, **behaviour)
    handler = type("Handler", (_Handler,), {"stub": stub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    stub.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
