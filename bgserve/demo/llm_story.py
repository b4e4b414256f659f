"""``bgserve demo --llm``: the LLM story on SmolLM2, in a temporary directory.

On real slot processes running llama.cpp and a real MLflow registry (SQLite):
1. register SmolLM2 (a GGUF file) as an LLM model version and two versions of the
   ``chat`` prompt that differ only by their system message (a terse assistant, a pirate);
2. deploy release 1 (SmolLM2 + the terse prompt) as blue;
3. stage release 2 (SmolLM2 + the pirate prompt) as green: the golden comparison checks
   the facts each answer must hold, whatever its wording, and prints its verdict;
4. start a live client that streams chat completions through the router with the
   ``openai`` SDK, and promote green with a plan whose analysis names the
   time-to-first-token check, on that live streamed traffic;
5. revert to release 1.
Then print time to first token and tokens/s per slot, as the live client measured them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live

from bgserve.cli.tables import comparison_table
from bgserve.compose import Components, build_components
from bgserve.demo.display import Timeline, print_kept
from bgserve.demo.llm_display import ChatLiveView, chat_summary, print_checks
from bgserve.demo.llm_models import (
    chat_golden_set,
    push_chat_prompts,
    read_chat_prompt,
    register_smollm2,
)
from bgserve.demo.llm_traffic import ChatCounts, ChatTraffic
from bgserve.demo.run import PRINCIPAL, cut_over_to, demo_settings, follow_plan, timed, workdir
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan, make_plan
from bgserve.settings import Settings
from bgserve.store import StoredDeployment

DEPLOYMENT = "chat"


def llm_settings(home: Path) -> Settings:
    """The plain demo's throw-away settings, with thresholds fit for two chat prompts."""
    return demo_settings(home).model_copy(
        update={
            # Green is meant to word its answers differently (a pirate, not a terse
            # assistant), so similarity to blue says nothing: the verdict rests on the
            # golden assertions (the facts each answer must hold) and on errors. Latency
            # ratios stay loose: the pirate talks longer, and the machine is shared.
            "compare_thresholds": {
                "min_mean_similarity": 0.0,
                "min_agreement_rate": 0.0,
                "max_latency_ratio_p50": 10.0,
                "max_latency_ratio_p95": 10.0,
            },
            # Each golden answer is timed once, with one warm-up call a slot: a repeated
            # latency probe would triple the generations for a number this story does
            # not gate on.
            "compare_warmup_calls": 1,
            "compare_latency_cases": 0,
            # A slot answers one generation at a time: a stream may wait its turn behind
            # another, longer than the router's 10 s default on a loaded machine.
            "deployment_timeouts": {DEPLOYMENT: (60.0, 30.0)},
        }
    )


def demo_plan() -> Plan:
    """The plan promoted on live traffic: 50%, then the cutover, judged on errors and on
    green's p95 time to first token against blue's.

    Both releases run the same model and their prompts are the same length within a few
    tokens, so their first tokens come equally fast: only noise separates them. On a
    shared 2-core machine a p95 over a few answers can triple from one window to the
    next (3.7x was seen between the two), so the limit is 3x and the Mann-Whitney rule
    must also find the slowdown significant at 1%, not 5%: with 6 answers a side that
    still fails a green whose first tokens all come later than blue's, and chance alone
    fails at most one run in a hundred (far fewer with the 3x ratio as well).

    50% first gives green as many answers as blue in the shortest time; 6 answers a
    side is the fewest a p95 is worth reading on: a bake of 4 s is about what they take
    on a quiet machine, and on a busy one the engine keeps baking until it has them.
    The whole-answer latency check is left out on purpose: the pirate's answers are
    longer by design. If the machine is too slow to reach 6 answers a side within 90 s,
    the plan goes on (``continue``) rather than hold the demo forever.
    """
    analysis = AnalysisSettings(
        min_requests=6,
        checks=("error_rate", "ttft_p95"),
        max_error_rate_delta=0.0,
        max_ttft_p95_ratio=3.0,
        significance=0.01,
        max_bake_s=90.0,
        on_inconclusive="continue",
    )
    return make_plan([50, 100], 4.0, analysis)


def run_llm_demo(keep: bool = False, console: Console | None = None) -> int:
    """Run the LLM demo; 0 when the live client saw no failed request."""
    console = console or Console()
    with workdir(keep) as home:
        settings = llm_settings(home)
        timeline = Timeline()
        console.rule("[bold]bgserve demo --llm[/bold]")
        console.print(f"working in {home}")
        model_uri, prompt_uris = timed(
            console,
            timeline,
            "register SmolLM2-135M (GGUF, llama.cpp) and prompt chat v1, v2",
            lambda: _register(settings),
        )
        for version, folder in enumerate(("chat", "chat-pirate"), start=1):
            system = read_chat_prompt(folder).system
            console.print(f"  prompt chat v{version} system message: {system!r}", highlight=False)
        parts = build_components(settings)
        try:
            parts.start()
            counts = _story(console, timeline, parts, model_uri, prompt_uris)
        finally:
            timed(console, timeline, "stop slots and router", lambda: _close(parts))
        status = chat_summary(console, timeline, counts)
        if keep:
            print_kept(console, home)
        return status


