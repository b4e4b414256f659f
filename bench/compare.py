"""Comparison throughput: N golden cases against the demo model, concurrency 1 vs 16.

Runs a real bgserve stack in a temporary directory (MLflow on SQLite, two slot
processes), compares blue (summarizer v1) with green (v1 + reworded prompt) on
generated cases, and prints the wall time at each concurrency and the speedup.

    python bench/compare.py [--cases 500] [--concurrency 1 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bgserve.compose import build_components
from bgserve.demo.models import push_demo_prompts, register_demo_models
from bgserve.demo.run import demo_settings
from bgserve.domain.golden import GoldenCase, parse_cases

RESULTS = Path(__file__).parent / "results"
WORDS = [
    "blue",
    "green",
    "release",
    "prompt",
    "model",
    "traffic",
    "weight",
    "revert",
    "golden",
    "case",
    "slot",
    "router",
    "latency",
    "bundle",
    "alias",
    "registry",
]


def generated_cases(n: int) -> list[GoldenCase]:
    """``n`` deterministic cases with texts of varying length."""
    cases = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(5 + i % 20)]
        text = " ".join(words).capitalize() + ". " + " ".join(reversed(words)) + "."
        cases.append(
            {
                "id": f"c{i}",
                "inputs": {"text": text},
                "assert": [{"type": "max_latency_ms", "value": 5000}],
            }
        )
    return parse_cases(cases)


def run(n_cases: int, levels: list[int]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bgserve-bench-") as tmp:
        settings = demo_settings(Path(tmp))
        uri = settings.mlflow_tracking_uri
        register_demo_models(uri, uri)
        push_demo_prompts(uri, uri)
        parts = build_components(settings)
        try:
            service = parts.service
            blue = service.register_release(
                "blue", "models:/summarizer/1", "prompts:/summarize/1", "bench"
            )
            green = service.register_release(
                "green", "models:/summarizer/1", "prompts:/summarize/2", "bench"
            )
            service.create_deployment("bench", blue.id, "bench")
            service.stage_green("bench", green.id, "bench")
            cases = generated_cases(n_cases)
            parts.comparer.compare("bench", cases[:10], "bench")  # warm the slots' connections
            seconds = {}
            for level in levels:
                parts.comparer.settings = replace(parts.comparer.settings, concurrency=level)
                started = time.perf_counter()
                _, report = parts.comparer.compare("bench", cases, "bench")
                seconds[level] = time.perf_counter() - started
                assert report.verdict.passed, report.verdict.reasons
        finally:
            parts.close()
    return {"cases": n_cases, "seconds": seconds, "machine": machine()}


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    result = run(args.cases, args.concurrency)
    seconds: dict[int, float] = result["seconds"]  # type: ignore[assignment]
    base = seconds[args.concurrency[0]]
    print(f"{args.cases} golden cases, blue and green each ({result['machine']})")
    print(f"{'concurrency':>12} {'seconds':>9} {'cases/s':>9} {'speedup':>8}")
    for level, took in seconds.items():
        print(f"{level:>12} {took:>9.2f} {args.cases / took:>9.1f} {base / took:>7.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
