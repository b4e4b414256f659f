"""Every data-plane benchmark on one bgserve stack: router overhead, cutover, revert,
footprint, and the slots' garbage-collector pauses with and without gc.freeze().

Each prints its table and writes ``bench/results/<name>.json``; ``--smoke`` runs them
with tiny sizes (seconds each), which is what the test suite does so they do not rot.

    python bench/perf.py [--smoke] [--only NAME ...]   (NAMES below)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import cutover
import footprint
import gc_pauses
import revert_latency
import router_overhead
from _stack import Stack

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "router_overhead": {"requests": 5000, "concurrent_requests": 10_000, "levels": [1, 32]},
        "cutover": {"rate": 200.0, "steady": 10.0, "pause": 3.0, "repeats": 3},
        "revert_latency": {"trials": 20, "rate": 500.0},
        "footprint": {"load_requests": 4000},
        "gc_pauses": {"requests": 10_000, "concurrency": 32},
    },
    "smoke": {
        "router_overhead": {"requests": 64, "levels": [1, 32]},
        "cutover": {"rate": 200.0, "steady": 1.0, "pause": 0.3, "repeats": 1},
        "revert_latency": {"trials": 3, "rate": 200.0},
        "footprint": {"load_requests": 200},
        "gc_pauses": {"requests": 200, "concurrency": 8},
    },
}
NAMES = tuple(SIZES["full"])


def runners(require_peers: bool) -> dict[str, tuple[Callable[..., Any], Callable[..., str]]]:
    def overhead(
        stack: Stack, requests: int, levels: list[int], concurrent_requests: int | None = None
    ) -> Any:
        return router_overhead.run(stack, requests, levels, require_peers, concurrent_requests)

    return {
        "router_overhead": (overhead, router_overhead.render),
        "cutover": (cutover.run, cutover.render),
        "revert_latency": (revert_latency.run, revert_latency.render),
        "footprint": (footprint.run, footprint.render),
        "gc_pauses": (gc_pauses.run, gc_pauses.render),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    args = parser.parse_args()
    sizes = SIZES["smoke" if args.smoke else "full"]
    table = runners(require_peers=bool(os.environ.get("CI")))
    started = time.monotonic()
    with Stack() as stack:
        print(f"stack ready in {time.monotonic() - started:.1f}s", flush=True)
        for name in args.only:
            run, render = table[name]
            begun = time.monotonic()
            result = run(stack, **sizes[name])
            print(f"\n{render(result)}\n({name}: {time.monotonic() - begun:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
