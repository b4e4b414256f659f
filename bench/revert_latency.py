"""Revert latency: how long after POST /revert returns a request can still reach green.

An open-loop client (its own process) calls the router at a constant rate throughout.
Each trial promotes green to 100 (so the last good release becomes the standby), lets
traffic settle, then reverts. The revert is effective at the send time of the last
request answered by the wrong release; the figure is that moment minus the moment the
revert returned, clamped at 0 (0 means every request sent after the return was
answered by the last good release).

    python bench/revert_latency.py [--trials 20] [--rate 500]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import OpenLoopClient, failure_kinds, goal, goal_rows, percentile, save, table
from _stack import DEPLOYMENT, INFER_BODY, Stack

SETTLE_SECONDS = 0.2


def trial(stack: Stack) -> dict[str, Any]:
    """Promote to 100, let traffic settle, revert; the marks and the releases involved."""
    promoted = stack.set_green_weight(100)
    time.sleep(SETTLE_SECONDS)
    called = time.monotonic()
    reverted = stack.revert()
    returned = time.monotonic()
    time.sleep(SETTLE_SECONDS)
    return {
        "called": called,
        "returned": returned,
        "end": time.monotonic(),
        "good": str(reverted["blue"]["release"]["id"]),
        "wrong": str(promoted["blue"]["release"]["id"]),
    }


def measure(rows: list[list[Any]], mark: dict[str, Any]) -> dict[str, Any]:
    """Effective delay of one revert, from the requests sent around it."""
    window = [r for r in rows if mark["called"] - SETTLE_SECONDS <= r[1] < mark["end"]]
    wrong = [r[1] for r in window if r[3] == 200 and r[5] == mark["wrong"]]
    last_wrong = max(wrong, default=mark["called"])
    after = [r for r in window if r[1] >= mark["returned"]]
    return {
        "effective_ms": max(0.0, last_wrong - mark["returned"]) * 1000,
        "switch_after_call_ms": max(0.0, last_wrong - mark["called"]) * 1000,
        "call_ms": (mark["returned"] - mark["called"]) * 1000,
        "requests_after_return": len(after),
        "wrong_after_return": sum(1 for r in after if r[5] == mark["wrong"]),
        "failures": sum(1 for r in window if r[3] != 200),
    }


def run(stack: Stack, trials: int, rate: float) -> dict[str, Any]:
    stack.set_green_weight(0)
    spec = {
        "target": ("127.0.0.1", stack.api.data_port),
        "rate": rate,
        "max_seconds": 600,
        "path": f"/v2/models/{DEPLOYMENT}/infer",
        "body": INFER_BODY.decode(),
    }
    with OpenLoopClient(spec) as client:
        time.sleep(SETTLE_SECONDS)
        marks = [trial(stack) for _ in range(trials)]
    rows = client.result["rows"]
    results = [measure(rows, m) for m in marks]
    effective = [r["effective_ms"] for r in results]
    summary = {
        "trials": trials,
        "rate": rate,
        "results": results,
        "effective_p50_ms": percentile(effective, 50),
        "effective_max_ms": max(effective),
        "switch_p50_ms": percentile([r["switch_after_call_ms"] for r in results], 50),
        "call_p50_ms": percentile([r["call_ms"] for r in results], 50),
        "failures": sum(1 for r in rows if r[3] != 200),
        "failure_kinds": failure_kinds(rows),
        "requests": len(rows),
    }
    summary["goals"] = [
        goal("revert effective after return, max (ms)", summary["effective_max_ms"], 50),
        goal("failed requests during the trials", summary["failures"], 0),
    ]
    save("revert_latency", summary)
    return summary


def render(result: dict[str, Any]) -> str:
    headers = [
        "trial",
        "effective ms",
        "switch after call ms",
        "revert call ms",
        "sent after return",
        "wrong after return",
        "failed",
    ]
    rows = [
        [
            i + 1,
            r["effective_ms"],
            r["switch_after_call_ms"],
            r["call_ms"],
            r["requests_after_return"],
            r["wrong_after_return"],
            r["failures"],
        ]
        for i, r in enumerate(result["results"])
    ]
    title = (
        f"Revert latency: {result['trials']} trials, open loop at {result['rate']:g} "
        f"requests/s; effective p50 {result['effective_p50_ms']:.2f} ms, "
        f"max {result['effective_max_ms']:.2f} ms (switch p50 "
        f"{result['switch_p50_ms']:.1f} ms after the call, call p50 "
        f"{result['call_p50_ms']:.1f} ms)"
    )
    return "\n".join(
        [
            title,
            table(headers, rows),
            f"failed requests by kind: {result['failure_kinds'] or 'none'}",
            "",
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    with Stack() as stack:
        result = run(stack, args.trials, args.rate)
    print(render(result))


if __name__ == "__main__":
    main()
