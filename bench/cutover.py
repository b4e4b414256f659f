"""Cutover under load: an open-loop client at a constant rate through a stepped promotion.

The load generator (its own process) sends one request every ``1 / rate`` seconds to the
router whatever the answers do, from a steady-state window before the first step until
after the revert. Meanwhile the control API moves green 0 -> 10 -> 25 -> 50 -> 75 -> 100
with a pause between steps, then reverts. Latency is measured from each request's
scheduled send time, so a stall is charged to every request it delays.

One unlucky pause decides the p99 of a few hundred requests, so the whole sequence runs
``--repeats`` times: the goal holds in *each* run (the worst ratio is the one checked),
the median and spread of the runs' ratios are reported, and every window is also pooled
across runs (p99 and p99.9 over thousands of requests, each with a 95% bootstrap
interval). Garbage-collector pauses per process (bgserve, its data plane, each slot) over
all runs come from their /metrics.

    python bench/cutover.py [--rate 200] [--steady 10] [--pause 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _gc
from _common import (
    OpenLoopClient,
    failure_kinds,
    goal,
    goal_rows,
    percentile,
    save,
    spread,
    table,
)
from _stack import DEPLOYMENT, INFER_BODY, Stack
from _tail import bootstrap

STEPS = (10, 25, 50, 75, 100)
WARMUP_SECONDS = 0.5  # the first requests of the run open the client's connections


def drive(stack: Stack, steady: float, pause: float) -> list[dict[str, Any]]:
    """Wait out the steady window, step through the plan, revert; the marks of each call."""
    marks = [{"step": "steady", "weight": 0, "called": time.monotonic(), "returned": 0.0}]
    time.sleep(steady)
    for weight in STEPS:
        called = time.monotonic()
        stack.set_green_weight(weight)
        marks.append(
            {
                "step": f"to {weight}",
                "weight": weight,
                "called": called,
                "returned": time.monotonic(),
            }
        )
        time.sleep(pause)
    called = time.monotonic()
    stack.revert()
    marks.append({"step": "revert", "weight": 0, "called": called, "returned": time.monotonic()})
    time.sleep(pause)
    return marks


def segment(
    rows: list[list[Any]], start: float, end: float, new_release: str, settled: float = 0.0
) -> dict[str, Any]:
    """Requests scheduled in [start, end): count, failures, p99; the new release's share of
    those scheduled once the step's call returned (``settled``)."""
    inside = [r for r in rows if start <= r[0] < end]
    ok = [r for r in inside if r[3] == 200 and r[0] >= settled]
    latencies = [(r[2] - r[0]) * 1000 for r in inside]
    green = sum(1 for r in ok if r[5] == new_release)
    return {
        "latencies_ms": latencies,
        "requests": len(inside),
        "failures": sum(1 for r in inside if r[3] != 200),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "p999_ms": percentile(latencies, 99.9),
        "max_ms": max(latencies, default=float("nan")),
        "green_share": green / len(ok) if ok else float("nan"),
    }


def analyse(rows: list[list[Any]], marks: list[dict[str, Any]], green: str) -> dict[str, Any]:
    start = rows[0][0] + WARMUP_SECONDS if rows else 0.0
    ends = [m["called"] for m in marks[1:]] + [float("inf")]
    segments = []
    for i, (mark, end) in enumerate(zip(marks, ends, strict=True)):
        begin = start if i == 0 else mark["called"]
        took = mark["returned"] - mark["called"] if i else 0.0
        segments.append(
            {
                "step": mark["step"],
                "weight": mark["weight"],
                "call_ms": took * 1000,
                **segment(rows, begin, end, green, mark["returned"]),
            }
        )
    steady = segments[0]
    cutover = segment(rows, marks[1]["called"], marks[-1]["returned"], green)
    return {
        "segments": segments,
        "steady": steady,
        "cutover": cutover,
        "failures": sum(1 for r in rows if r[3] != 200),
        "failure_kinds": failure_kinds(rows),
        "requests": len(rows),
    }


def one_run(stack: Stack, rate: float, steady: float, pause: float) -> dict[str, Any]:
    """One promotion 0 -> 100 and revert under the open-loop client."""
    stack.set_green_weight(0)
    green = str(stack.releases["b"])
    spec = {
        "target": ("127.0.0.1", stack.api.data_port),
        "rate": rate,
        "max_seconds": 600,
        "path": f"/v2/models/{DEPLOYMENT}/infer",
        "body": INFER_BODY.decode(),
    }
    with OpenLoopClient(spec) as client:
        marks = drive(stack, steady + WARMUP_SECONDS, pause)
    rows = client.result["rows"]
    sent_for = rows[-1][0] - rows[0][0] if rows else 0.0
    result = {
        "achieved_rate": len(rows) / sent_for if sent_for else 0.0,
        **analyse(rows, marks, green),
        "failure_kinds": failure_kinds(rows),
    }
    result["p99_ratio"] = result["cutover"]["p99_ms"] / result["steady"]["p99_ms"]
    return result


