"""The load generator, run in a process of its own so it never shares a GIL with bgserve.

    python bench/_loadgen.py SPEC.json OUT.json

SPEC names a mode and its paths (each one or more ``[host, port]`` targets taken in turn,
which is how the "direct" path spreads over both slots like the weighted routes do):

- ``latency``: one keep-alive connection per target, one request at a time, paths
  interleaved request by request (the order rotates every round);
- ``throughput``: ``concurrency`` keep-alive connections per path, paths taking turns
  in ``rounds`` segments of equal size;
- ``open``: open loop: one request every ``1 / rate`` seconds on a fixed schedule, whatever
  the answers do, until a line arrives on stdin or ``max_seconds`` pass; every request is
  recorded as (scheduled, sent, done, status, slot, release) in ``time.monotonic()``
  seconds, a clock shared by every process on the machine.

Requests are pre-built bytes over raw sockets: no HTTP library on the client side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

Target = tuple[str, int]


@dataclass(frozen=True)
class Answer:
    """What the client needs from one response."""

    status: int
    slot: str
    release: str


def build_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def parse_head(head: bytes) -> tuple[Answer, int]:
    """The answer and its body length, from a response head ending in a blank line."""
    lines = head.split(b"\r\n")
    status = int(lines[0][9:12])
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if b"content-length" not in fields:
        raise ValueError(f"no content-length in response head {head[:200]!r}")
    slot = fields.get(b"x-bgserve-slot", b"").decode()
    release = fields.get(b"x-bgserve-release", b"").decode()
    return Answer(status, slot, release), int(fields[b"content-length"])


# ----- latency: one request at a time -----


class SyncConn:
    """A blocking keep-alive connection sending one pre-built request."""

    def __init__(self, target: Target, request: bytes) -> None:
        self.sock = socket.create_connection(target)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.buffer = b""

    def call(self) -> Answer:
        self.sock.sendall(self.request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.buffer += self._recv()
        answer, length = parse_head(self.buffer[: end + 4])
        self.buffer = self.buffer[end + 4 :]
        while len(self.buffer) < length:
            self.buffer += self._recv()
        self.buffer = self.buffer[length:]
        return answer

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        return data


def run_latency(spec: dict[str, Any]) -> dict[str, Any]:
    request = build_request(spec["path"], spec["body"].encode())
    paths = spec["paths"]
    conns = {p["name"]: [SyncConn(tuple(t), request) for t in p["targets"]] for p in paths}
    for group in conns.values():  # warm every connection
        for conn in group:
            for _ in range(spec.get("warmup", 20)):
                conn.call()
    latencies: dict[str, list[float]] = {p["name"]: [] for p in paths}
    failures = dict.fromkeys(latencies, 0)
    names = list(latencies)
    for i in range(spec["requests"]):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            group = conns[name]
            conn = group[i % len(group)]
            started = time.perf_counter()
            answer = conn.call()
            latencies[name].append((time.perf_counter() - started) * 1000)
            failures[name] += answer.status != 200
    warmup = {name: spec.get("warmup", 20) * len(group) for name, group in conns.items()}
    return {"latencies_ms": latencies, "failures": failures, "warmup": warmup}


# ----- throughput: many connections per path -----


class AsyncConn:
    """A keep-alive connection on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Target) -> AsyncConn:
        reader, writer = await asyncio.open_connection(*target, limit=1 << 20)
        return cls(reader, writer)

    async def call(self, request: bytes) -> Answer:
        self.writer.write(request)
        answer, length = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        await self.reader.readexactly(length)
        return answer

    def close(self) -> None:
        self.writer.close()


async def _segment(
    conns: list[AsyncConn], request: bytes, n: int, latencies: list[float]
) -> tuple[float, int]:
    """Send ``n`` requests over ``conns`` (each one at a time); (seconds, failures)."""
    remaining = [n]
    failures = [0]

    async def worker(conn: AsyncConn) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            answer = await conn.call(request)
            latencies.append((time.perf_counter() - started) * 1000)
            failures[0] += answer.status != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return time.perf_counter() - started, failures[0]


async def _open_path(path: dict[str, Any], concurrency: int) -> list[AsyncConn]:
    targets = [tuple(t) for t in path["targets"]]
    return [await AsyncConn.open(targets[i % len(targets)]) for i in range(concurrency)]


async def run_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    request = build_request(spec["path"], spec["body"].encode())
    concurrency, rounds = spec["concurrency"], spec["rounds"]
    conns = {p["name"]: await _open_path(p, concurrency) for p in spec["paths"]}
    names = list(conns)
    for name in names:  # warm every connection
        await _segment(conns[name], request, concurrency * spec.get("warmup", 5), [])
    latencies: dict[str, list[float]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    failures = dict.fromkeys(names, 0)
    per_round = max(1, spec["requests"] // rounds)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            took, failed = await _segment(conns[name], request, per_round, latencies[name])
            seconds[name] += took
            failures[name] += failed
    for group in conns.values():
        for conn in group:
            conn.close()
    warmup = dict.fromkeys(names, concurrency * spec.get("warmup", 5))
    return {"latencies_ms": latencies, "seconds": seconds, "failures": failures, "warmup": warmup}


# ----- open loop: a fixed schedule -----


class ConnPool:
    """Idle connections to one target; a new one when none is idle (open loop never waits)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.idle: list[AsyncConn] = []

    async def call(self, request: bytes) -> Answer:
        conn = self.idle.pop() if self.idle else await AsyncConn.open(self.target)
        try:
            answer = await conn.call(request)
        except BaseException:
            conn.close()
            raise
        self.idle.append(conn)
        return answer


async def _one(pool: ConnPool, request: bytes, scheduled: float, out: list[list[Any]]) -> None:
    sent = time.monotonic()
    try:
        answer = await asyncio.wait_for(pool.call(request), 10.0)
        row = [scheduled, sent, time.monotonic(), answer.status, answer.slot, answer.release]
    except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
        row = [scheduled, sent, time.monotonic(), 0, type(exc).__name__, ""]
    out.append(row)


def _stop_on_stdin() -> threading.Event:
    stop = threading.Event()

    def wait() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop


async def run_open(spec: dict[str, Any]) -> dict[str, Any]:
    request = build_request(spec["path"], spec["body"].encode())
    pool = ConnPool(tuple(spec["target"]))
    for _ in range(spec.get("connections", 8)):
        pool.idle.append(await AsyncConn.open(pool.target))
    stop = _stop_on_stdin()
    print("ready", flush=True)
    interval, deadline = 1.0 / spec["rate"], time.monotonic() + spec["max_seconds"]
    rows: list[list[Any]] = []
    tasks = set()
    start = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        scheduled = start + i * interval
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        task = asyncio.ensure_future(_one(pool, request, scheduled, rows))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)
    return {"rows": sorted(rows), "rate": spec["rate"]}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    mode = spec["mode"]
    if mode == "latency":
        result = run_latency(spec)
    elif mode == "throughput":
        result = uvloop.run(run_throughput(spec))
    elif mode == "open":
        result = uvloop.run(run_open(spec))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
