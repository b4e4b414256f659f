"""Router overhead: the same two slots called directly, through bgserve, nginx and HAProxy.

One `bgserve serve` (control API + data-plane process) routes deployment ``bench`` 50/50 over
two slots serving a trivial bundle; nginx (one worker) and HAProxy (one thread) get the same
weighted pair. The load generator (its own process) calls the four paths interleaved: at
concurrency 1 request by request over one keep-alive connection per path (direct alternates
between the two slots), at concurrency 32 in alternating segments (``ROUNDS`` per path) over
32 keep-alive connections each.

Each path gets ``--requests`` at concurrency 1 and ``--concurrent-requests`` at higher
levels (5,000 and 10,000 by default: a tail "per 10,000 requests" needs at least that many).
Every p99 comes with its spread over the rounds and a 95% bootstrap interval, every p99.9
with its interval (``_tail.py``); the proxies' p50/p99/p99.9 are compared pairwise.

    python bench/router_overhead.py [--requests 5000] [--concurrent-requests 10000]
        [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack
from itertools import combinations
from typing import Any

import _gc
import psutil
from _common import goal, goal_rows, run_client, save, summary, table
from _peers import Peer, start_peers
from _stack import DEPLOYMENT, INFER_BODY, Stack
from _tail import ratio_spread, tail

SPLIT = 50  # green's weight on every proxy
ROUNDS = 8  # segments per path at concurrency > 1; parts of the interleaved run at 1
PROXIES = ("bgserve", "nginx", "haproxy")


def paths(stack: Stack, peers: dict[str, Peer]) -> list[dict[str, Any]]:
    found = [
        {"name": "direct", "targets": stack.slot_addresses()},
        {"name": "bgserve", "targets": [("127.0.0.1", stack.api.data_port)]},
    ]
    found += [{"name": name, "targets": [("127.0.0.1", p.port)]} for name, p in peers.items()]
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of these processes so far."""
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in procs))


