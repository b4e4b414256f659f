"""``bgserve shadow NAME``: mirror live traffic to green, read the paired comparison, stop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bgserve.cli.client import Remote, console, remote_verb, say_error


@remote_verb
def shadow(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    remote: Remote,
    percent: Annotated[
        int | None,
        typer.Option(
            "--percent", "-p", min=0, max=100, help="Mirror this share of blue's requests to green"
        ),
    ] = None,
    max_pairs: Annotated[
        int | None, typer.Option("--max-pairs", min=1, help="Stop mirroring after this many pairs")
    ] = None,
    report: Annotated[bool, typer.Option("--report", help="Show the live comparison")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop mirroring (the report stays)")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as HTML here")
    ] = None,
) -> None:
    """Shadow traffic: green answers a copy of live requests, scored against blue's answer;
    clients only ever get blue's. A failing report with enough pairs gates promotion.

    Exit status with --report: 0 when the verdict passed, 3 when it failed.
    """
    if sum((percent is not None, report, stop)) != 1:
        say_error("give exactly one of --percent P, --report or --stop")
        raise typer.Exit(2)
    path = f"/deployments/{name}/shadow"
    again = f"bgserve shadow {name}"
    if percent is not None:
        body: dict[str, Any] = {"percent": percent}
        if max_pairs is not None:
            body["max_pairs"] = max_pairs
        payload = remote.call("PUT", path, body, name=name, again=again)
    elif stop:
        payload = remote.call("DELETE", path, name=name, again=again)
    else:
        payload = remote.call("GET", path, name=name, again=again)
    _write_html(payload, html, name)
    remote.show(payload, lambda p: _print(p, name))
    if report and not payload.get("verdict", {}).get("passed", True):
        raise typer.Exit(3)


def _write_html(payload: dict[str, Any], html: Path | None, name: str) -> None:
    if html is None or "verdict" not in payload:
        return
    from bgserve.domain.shadow import ShadowReport
    from bgserve.report_html import render_shadow_html

    report = ShadowReport.model_validate(payload)
    html.write_text(render_shadow_html(report, f"{name}: shadow traffic"), encoding="utf-8")
    console.print(f"HTML report written to {html}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print(payload: dict[str, Any], name: str) -> None:
    state = f"mirroring {payload['percent']}%" if payload.get("percent") else "not mirroring"
    console.print(f"[bold]{name}[/bold] shadow traffic: {state}")
    if "verdict" not in payload:
        return
    similarity = payload["similarity"]
    table = Table("pairs", "dropped", "green errors", "differing", "similarity mean", "p10")
    table.add_row(
        str(payload["pairs"]),
        str(payload["dropped"]),
        str(payload["green_errors"]),
        str(payload["differing"]),
        _num(similarity["mean"]),
        _num(similarity["p10"]),
    )
    console.print(table)
    verdict = payload["verdict"]
    shown = "[green]passed[/green]" if verdict["passed"] else "[red]failed[/red]"
    extra = "" if payload["conclusive"] else f" (gates from {payload['min_pairs']} pairs)"
    console.print(f"verdict: {shown}{extra}")
    for reason in verdict["reasons"]:
        console.print(f"  - {reason}", markup=False)
    for pair in payload["worst"][:5]:
        sim = _num(pair["similarity"])
        console.print(f"{sim} {pair.get('diff') or '(texts not kept)'}", markup=False)
