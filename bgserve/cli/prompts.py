"""CLI verbs for comparisons and prompt engineers: compare, prompts push, prompts validate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bgserve.cli.client import Remote, console, load_settings, remote_verb, say_error
from bgserve.cli.prompt_files import PromptDir, read_prompt_dir
from bgserve.cli.tables import comparison_table
from bgserve.errors import BgserveError
from bgserve.evaluation.comparison import ComparisonReport

if TYPE_CHECKING:
    from bgserve.registry.mlflow_registry import MlflowRegistry

prompts_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Prompt templates as code: prompts/<name>/template.txt, prompt.yaml, golden.jsonl.",
)

ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        "-t",
        metavar="NAME=VALUE",
        help="Override a threshold, e.g. min_mean_similarity=0.95 (repeatable)",
    ),
]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write an HTML report here")]
ScorerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scorer",
        metavar="NAME",
        help="An MLflow scorer (from BGSERVE_COMPARE_SCORER_MODULES) run on every case; "
        "repeat for more",
    ),
]
JudgeOpt = Annotated[
    bool | None,
    typer.Option(
        "--judge/--no-judge",
        help="Run the pairwise judge, or skip it (default: run it when one is configured)",
        show_default=False,
    ),
]
RubricOpt = Annotated[
    str | None, typer.Option("--rubric", help="The judge's rubric for this comparison")
]


def _thresholds(pairs: list[str] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    parsed: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            parsed[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"{pair!r}: use NAME=NUMBER, e.g. min_mean_similarity=0.95")
    return parsed


def _report(payload: dict[str, Any], html: Path | None, title: str) -> ComparisonReport:
    report = ComparisonReport.model_validate(payload)
    if html is not None:
        from bgserve.report_html import render_html

        html.write_text(render_html(report, title), encoding="utf-8")
    return report


def _print_report(report: ComparisonReport, html: Path | None) -> None:
    console.print(comparison_table(report))
    if report.outcome == "inconclusive":
        console.print("inconclusive: too few cases to show green meets the thresholds")
    run = report.mlflow
    if run is not None and run.error is not None:
        console.print(f"not logged to MLflow: {run.error}", style="yellow", markup=False)
    elif run is not None:
        console.print(f"MLflow run {run.run_id} in {run.experiment}", markup=False)
        if run.url:
            console.print(run.url, markup=False)
    if html is not None:
        console.print(f"HTML report written to {html}")


@remote_verb
def compare(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    golden_set: Annotated[
        str,
        typer.Option(
            "--golden-set",
            "-g",
            metavar="SET",
            help="Golden set name, e.g. summarize: the server reads "
            "BGSERVE_PROMPTS_DIR/SET/golden.jsonl (the demo's summarize is built in)",
        ),
    ],
    remote: Remote,
    threshold: ThresholdOpt = None,
    html: HtmlOpt = None,
    scorer: ScorerOpt = None,
    judge: JudgeOpt = None,
    rubric: RubricOpt = None,
) -> None:
    """Compare blue and green on a golden set; the verdict gates promotion.

    Exit status: 0 when the verdict passed, 3 when it failed or is inconclusive (the
    report says why), 1 for an error answer, 2 when bgserve cannot be reached.
    """
    body: dict[str, Any] = {"golden_set": golden_set, "thresholds": _thresholds(threshold)}
    given = {"scorers": scorer, "judge": judge, "judge_rubric": rubric}
    body.update({key: value for key, value in given.items() if value is not None})
    payload = remote.call("POST", f"/deployments/{name}/compare", body, name=name)
    report = _report(payload, html, f"{name}: blue vs green on {golden_set}")
    remote.show(payload, lambda _: _print_report(report, html))
    if not report.verdict.passed:
        raise typer.Exit(3)


def _prompt_dir(directory: Path, *, need_golden: bool = False) -> PromptDir:
    try:
        return read_prompt_dir(directory, need_golden=need_golden)
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc


@prompts_app.command("push")
def push(directory: Annotated[Path, typer.Argument(help="prompts/<name> directory")]) -> None:
    """Register a new MLflow prompt version, only when the prompt changed.

    A text prompt is template.txt; a chat prompt is messages in prompt.yaml, with optional
    model_config (temperature, max_tokens, top_p, stop, seed) and response_format (a JSON
    schema). Refuses symbolic links and files over their size limit (template 64 KiB,
    prompt.yaml 16 KiB, 80 KiB with messages, golden.jsonl 10 MiB), an invalid name, a bad
    model_config or schema, and a prompt that some golden case cannot render. The registry
    is MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME.
    """
    from bgserve.cli.logs import configure_logging
    from bgserve.compose import build_registry

    prompt = _prompt_dir(directory)
    _print_lint(prompt)
    settings = load_settings()
    configure_logging(settings.log_level)
    registry = build_registry(settings)
    console.print(f"registering in MLflow at {registry.registry_uri}", markup=False)
    try:
        version, created = _register(registry, prompt)
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc
    if created:
        console.print(f"registered prompts:/{prompt.name}/{version}", markup=False)
    else:
        console.print(f"nothing changed: prompts:/{prompt.name}/{version} has this prompt")


def _register(registry: MlflowRegistry, prompt: PromptDir) -> tuple[int, bool]:
    message = prompt.meta.get("commit_message")
    if prompt.messages is None:
        return registry.push_prompt(prompt.name, prompt.template or "", message, prompt.tags)
    from bgserve.registry.chat_prompts import push_chat_prompt

    return push_chat_prompt(
        registry,
        prompt.name,
        prompt.messages,
        model_config=prompt.model_config,
        response_format=prompt.response_format,
        commit_message=message,
        tags=prompt.tags,
    )


def _print_lint(prompt: PromptDir) -> None:
    """Print the lint's warnings; exit 1 on an error (a case that cannot render)."""
    lint = prompt.lint()
    if lint is None:
        return
    for issue in lint.warnings:
        console.print(f"lint warning: {issue.message}", style="yellow", markup=False)
    for issue in lint.errors:
        say_error(f"lint error: {issue.message}")
    if lint.errors:
        raise typer.Exit(1)