def measure(
    stack: Stack, levels: list[int], requests: tuple[int, int], peers: dict[str, Peer]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows per path and level, and the proxies' CPU time per request in microseconds."""
    serve = psutil.Process(stack.api.proc.pid)
    plane = [c for c in serve.children() if "bgserve.dataplane.main" in c.cmdline()]
    proxies = {"bgserve": [serve, *plane]}  # the control process and its data-plane process
    proxies |= {name: peer.processes() for name, peer in peers.items()}
    used = {name: cpu_seconds(procs) for name, procs in proxies.items()}
    rows, sent = measure_levels(stack, levels, requests, peers)
    cpu = {
        name: (cpu_seconds(procs) - used[name]) / sent[name] * 1e6
        for name, procs in proxies.items()
    }
    return rows, cpu


def measure_levels(
    stack: Stack, levels: list[int], requests: tuple[int, int], peers: dict[str, Peer]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    base = {"path": f"/v2/models/{DEPLOYMENT}/infer", "body": INFER_BODY.decode()}
    rows: list[dict[str, Any]] = []
    sent: dict[str, int] = {}
    for level in levels:
        count = requests[0] if level == 1 else requests[1]
        spec = {**base, "paths": paths(stack, peers), "requests": count}
        if level == 1:
            result = run_client({**spec, "mode": "latency"})
        else:
            spec |= {"mode": "throughput", "concurrency": level, "rounds": ROUNDS}
            result = run_client(spec)
        rows += level_rows(level, result)
        for name, latencies in result["latencies_ms"].items():
            sent[name] = sent.get(name, 0) + len(latencies) + result["warmup"][name]
    return rows, sent


def level_rows(level: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, latencies in result["latencies_ms"].items():
        stats = summary(latencies)
        seconds = result.get("seconds", {}).get(name) or sum(latencies) / 1000
        rows.append(
            {
                "path": name,
                "concurrency": level,
                **stats,
                **tail(latencies, ROUNDS),
                "throughput_rps": len(latencies) / seconds,
                "failures": result["failures"][name],
            }
        )
    direct = {r["concurrency"]: r for r in rows if r["path"] == "direct"}[level]
    for row in rows:
        row["added_p50_ms"] = row["p50_ms"] - direct["p50_ms"]
        row["added_p99_ms"] = row["p99_ms"] - direct["p99_ms"]
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each proxy's p50/p99/p99.9 over each other's at each level, and the spread of the
    round-by-round p99 ratio (their rounds ran side by side)."""
    by = {(r["path"], r["concurrency"]): r for r in rows}
    found = []
    for level in sorted({r["concurrency"] for r in rows}):
        present = [p for p in PROXIES if (p, level) in by]
        for top, bottom in combinations(present, 2):
            a, b = by[top, level], by[bottom, level]
            found.append(
                {
                    "pair": f"{top} / {bottom}",
                    "concurrency": level,
                    **{k: a[k] / b[k] for k in ("p50_ms", "p99_ms", "p999_ms")},
                    "p99_by_round": ratio_spread(a["p99_by_round_ms"], b["p99_by_round_ms"]),
                }
            )
    return found


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["path"], r["concurrency"]): r for r in rows}
    found = []
    if ("bgserve", 1) in by:
        added = by["bgserve", 1]["added_p50_ms"]
        found.append(goal("c=1 p50 added by bgserve (ms)", added, 0.6))
        if ("nginx", 1) in by:
            nginx_added = max(by["nginx", 1]["added_p50_ms"], 0.01)
            found.append(goal("c=1 bgserve added p50 / nginx added p50", added / nginx_added, 2.0))
    c32 = [c for p, c in by if p == "nginx" and c > 1]
    for level in c32:
        ratio = by["bgserve", level]["throughput_rps"] / by["nginx", level]["throughput_rps"]
        found.append(goal(f"c={level} throughput bgserve / nginx", ratio, 0.8, at_least=True))
        p99 = by["bgserve", level]["p99_ms"] / by["nginx", level]["p99_ms"]
        found.append(goal(f"c={level} p99 bgserve / nginx", p99, 1.3))
    for (path, level), row in by.items():
        if level > 1 and path in ("direct", "bgserve"):
            slow = row["over_150ms_per_10k"]
            found.append(goal(f"c={level} {path}: requests over 150 ms per 10,000", slow, 0))
    return found


def run(
    stack: Stack,
    requests: int,
    levels: list[int],
    require_peers: bool,
    concurrent_requests: int | None = None,
) -> dict[str, Any]:
    """``requests`` per path at concurrency 1, ``concurrent_requests`` (default the same)
    at each higher level."""
    counts = (requests, concurrent_requests or requests)
    stack.set_green_weight(SPLIT)
    slots = {f"slot {name}": stack.endpoints[release] for name, release in stack.releases.items()}
    before = _gc.snapshot(stack.api.url, slots)
    (a_host, a_port), (b_host, b_port) = stack.slot_addresses()
    upstreams = [(a_host, a_port, 100 - SPLIT), (b_host, b_port, SPLIT)]
    with ExitStack() as context:
        peers = start_peers(context, upstreams, require_peers)
        rows, cpu = measure(stack, levels, counts, peers)
    result = {
        "requests_per_path": requests,
        "concurrent_requests_per_path": counts[1],
        "split": SPLIT,
        "rows": rows,
        "ratios": ratios(rows),
        "proxy_cpu_us_per_request": cpu,
        "gc_pauses": _gc.delta(before, _gc.snapshot(stack.api.url, slots)),
        "goals": goals(rows),
    }
    save("router_overhead", result)
    return result


def render(result: dict[str, Any]) -> str:
    headers = [
        "path",
        "conc",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        ">150 ms /10k",
        "req/s",
        "+p50 ms",
        "+p99 ms",
        "failed",
    ]
    rows = [
        [
            r["path"],
            r["concurrency"],
            r["n"],
            r["p50_ms"],
            r["p90_ms"],
            r["p99_ms"],
            r["p999_ms"],
            r["over_150ms_per_10k"],
            round(r["throughput_rps"]),
            r["added_p50_ms"],
            r["added_p99_ms"],
            r["failures"],
        ]
        for r in result["rows"]
    ]
    title = (
        f"Router overhead: {result['requests_per_path']} requests per path at c=1, "
        f"{result['concurrent_requests_per_path']} at higher levels, "
        f"weights {100 - result['split']}/{result['split']}"
    )
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in result["proxy_cpu_us_per_request"].items())
    return "\n".join(
        [
            title,
            table(headers, rows),
            f"proxy CPU time per request (us, all levels): {cpu}",
            "",
            f"The tail: p99 of each of {ROUNDS} rounds (min-median-max), 95% bootstrap intervals:",
            table(TAIL_HEADERS, [tail_row(r) for r in result["rows"]]),
            "",
            "Proxies side by side (ratio of the first to the second, same run):",
            table(RATIO_HEADERS, [ratio_row(r) for r in result["ratios"]]),
            "",
            "GC during the run:",
            table(_gc.HEADERS, _gc.rows(result["gc_pauses"])),
            _gc.NOTE,
            "",
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
        ]
    )


TAIL_HEADERS = ["path", "conc", "p99 ms", "p99 rounds", "p99 95% CI", "p99.9 ms", "p99.9 95% CI"]
RATIO_HEADERS = ["pair", "conc", "p50", "p99", "p99.9", "p99 by round (min-med-max)"]


def _span(low: float, high: float, mid: float | None = None) -> str:
    return f"{low:.1f}-{mid:.1f}-{high:.1f}" if mid is not None else f"{low:.1f}-{high:.1f}"


def tail_row(row: dict[str, Any]) -> list[object]:
    s = row["p99_round_spread_ms"]
    return [
        row["path"],
        row["concurrency"],
        row["p99_ms"],
        _span(s["min"], s["max"], s["median"]),
        _span(*row["p99_ci_ms"]),
        row["p999_ms"],
        _span(*row["p999_ci_ms"]),
    ]


def ratio_row(row: dict[str, Any]) -> list[object]:
    s = row["p99_by_round"]
    spread = f"{s['min']:.2f}-{s['median']:.2f}-{s['max']:.2f}"
    return [row["pair"], row["concurrency"], row["p50_ms"], row["p99_ms"], row["p999_ms"], spread]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrent-requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    with Stack() as stack:
        ci = bool(os.environ.get("CI"))
        result = run(stack, args.requests, args.concurrency, ci, args.concurrent_requests)
    print(render(result))


if __name__ == "__main__":
    main()
