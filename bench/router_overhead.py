"""Router overhead: the same two slots called directly, through bgserve and through nginx.

One `bgserve serve` (control API + data-plane process) routes deployment ``bench`` 50/50 over
two slots serving a trivial bundle; nginx gets the same weighted pair. The load generator
(its own process) calls the three paths interleaved: at concurrency 1 request by
request over one keep-alive connection per path (direct alternates between the two
slots), at concurrency 32 in alternating segments over 32 keep-alive connections each.

At concurrency 32 each path gets ``--concurrent-requests`` (10,000 by default: a tail
"per 10,000 requests" needs at least that many).

    python bench/router_overhead.py [--requests 2000] [--concurrent-requests 10000]
        [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import _gc
import psutil
from _common import goal, goal_rows, run_client, save, summary, table
from _nginx import Nginx, find_nginx
from _stack import DEPLOYMENT, INFER_BODY, Stack

SPLIT = 50  # green's weight on both proxies


def nginx_binary(required: bool) -> str | None:
    """nginx, or None (with a note) when it is missing and not required."""
    binary = find_nginx()
    if binary is None and required:
        raise SystemExit("nginx not found: run bench/setup.sh (apt-get install nginx-light)")
    if binary is None:
        print("nginx not found (run bench/setup.sh): the nginx path is skipped")
    return binary


def paths(stack: Stack, nginx_port: int | None) -> list[dict[str, Any]]:
    found = [
        {"name": "direct", "targets": stack.slot_addresses()},
        {"name": "bgserve", "targets": [("127.0.0.1", stack.api.data_port)]},
    ]
    if nginx_port is not None:
        found.append({"name": "nginx", "targets": [("127.0.0.1", nginx_port)]})
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of these processes so far."""
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in procs))


def measure(
    stack: Stack, levels: list[int], requests: tuple[int, int], nginx: Nginx | None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows per path and level, and the proxies' CPU time per request in microseconds."""
    serve = psutil.Process(stack.api.proc.pid)
    plane = [c for c in serve.children() if "bgserve.backends.local.dataplane" in c.cmdline()]
    proxies = {"bgserve": [serve, *plane]}  # the control process and its data-plane process
    if nginx is not None:
        proxies["nginx"] = nginx.processes()
    used = {name: cpu_seconds(procs) for name, procs in proxies.items()}
    rows, sent = measure_levels(stack, levels, requests, nginx.port if nginx else None)
    cpu = {
        name: (cpu_seconds(procs) - used[name]) / sent[name] * 1e6
        for name, procs in proxies.items()
    }
    return rows, cpu


def measure_levels(
    stack: Stack, levels: list[int], requests: tuple[int, int], nginx_port: int | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    base = {"path": f"/v2/models/{DEPLOYMENT}/infer", "body": INFER_BODY.decode()}
    rows: list[dict[str, Any]] = []
    sent: dict[str, int] = {}
    for level in levels:
        count = requests[0] if level == 1 else requests[1]
        spec = {**base, "paths": paths(stack, nginx_port), "requests": count}
        if level == 1:
            result = run_client({**spec, "mode": "latency"})
        else:
            spec |= {"mode": "throughput", "concurrency": level, "rounds": 8}
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
                "throughput_rps": len(latencies) / seconds,
                "failures": result["failures"][name],
            }
        )
    direct = {r["concurrency"]: r for r in rows if r["path"] == "direct"}[level]
    for row in rows:
        row["added_p50_ms"] = row["p50_ms"] - direct["p50_ms"]
        row["added_p99_ms"] = row["p99_ms"] - direct["p99_ms"]
    return rows


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
    require_nginx: bool,
    concurrent_requests: int | None = None,
) -> dict[str, Any]:
    """``requests`` per path at concurrency 1, ``concurrent_requests`` (default the same)
    at each higher level."""
    counts = (requests, concurrent_requests or requests)
    stack.set_green_weight(SPLIT)
    slots = {f"slot {name}": stack.endpoints[release] for name, release in stack.releases.items()}
    before = _gc.snapshot(stack.api.url, slots)
    binary = nginx_binary(require_nginx)
    if binary is None:
        rows, cpu = measure(stack, levels, counts, None)
    else:
        (a_host, a_port), (b_host, b_port) = stack.slot_addresses()
        upstreams = [(a_host, a_port, 100 - SPLIT), (b_host, b_port, SPLIT)]
        with Nginx(binary, upstreams) as nginx:
            rows, cpu = measure(stack, levels, counts, nginx)
    result = {
        "requests_per_path": requests,
        "concurrent_requests_per_path": counts[1],
        "split": SPLIT,
        "rows": rows,
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
            "GC during the run:",
            table(_gc.HEADERS, _gc.rows(result["gc_pauses"])),
            _gc.NOTE,
            "",
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrent-requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    with Stack() as stack:
        ci = bool(os.environ.get("CI"))
        result = run(stack, args.requests, args.concurrency, ci, args.concurrent_requests)
    print(render(result))


if __name__ == "__main__":
    main()