@prompts_app.command("validate")
@remote_verb
def validate(
    directory: Annotated[Path, typer.Argument(help="prompts/<name> directory")],
    remote: Remote,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            "-d",
            help="Live deployment to compare on; without it only the files and the lint "
            "are checked, nothing is contacted",
        ),
    ] = None,
    threshold: ThresholdOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Check DIRECTORY and compare its prompt with the live prompt, on the live model.

    A chat prompt folder sends its messages, model_config and response_format; each
    side's answers are checked against its own response_format.

    Exit status: 0 when the verdict passed and the lint found no error, 3 otherwise,
    1 for an error answer or bad files, 2 when bgserve cannot be reached.
    """
    prompt = _prompt_dir(directory, need_golden=True)
    if deployment is None:
        _print_local(prompt)
        return
    cases = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in prompt.cases or []
    ]
    body = {
        "deployment": deployment,
        **_candidate(prompt),
        "cases": cases,
        "thresholds": _thresholds(threshold),
    }
    payload = remote.call("POST", "/prompts/validate", body, name=deployment)
    report = _report(payload["report"], html, f"{deployment}: live prompt vs {directory}")
    remote.show(payload, lambda p: _print_validation(p, report, html))
    if not report.verdict.passed or payload["lint"]["errors"]:
        raise typer.Exit(3)


def _candidate(prompt: PromptDir) -> dict[str, Any]:
    """The candidate fields of a validation request: the template, or the messages with
    their model_config and response_format."""
    if not prompt.is_chat:
        return {"template": prompt.template}
    chat: dict[str, Any] = {"messages": prompt.messages, "model_config": prompt.model_config}
    if prompt.response_format is not None:
        chat["response_format"] = prompt.response_format
    return chat


def _print_local(prompt: PromptDir) -> None:
    """The checks of the files alone: what the prompt is, and the lint (exit 3 on an
    error)."""
    kind = "chat prompt" if prompt.is_chat else "text prompt"
    lint = prompt.lint()
    details = [f"{len(prompt.cases or [])} golden cases"]
    if lint is not None:
        details.insert(0, "variables " + (", ".join(lint.variables) or "none"))
    if prompt.is_chat:
        details.append(f"{len(prompt.messages or [])} messages")
        details.append("model_config " + (", ".join(sorted(prompt.model_config)) or "none"))
        schema = "a response_format schema" if prompt.response_format else "no response_format"
        details.append(schema)
    console.print(f"{prompt.name}: {kind}; " + "; ".join(details), markup=False)
    try:
        _print_lint(prompt)
    except typer.Exit as exc:
        raise typer.Exit(3) from exc
    console.print("files and lint ok: pass --deployment to compare on the live model")


def _print_validation(payload: dict[str, Any], report: ComparisonReport, html: Path | None) -> None:
    console.print(
        f"live: {payload['model_uri']} + {payload['live_prompt_uri']} "
        f"({payload['live_kind']}); candidate: {payload['candidate']} "
        f"({payload['candidate_kind']})",
        markup=False,
    )
    for level in ("errors", "warnings"):
        for issue in payload["lint"][level]:
            colour = "red" if level == "errors" else "yellow"
            console.print(f"lint {level[:-1]}: {issue['message']}", style=colour, markup=False)
    _print_report(report, html)