def run(stack: Stack, rate: float, steady: float, pause: float, repeats: int = 3) -> dict[str, Any]:
    """``repeats`` runs: each run's ratio, their median and spread, every window pooled."""
    before = _gc.snapshot(stack.api.url, _slot_urls(stack))
    runs = [one_run(stack, rate, steady, pause) for _ in range(repeats)]
    pauses = _gc.delta(before, _gc.snapshot(stack.api.url, _slot_urls(stack)))
    kinds: dict[str, int] = {}
    for each in runs:
        for kind, n in each["failure_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    ratios = [r["p99_ratio"] for r in runs]
    pooled = pool(runs)
    result = {
        "rate": rate,
        "steady_s": steady,
        "pause_s": pause,
        "repeats": repeats,
        "p99_ratios": ratios,
        "p99_ratio_spread": spread(ratios),
        "pooled": pooled,
        "pooled_p99_ratio": pooled[-1]["p99_ms"] / pooled[0]["p99_ms"],
        "segments": _strip(runs[ratios.index(spread(ratios)["median"])]["segments"]),
        "runs": [_run_summary(r) for r in runs],
        "gc_pauses": pauses,
        "requests": sum(r["requests"] for r in runs),
        "failures": sum(r["failures"] for r in runs),
        "failure_kinds": kinds,
        "achieved_rate": min(r["achieved_rate"] for r in runs),
    }
    result["goals"] = [
        goal("failed requests through cutover and revert (all runs)", result["failures"], 0),
        goal("p99 during cutover / steady p99 (worst run)", max(ratios), 1.5),
        goal("p99 during cutover / steady p99 (pooled)", result["pooled_p99_ratio"], 1.5),
        goal("requests/s sent (slowest run)", result["achieved_rate"], rate * 0.95, at_least=True),
        goal("GC pauses over 20 ms, any process", _slow_pauses(pauses), 0),
    ]
    save("cutover", result)
    return result


def _slot_urls(stack: Stack) -> dict[str, str]:
    return {f"slot {name}": stack.endpoints[release] for name, release in stack.releases.items()}


def _slow_pauses(pauses: dict[str, dict[str, Any]]) -> int:
    return sum(int(p["over_20ms"]) for p in pauses.values())


def pool(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each window's latencies pooled across runs (steady first, the whole cutover last)."""
    windows: dict[str, list[float]] = {}
    calls: dict[str, list[float]] = {}
    for each in runs:
        for s in [*each["segments"], {"step": "cutover", **each["cutover"], "call_ms": 0.0}]:
            windows.setdefault(s["step"], []).extend(s["latencies_ms"])
            calls.setdefault(s["step"], []).append(s["call_ms"])
    return [
        {
            "step": step,
            "requests": len(values),
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "p999_ms": percentile(values, 99.9),
            "p99_ci_ms": bootstrap(values, 99),
            "p999_ci_ms": bootstrap(values, 99.9),
            "max_ms": max(values, default=float("nan")),
            "call_ms_median": spread(calls[step])["median"],
        }
        for step, values in windows.items()
    ]


def _strip(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "latencies_ms"} for s in segments]


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "p99_ratio": run["p99_ratio"],
        "steady_p99_ms": run["steady"]["p99_ms"],
        "cutover_p99_ms": run["cutover"]["p99_ms"],
        "steady_p999_ms": run["steady"]["p999_ms"],
        "cutover_p999_ms": run["cutover"]["p999_ms"],
        "steady_requests": run["steady"]["requests"],
        "cutover_requests": run["cutover"]["requests"],
        "failures": run["failures"],
    }


def render(result: dict[str, Any]) -> str:
    headers = ["window", "requests", "p50 ms", "p99 ms", "95% CI", "p99.9 ms", "95% CI"]
    headers += ["max ms", "call ms"]
    rows = [
        [
            w["step"],
            w["requests"],
            w["p50_ms"],
            w["p99_ms"],
            "{:.1f}-{:.1f}".format(*w["p99_ci_ms"]),
            w["p999_ms"],
            "{:.1f}-{:.1f}".format(*w["p999_ci_ms"]),
            w["max_ms"],
            w["call_ms_median"] if w["step"] not in ("steady", "cutover") else "",
        ]
        for w in result["pooled"]
    ]
    s = result["p99_ratio_spread"]
    title = (
        f"Cutover under load: open loop at {result['rate']:g} requests/s "
        f"({result['achieved_rate']:.0f} achieved), {result['steady_s']:g} s steady, "
        f"{result['pause_s']:g} s between steps, {result['repeats']} runs, "
        f"{result['requests']} requests in all.\n"
        f"p99 cutover / steady per run: {', '.join(f'{r:.2f}' for r in result['p99_ratios'])} "
        f"(median {s['median']:.2f}, spread {s['min']:.2f}-{s['max']:.2f}); "
        f"pooled: {result['pooled_p99_ratio']:.2f}. Every window pooled across runs:"
    )
    shares = ", ".join(f"{g['step']} {g['green_share']:.0%}" for g in result["segments"])
    return "\n".join(
        [
            title,
            table(headers, rows),
            f"green share once each call returned (median run): {shares}",
            f"failed requests by kind: {result['failure_kinds'] or 'none'}",
            "",
            "GC during all runs:",
            table(_gc.HEADERS, _gc.rows(result["gc_pauses"])),
            _gc.NOTE,
            "",
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--steady", type=float, default=10.0, help="seconds before the first step")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with Stack() as stack:
        result = run(stack, args.rate, args.steady, args.pause, args.repeats)
    print(render(result))


if __name__ == "__main__":
    main()
