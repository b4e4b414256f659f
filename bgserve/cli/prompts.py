"""CLI verbs for comparisons and prompt engineers: compare, prompts push, prompts validate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from bgserve.cli.client import DEFAULT_URL, JsonOpt, TokenOpt, UrlOpt, call, console, show
from bgserve.cli.tables import comparison_table
from bgserve.domain.comparison import ComparisonReport
from bgserve.domain.golden import parse_golden_jsonl

prompts_app = typer.Typer(no_args_is_help=True, help="Prompt templates as code.")

ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option("--threshold", "-t", help="Override a threshold: NAME=VALUE (repeatable)"),
]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write an HTML report here")]


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
    if html is not None:
        console.print(f"HTML report written to {html}")


def compare(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    golden_set: Annotated[str, typer.Option("--golden-set", "-g", help="prompts/<name>")],
    threshold: ThresholdOpt = None,
    html: HtmlOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare blue and green on a golden set; the verdict gates promotion."""
    body = {"golden_set": golden_set, "thresholds": _thresholds(threshold)}
    payload = call("POST", url, f"/deployments/{name}/compare", token, body)
    report = _report(payload, html, f"{name}: blue vs green on {golden_set}")
    show(payload, as_json, lambda _: _print_report(report, html))
    if not report.verdict.passed:
        raise typer.Exit(3)


def _prompt_files(directory: Path) -> tuple[str, str, dict[str, Any]]:
    template_file = directory / "template.txt"
    if not template_file.is_file():
        raise typer.BadParameter(f"{template_file} does not exist")
    meta_file = directory / "prompt.yaml"
    meta = yaml.safe_load(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    if not isinstance(meta, dict):
        raise typer.BadParameter(f"{meta_file} must be a YAML mapping")
    name = str(meta.get("name") or directory.resolve().name)
    return name, template_file.read_text(encoding="utf-8"), meta


@prompts_app.command("push")
def push(directory: Annotated[Path, typer.Argument(help="prompts/<name> directory")]) -> None:
    """Register a new MLflow prompt version, only when the template changed."""
    from bgserve.registry.mlflow_registry import MlflowRegistry
    from bgserve.settings import Settings

    name, template, meta = _prompt_files(directory)
    settings = Settings()
    registry = MlflowRegistry(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    tags = {str(k): str(v) for k, v in (meta.get("tags") or {}).items()}
    version, created = registry.push_prompt(name, template, meta.get("commit_message"), tags)
    if created:
        console.print(f"registered prompts:/{name}/{version}")
    else:
        console.print(f"nothing changed: prompts:/{name}/{version} has this template")


@prompts_app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="prompts/<name> directory")],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Live deployment")],
    threshold: ThresholdOpt = None,
    html: HtmlOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the template in DIRECTORY with the live prompt, on the live model."""
    _, template, _ = _prompt_files(directory)
    golden = directory / "golden.jsonl"
    if not golden.is_file():
        raise typer.BadParameter(f"{golden} does not exist")
    cases = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True)
        for c in parse_golden_jsonl(golden.read_text(encoding="utf-8"))
    ]
    body = {
        "deployment": deployment,
        "template": template,
        "cases": cases,
        "thresholds": _thresholds(threshold),
    }
    payload = call("POST", url, "/prompts/validate", token, body)
    report = _report(payload["report"], html, f"{deployment}: live prompt vs {directory}")
    show(payload, as_json, lambda p: _print_validation(p, report, html))
    if not report.verdict.passed or payload["lint"]["errors"]:
        raise typer.Exit(3)


def _print_validation(payload: dict[str, Any], report: ComparisonReport, html: Path | None) -> None:
    console.print(
        f"live: {payload['model_uri']} + {payload['live_prompt_uri']}; "
        f"candidate: {payload['candidate']}"
    )
    for level in ("errors", "warnings"):
        for issue in payload["lint"][level]:
            colour = "red" if level == "errors" else "yellow"
            console.print(f"[{colour}]lint {level[:-1]}:[/{colour}] {issue['message']}")
    _print_report(report, html)
