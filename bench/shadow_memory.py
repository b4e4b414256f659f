"""Shadow traffic's memory: the data plane's RSS under large mirrored requests to a slow
green, and after mirroring stops.

One data-plane process (the local backend's) routes deployment ``demo`` to two stub slots
in this process: blue answers at once, green after ``--green-delay`` seconds (a green
running in the background, as a shadowed one does). ``--clients`` clients send
``--requests`` requests of ``--body-mb`` MB in all, first with mirroring off, then with
100% mirrored; then mirroring stops. The data plane's RSS is sampled every 20 ms.

The bound is ``--max-mb`` (BGSERVE_SHADOW_MAX_BYTES). Goals: the peak with mirroring on
stays within the peak with it off plus the bound plus ``CONSTANT_MB`` (allocator slack,
the slice being sent to green, the pairs' 64 KiB bodies while they are parsed); ``--settle``
seconds after it stops, RSS is within ``CONSTANT_MB`` of the peak with mirroring off (the
freed memory is given back with ``malloc_trim``).

    python bench/shadow_memory.py [--requests 400] [--clients 16] [--body-mb 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import goal, goal_rows, save, table

from bgserve.backends.local.backend import LocalBackend
from bgserve.dataplane.wire import RouteTarget

MB = 1024 * 1024
CONSTANT_MB = 48
ANSWER = b'{"outputs": [{"name": "output", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'


def stub(delay: float) -> ThreadingHTTPServer:
    """A slot that reads each request's body and answers after ``delay`` seconds."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Sampler:
    """The peak RSS of a process, sampled on a thread until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = self.now()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def load(url: str, requests: int, clients: int, body: bytes) -> float:
    """Send ``requests`` copies of ``body`` from ``clients`` threads; the seconds taken."""
    per_client = [requests // clients + (n < requests % clients) for n in range(clients)]

    def run(count: int) -> None:
        with httpx.Client(timeout=120) as client:
            for _ in range(count):
                response = client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, per_client))
    return time.monotonic() - started


def phase(pid: int, work: Callable[[], Any]) -> tuple[int, Any]:
    sampler = Sampler(pid)
    try:
        result = work()
    finally:
        peak = sampler.stop()
    return peak, result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    text = "x" * int(args.body_mb * MB)
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]
    body = json.dumps({"inputs": inputs}).encode()
    blue, green = stub(0.0), stub(args.green_delay)
    with tempfile.TemporaryDirectory() as tmp:
        backend = LocalBackend(
            data_port=0, log_dir=Path(tmp), shadow_max_bytes=int(args.max_mb * MB)
        )
        try:
            dp = backend.router
            pid = dp.pid
            assert pid is not None
            dp.set_routes(
                "demo",
                [
                    RouteTarget("blue", 1, "127.0.0.1", blue.server_address[1], 100),
                    RouteTarget("green", 2, "127.0.0.1", green.server_address[1], 0),
                ],
            )
            url = f"http://127.0.0.1:{backend.data_port}/v2/models/demo/infer"
            load(url, args.clients, args.clients, body)  # warm: the parser's buffers
            baseline = psutil.Process(pid).memory_info().rss
            off_peak, off_s = phase(pid, lambda: load(url, args.requests, args.clients, body))
            off_after = psutil.Process(pid).memory_info().rss
            dp.set_shadow("demo", 100, 256)
            on_peak, on_s = phase(pid, lambda: load(url, args.requests, args.clients, body))
            usage = dp.stats()["shadow"]
            page = dp.shadow_pairs("demo", 1000)
            dp.set_shadow("demo", 0, 256)  # what DELETE .../shadow does
            time.sleep(1.0)
            stopped_1s = psutil.Process(pid).memory_info().rss
            time.sleep(max(0.0, args.settle - 1.0))
            stopped = psutil.Process(pid).memory_info().rss
            held_after = dp.stats()["shadow"]["bytes"]
        finally:
            backend.close()
            blue.shutdown()
            green.shutdown()
    return {
        "rss_mb": {
            "baseline": baseline / MB,
            "peak_off": off_peak / MB,
            "after_off": off_after / MB,
            "peak_shadow": on_peak / MB,
            "after_stop_1s": stopped_1s / MB,
            "after_stop": stopped / MB,
        },
        "seconds": {"off": off_s, "shadow": on_s},
        "shadow_usage": dict(usage),
        "held_after_stop": held_after,
        "pairs": len(page["pairs"]),
        "dropped": page["dropped"],
        "dropped_over_bytes": page.get("over_bytes", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--body-mb", type=float, default=8.0)
    parser.add_argument("--max-mb", type=float, default=64.0, help="the shadow byte bound")
    parser.add_argument("--green-delay", type=float, default=0.5)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after stopping")
    args = parser.parse_args()
    result = measure(args)
    rss = result["rss_mb"]
    print(table(["RSS (MB)", "value"], [[k, round(v, 1)] for k, v in rss.items()]))
    usage = result["shadow_usage"]
    print(
        f"shadow bytes: peak {usage['peak_bytes'] / MB:.1f} MiB of {usage['max_bytes'] / MB:.0f}"
        f" MiB; pairs {result['pairs']}, dropped {result['dropped']} "
        f"({result['dropped_over_bytes']} over the byte bound); held after stop "
        f"{result['held_after_stop']}"
    )
    goals = [
        goal("shadow peak bytes (MiB) within the bound", usage["peak_bytes"] / MB, args.max_mb),
        goal(
            "peak RSS with shadow over peak without, minus the bound (MB)",
            rss["peak_shadow"] - rss["peak_off"] - args.max_mb,
            CONSTANT_MB,
        ),
        goal(
            f"RSS {args.settle:.0f} s after stop over peak without shadow (MB)",
            rss["after_stop"] - rss["peak_off"],
            CONSTANT_MB,
        ),
    ]
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    path = save("shadow_memory", {"args": vars(args), **result, "goals": goals})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
