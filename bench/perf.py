"""Every data-plane benchmark on one bgserve stack: router overhead, cutover, revert, footprint.

Each prints its table and writes ``bench/results/<name>.json``; ``--smoke`` runs them
with tiny sizes (seconds each), which is what the test suite does so they do not rot.

    python bench/perf.py [--smoke] [--only router_overhead cutover revert_latency footprint]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import cutover
import footprint
import revert_latency
import router_overhead
from _stack import Stack

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "router_overhead": {"requests": 2000, "levels": [1, 32]},
        "cutover": {"rate": 200.0, "steady": 4.0, "pause": 2.0, "repeats": 3},
        "revert_latency": {"trials": 20, "rate": 500.0},
        "footprint": {"load_requests": 4000},
    },
    "smoke": {
        "router_overhead": {"requests": 64, "levels": [1, 32]},
        "cutover": {"rate": 200.0, "steady": 1.0, "pause": 0.3, "repeats": 1},
        "revert_latency": {"trials": 3, "rate": 200.0},
        "footprint": {"load_requests": 200},
    },
}
NAMES = tuple(SIZES["full"])


def runners(require_nginx: bool) -> dict[str, tuple[Callable[..., Any], Callable[..., str]]]:
    def overhead(stack: Stack, requests: int, levels: list[int]) -> Any:
        return router_overhead.run(stack, requests, levels, require_nginx)

    return {
        "router_overhead": (overhead, router_overhead.render),
        "cutover": (cutover.run, cutover.render),
        "revert_latency": (revert_latency.run, revert_latency.render),
        "footprint": (footprint.run, footprint.render),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    args = parser.parse_args()
    sizes = SIZES["smoke" if args.smoke else "full"]
    table = runners(require_nginx=bool(os.environ.get("CI")))
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
