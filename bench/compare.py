"""Comparison throughput: N golden cases, concurrency 1 vs 16, on two models.

Runs a real bgserve stack in a temporary directory (MLflow on SQLite, two slot
processes a model), compares blue (the summarizer) with green (the same model + the
reworded prompt) on generated cases, and prints the wall time at each concurrency and
the speedup, for a summarizer variant that takes 50 ms an answer, as a small hosted model
would (goal: 500 cases at 16 at least 10x faster than at 1); ``--delays 0 50`` also runs
the instant demo model first. Every comparison is complete: warm-up, latency probe,
scoring, MLflow logging.

    python bench/compare.py [--cases 500] [--concurrency 1 16] [--delays 0 50]
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
from bgserve.demo.models import push_demo_prompts, register_demo_models, register_variant
from bgserve.demo.run import demo_settings
from bgserve.evaluation.golden import GoldenCase, parse_cases

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


def run(n_cases: int, levels: list[int], delay_ms: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bgserve-bench-") as tmp:
        settings = demo_settings(Path(tmp))
        uri = settings.mlflow_tracking_uri
        register_demo_models(uri, uri)
        push_demo_prompts(uri, uri)
        version = 1
        if delay_ms:
            config = {"max_words": 12, "delay_ms": delay_ms}
            version = register_variant(uri, uri, f"delay-{delay_ms}", config)
        parts = build_components(settings)
        try:
            service = parts.service
            model = f"models:/summarizer/{version}"
            blue = service.register_release("blue", model, "prompts:/summarize/1", "bench")
            green = service.register_release("green", model, "prompts:/summarize/2", "bench")
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
    return {"cases": n_cases, "delay_ms": delay_ms, "seconds": seconds, "machine": machine()}


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--delays", type=int, nargs="+", default=[50], help="ms an answer (0: instant model)"
    )
    args = parser.parse_args()
    results = []
    for delay in args.delays:
        result = run(args.cases, args.concurrency, delay)
        results.append(result)
        seconds: dict[int, float] = result["seconds"]  # type: ignore[assignment]
        base = seconds[args.concurrency[0]]
        print(
            f"{args.cases} golden cases, blue and green each, model {delay} ms an answer "
            f"({result['machine']})"
        )
        print(f"{'concurrency':>12} {'seconds':>9} {'cases/s':>9} {'speedup':>8}")
        for level, took in seconds.items():
            print(f"{level:>12} {took:>9.2f} {args.cases / took:>9.1f} {base / took:>7.2f}x")
    RESULTS.mkdir(exist_ok=True)
    saved = {**results[0], "runs": results}
    (RESULTS / "compare.json").write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