def _close(parts: Components) -> None:
    # Stopping is the demo's own doing: the leader's warning that it stops leading is no
    # news here, and no part of the story.
    leader = logging.getLogger("bgserve.leader")
    level = leader.level
    leader.setLevel(logging.ERROR)
    try:
        parts.close()
    finally:
        leader.setLevel(level)


def _register(settings: Settings) -> tuple[str, tuple[str, str]]:
    """SmolLM2's model URI and the two chat prompt versions' URIs."""
    uri = settings.mlflow_tracking_uri
    assert uri is not None  # demo_settings sets it
    model = register_smollm2(uri, settings.mlflow_registry_uri)
    first, second = push_chat_prompts(uri, settings.mlflow_registry_uri)
    return model.model_uri, (f"prompts:/chat/{first}", f"prompts:/chat/{second}")


def _story(
    console: Console,
    timeline: Timeline,
    parts: Components,
    model_uri: str,
    prompt_uris: tuple[str, str],
) -> ChatCounts:
    service = parts.service
    terse = service.register_release("terse", model_uri, prompt_uris[0], PRINCIPAL)
    pirate = service.register_release("pirate", model_uri, prompt_uris[1], PRINCIPAL)
    console.print(
        f"releases: {terse.id}=terse (SmolLM2 + chat v1), {pirate.id}=pirate (SmolLM2 + chat v2)"
    )
    timed(
        console,
        timeline,
        f"deploy release {terse.id} as blue (slot process, llama.cpp)",
        lambda: service.create_deployment(DEPLOYMENT, terse.id, PRINCIPAL),
    )
    _compare(console, timeline, parts, pirate.id)
    url = parts.backend.data_plane_url(DEPLOYMENT)
    assert url is not None  # the local backend always has a data plane
    base_url = url.split("/v2/", 1)[0] + "/openai/v1"
    console.print(f"live client: openai SDK, streamed chat completions at {base_url}")
    # The client starts after the comparison: on 2 cores, a slot generating for it
    # back to back would slow green's start and the golden answers several times over.
    with ChatTraffic(base_url, DEPLOYMENT) as traffic:
        _promote_and_revert(console, timeline, parts, traffic, pirate.id)
        return traffic.stop()


def _compare(console: Console, timeline: Timeline, parts: Components, release_id: int) -> None:
    timed(
        console,
        timeline,
        f"stage release {release_id} (system prompt reworded) as green at 0%",
        lambda: parts.service.stage_green(DEPLOYMENT, release_id, PRINCIPAL),
    )
    cases = chat_golden_set()
    _, report = timed(
        console,
        timeline,
        f"compare blue and green on {len(cases)} golden cases",
        lambda: parts.comparer.compare(DEPLOYMENT, cases, PRINCIPAL),
    )
    console.print(comparison_table(report))
    verdict = "PASSED" if report.verdict.passed else "FAILED"
    console.print(f"golden verdict: {verdict}", highlight=False)
    for reason in report.verdict.reasons:
        console.print(f"  - {reason}", highlight=False)


def _promote_and_revert(
    console: Console,
    timeline: Timeline,
    parts: Components,
    traffic: ChatTraffic,
    green: int,
) -> None:
    service = parts.service
    plan = demo_plan()
    blue = service.get_deployment(DEPLOYMENT).state.blue
    console.print(
        f"plan: steps {' → '.join(map(str, plan.steps))}, bake {plan.bake_s:g}s, checks "
        f"{', '.join(plan.analysis.checks)} (ttft_p95 at most "
        f"{plan.analysis.max_ttft_p95_ratio:g}x blue's)",
        highlight=False,
    )
    steps: list[str] = []

    def on_step(stored: StoredDeployment) -> None:
        state = stored.state
        if state.green is None:
            timeline.weights = "blue 100% (cutover done)"
        else:
            timeline.weights = f"blue {state.blue_weight}% / green {state.green_weight}%"
        timeline.record(f"step to {timeline.weights}", 0.0)
        steps.append(timeline.weights)

    timeline.weights = "blue 100% / green 0%"
    with Live(Group(ChatLiveView(traffic, timeline)), console=console, refresh_per_second=2):
        timed(
            console,
            timeline,
            "promote 50 → 100 on live streamed traffic, analysis at each step",
            lambda: follow_plan(service, on_step, plan, DEPLOYMENT),
            cut_over_to(service, green, DEPLOYMENT),
        )
    if not console.is_terminal:
        # Off a terminal, rich prints the live table's last frame without ending its line.
        console.line()
    for weights in steps:
        console.print(f"step: {weights}", highlight=False)
    print_checks(console, service.history(DEPLOYMENT), green)
    time.sleep(1.0)  # a few answers from the new blue before going back
    timed(
        console,
        timeline,
        "revert to the last good release",
        lambda: service.revert(DEPLOYMENT, PRINCIPAL),
        lambda done: None if done.state.blue == blue else "blue is not the last good release",
    )
    stored = service.get_deployment(DEPLOYMENT)
    console.print(f"reverted: release {stored.state.blue} serves 100% again", highlight=False)
    time.sleep(1.0)
