"""Live analysis under load: automatic reverts of an identical green (false positives) and
of bad greens (power), with CPU burners beside the stack.

One local backend (real slot processes, the data-plane process, a real MLflow store on
SQLite) serves deployment ``load``; blue is the demo summarizer made a 5 ms model
(``delay_ms`` 5). Each plan stages a **fresh** green process, compares it on the golden
set (which also gives the warm-up its inputs), and runs the default plan (settings below:
steps 10, 50, 100, bake 2 s, the default initial delay, warm-up, floors and ratios) under
``--clients`` of the demo's live clients (each one request at a time, 5 ms apart) while
``--burners`` processes spin at normal priority beside it. The greens:

- ``identical``: the same model version and prompt as blue, as a new release: every
  automatic revert is a false positive (goal: 0 of ``--identical`` plans);
- ``errors``: the flaky model (fails the live texts over 200 characters: 2 of 9, 22%);
- ``slow``: the same model 30 ms slower (``delay_ms`` 35).

A promoted identical green becomes blue, so the next plan's blue has served for a while
and its green is new: the case the analysis must not mistake for a regression. Figures:
reverts of the identical green, detection of each bad green and the time from its first
step's weight to the revert (goal: within initial delay + bake + 1 s), and the time the
warm-up added before the first step.

``--baseline`` runs every plan against a baseline (a fresh copy of blue beside green).

    python bench/analysis_load.py [--identical 50] [--bad 5] [--burners 2] [--clients 4]
        [--baseline]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from _burners import burners
from _common import goal, goal_rows, machine, save, table
from _plans import run_plan_to_end

from bgserve.app.golden_sets import load_golden_set
from bgserve.compose import Components, build_components
from bgserve.demo.models import push_demo_prompts, register_variant
from bgserve.demo.run import LIVE_TEXTS
from bgserve.demo.traffic import TrafficClient
from bgserve.errors import BgserveError
from bgserve.settings import Settings

DEPLOYMENT = "load"
WHO = "bench"
BASE_MS = 5
BAKE_S = 2.0


def settings_for(home: Path, compare_with: str = "blue") -> Settings:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return Settings(
        home=home,
        mlflow_tracking_uri=uri,
        mlflow_registry_uri=uri,
        data_port=0,
        # The golden gate is not what is measured here: only a gross slowdown closes it.
        compare_thresholds={"max_latency_ratio_p50": 10.0, "max_latency_ratio_p95": 10.0},
        plan_steps=[10, 50, 100],
        plan_bake_s=BAKE_S,
        plan_min_requests=20,
        plan_compare_with=compare_with,
        engine_interval_seconds=0.1,
    )


def register_models(settings: Settings) -> dict[str, str]:
    uri = settings.mlflow_tracking_uri
    push_demo_prompts(uri, uri)
    versions = {
        "base": register_variant(uri, uri, "base-5ms", {"max_words": 12, "delay_ms": BASE_MS}),
        "errors": register_variant(
            uri, uri, "flaky-5ms", {"max_words": 12, "max_chars": 200, "delay_ms": BASE_MS}
        ),
        "slow": register_variant(
            uri, uri, "slow-35ms", {"max_words": 12, "delay_ms": BASE_MS + 30}
        ),
    }
    return {kind: f"models:/summarizer/{version}" for kind, version in versions.items()}


def run_plan(parts: Components, model_uri: str, label: str) -> dict[str, Any]:
    """Stage a fresh green of ``model_uri``, compare it, run the default plan; the outcome."""
    service = parts.service
    release = service.register_release(label, model_uri, "prompts:/summarize/1", WHO)
    service.stage_green(DEPLOYMENT, release.id, WHO)
    cases = load_golden_set("summarize", parts.settings.prompts_dir)
    parts.comparer.compare(DEPLOYMENT, cases, WHO)
    run, started = run_plan_to_end(service, DEPLOYMENT, WHO)
    first_step, last, outcome = run.first_step, run.last, run.outcome
    warmup = ((first_step.details or {}).get("warmup") or {}) if first_step else {}
    return {
        "checks": [
            {k: c.get(k) for k in ("name", "outcome", "blue_ms", "green_ms", "ratio", "p_value")}
            for c in run.checks
        ],
        "label": label,
        "outcome": outcome,
        "reason": last.reason,
        "warmup_s": _seconds(first_step.at, started) if first_step else None,
        "warmup_sent": warmup.get("sent"),
        "to_revert_s": run.to_revert_s,
    }


def run_one(parts: Components, model_uri: str, label: str) -> dict[str, Any]:
    """One plan, or the error that kept it from running (a slot that never got ready on
    an overloaded machine): recorded, not fatal, so a long run keeps its figures."""
    try:
        return run_plan(parts, model_uri, label)
    except BgserveError as exc:
        return {"label": label, "outcome": "error", "reason": str(exc), "checks": []}


def _seconds(at: datetime, since: float) -> float:
    return round(at.timestamp() - since, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bgserve-analysis-"))
    settings = settings_for(home, "baseline" if args.baseline else "blue")
    models = register_models(settings)
    parts = build_components(settings)
    results: list[dict[str, Any]] = []
    try:
        parts.start()
        blue = parts.service.register_release("blue", models["base"], "prompts:/summarize/1", WHO)
        parts.service.create_deployment(DEPLOYMENT, blue.id, WHO)
        url = parts.backend.data_plane_url(DEPLOYMENT)
        assert url is not None
        kinds = plan_order(args.identical, args.bad)
        inputs = [{"text": t} for t in LIVE_TEXTS]
        with burners(args.burners), ExitStack() as clients:
            for _ in range(args.clients):
                clients.enter_context(TrafficClient(url, inputs))
            for n, kind in enumerate(kinds):
                model = models["base" if kind == "identical" else kind]
                result = run_one(parts, model, f"{kind}-{n}") | {"kind": kind}
                results.append(result)
                took = result.get("to_revert_s")
                print(
                    f"{n + 1}/{len(kinds)} {kind}: {result['outcome']}"
                    + (f" {took:.2f} s after the first step" if took is not None else "")
                    + f": {result['reason'][:300]}",
                    flush=True,
                )
    finally:
        parts.close()
        shutil.rmtree(home, ignore_errors=True)
    return summarise(results, args)


def plan_order(identical: int, bad: int) -> list[str]:
    """The greens in turn: the bad ones spread evenly among the identical ones, so each
    meets a blue that has served for a while."""
    kinds = ["identical"] * identical
    every = max(1, identical // max(1, 2 * bad))
    for index, kind in enumerate(["errors", "slow"] * bad):
        kinds.insert(min(len(kinds), (index + 1) * every + index), kind)
    return kinds


def summarise(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    identical = [r for r in results if r["kind"] == "identical"]
    false_reverts = [r for r in identical if r["outcome"] == "reverted"]
    failed_to_run = [r for r in results if r["outcome"] == "error"]
    rows, goals = [], []
    for kind in ("identical", "errors", "slow"):
        runs = [r for r in results if r["kind"] == kind]
        reverted = [r for r in runs if r["outcome"] == "reverted"]
        times = [r["to_revert_s"] for r in reverted if r["to_revert_s"] is not None]
        rows.append(
            [
                kind,
                len(runs),
                len(reverted),
                sum(r["outcome"] == "error" for r in runs),
                f"{max(times):.2f}" if times else "-",
                f"{statistics.median(times):.2f}" if times else "-",
            ]
        )
    warmups = [r["warmup_s"] for r in results if r.get("warmup_s") is not None]
    goals.append(goal("automatic reverts of the identical green", len(false_reverts), 0))
    for kind in ("errors", "slow"):
        runs = [r for r in results if r["kind"] == kind]
        missed = [r for r in runs if r["outcome"] not in ("reverted", "error")]
        goals.append(goal(f"{kind} greens not reverted", len(missed), 0))
        times = [r["to_revert_s"] for r in runs if r["to_revert_s"] is not None]
        if times:
            limit = settings_limit()
            goals.append(goal(f"{kind}: first step to revert, worst (s)", max(times), limit))
    print(
        table(
            ["green", "plans", "auto-reverted", "could not run", "to revert max (s)", "median (s)"],
            rows,
        )
    )
    if warmups:
        print(
            f"warm-up added before the first step: median {statistics.median(warmups):.2f} s, "
            f"max {max(warmups):.2f} s"
        )
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    for r in false_reverts:
        print(f"false revert: {r['label']}: {r['reason']}")
    for r in failed_to_run:
        print(f"could not run: {r['label']}: {r['reason'][:300]}")
    return {
        "machine": machine(),
        "burners": args.burners,
        "compare_with": "baseline" if args.baseline else "blue",
        "clients": args.clients,
        "rows": rows,
        "goals": goals,
        "warmup_median_s": statistics.median(warmups) if warmups else None,
        "results": results,
    }


def settings_limit() -> float:
    """The detection goal: a bad green is reverted within the initial delay + bake + 1 s of
    its first step's weight (the delay is the step's part no analysis counts)."""
    return Settings().plan.initial_delay_s + BAKE_S + 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identical", type=int, default=50)
    parser.add_argument("--bad", type=int, default=5, help="plans of each bad green")
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument(
        "--baseline", action="store_true", help="judge green against a fresh copy of blue"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="live clients: green's 20 requests a window"
    )
    args = parser.parse_args()
    os.environ.setdefault("BGSERVE_LOG_LEVEL", "warning")
    result = run(args)
    save("analysis_load", result)
    return 0 if all(g["met"] for g in result["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
