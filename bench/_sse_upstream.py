"""A deterministic SSE upstream for bench/sse.py: an LLM slot stand-in that streams at a
fixed pace.

Run as its own process: ``python bench/_sse_upstream.py --chunks N --interval-ms MS``. It
listens on a free loopback port, prints the port on stdout, and answers every ``POST``
(bgserve's path ``/openai/v1/chat/completions`` or any other) over keep-alive HTTP/1.1
with an OpenAI ``chat.completion.chunk`` stream in chunked encoding: the role chunk with
the head at once, then ``N`` content chunks, one every ``MS`` milliseconds (the first one
after ``MS`` too: the "prefill"), the finish chunk, a ``usage`` chunk and ``[DONE]``.
Each content chunk carries ``bench_sent_ns``, ``time.monotonic_ns()`` just before the
chunk is written, and ``bench_request_ns``, when the request had been read whole
(CLOCK_MONOTONIC, the same clock in every process on Linux): the client can tell how long
a chunk took to reach it, and which part of its time to first token the upstream spent.
``GET`` answers 200 (health probes). It stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
HEALTH += b'{"ready": true}'


def event(payload: dict[str, Any]) -> bytes:
    """One SSE event in one HTTP chunk."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0}
    return event({**base, "model": "sse-stub", "choices": [choice], **extra})


class Upstream:
    """Streams ``chunks`` content chunks ``interval_s`` apart per request."""

    def __init__(self, chunks: int, interval_s: float) -> None:
        self.chunks, self.interval_s = chunks, interval_s

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = content_length(head)
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET "):
                    writer.write(HEALTH)
                else:
                    await self.stream(writer, time.monotonic_ns())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer: asyncio.StreamWriter, request_ns: int) -> None:
        """The whole answer to a request read completely at ``request_ns``."""
        writer.write(HEAD + chunk({"role": "assistant", "content": ""}))
        for index in range(self.chunks):
            await asyncio.sleep(self.interval_s)
            delta = {"content": f"t{index} "}
            stamps = {"bench_request_ns": request_ns, "bench_sent_ns": time.monotonic_ns()}
            writer.write(chunk(delta, **stamps))
        usage = {"prompt_tokens": 5, "completion_tokens": self.chunks}
        usage["total_tokens"] = 5 + self.chunks
        writer.write(chunk({}, "stop") + event({"object": "chat.completion.chunk", "usage": usage}))
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        await writer.drain()


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def main(chunks: int, interval_ms: float) -> None:
    upstream = Upstream(chunks, interval_ms / 1000)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read() or stop.set())
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.interval_ms))
