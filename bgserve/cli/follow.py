"""``bgserve follow``: make a deployment follow MLflow aliases, list the rules, stop one."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from bgserve.cli.client import Remote, console, remote_verb, say_error


@remote_verb
def follow(
    remote: Remote,
    name: Annotated[str | None, typer.Argument(help="Deployment name")] = None,
    prompt_alias: Annotated[
        str | None, typer.Option("--prompt-alias", help="Follow this alias of the prompt")
    ] = None,
    prompt_name: Annotated[
        str | None, typer.Option("--prompt-name", help="The prompt (default: blue's)")
    ] = None,
    model_alias: Annotated[
        str | None, typer.Option("--model-alias", help="Follow this alias of the model")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="The model (default: blue's)")
    ] = None,
    golden_set: Annotated[
        str | None,
        typer.Option("--golden-set", "-g", help="Golden set (default: the prompt's name)"),
    ] = None,
    auto_promote: Annotated[
        bool,
        typer.Option("--auto-promote", help="Start the plan after a passing verdict"),
    ] = False,
    steps: Annotated[
        str | None,
        typer.Option("--steps", help="The auto-promotion plan's steps, e.g. 10,50,100"),
    ] = None,
    shadow_percent: Annotated[
        int,
        typer.Option(
            "--shadow", min=0, max=100, help="Mirror this share of traffic to each candidate"
        ),
    ] = 0,
    list_all: Annotated[bool, typer.Option("--list", help="List every follow rule")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop following")] = False,
) -> None:
    """Follow MLflow aliases: when one moves, bgserve stages the candidate, compares it on
    the golden set and writes the verdict onto its prompt and model versions in MLflow;
    with --auto-promote a passing candidate goes through the plan. With a deployment and
    no alias: show its rule.
    """
    if list_all:
        rules = remote.call("GET", "/follow")
        remote.show(rules, lambda r: console.print(_table(r)))
        return
    if name is None:
        say_error("give a deployment, or --list")
        raise typer.Exit(2)
    path, again = f"/deployments/{name}/follow", f"bgserve follow {name}"
    if stop:
        payload = remote.call("DELETE", path, name=name, again=again)
        said = "stopped following" if payload["removed"] else "followed nothing"
        remote.show(payload, lambda _p: console.print(f"{name}: {said}"))
        return
    if prompt_alias is None and model_alias is None:
        remote.show(remote.call("GET", path, name=name, again=again), _print)
        return
    body = _body(
        prompt_alias, prompt_name, model_alias, model_name, golden_set, auto_promote, steps
    )
    body["shadow_percent"] = shadow_percent
    remote.show(remote.call("PUT", path, body, name=name, again=again), _print)


def _body(
    prompt_alias: str | None,
    prompt_name: str | None,
    model_alias: str | None,
    model_name: str | None,
    golden_set: str | None,
    auto_promote: bool,
    steps: str | None,
) -> dict[str, Any]:
    given = {
        "prompt_alias": prompt_alias,
        "prompt_name": prompt_name,
        "model_alias": model_alias,
        "model_name": model_name,
        "golden_set": golden_set,
    }
    body: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    body["auto_promote"] = auto_promote
    if steps is not None:
        try:
            body["plan"] = {"steps": [int(s) for s in steps.split(",")]}
        except ValueError as exc:
            say_error(f"--steps {steps!r}: give weights separated by commas, e.g. 10,50,100")
            raise typer.Exit(2) from exc
    return body


def _outcome(rule: dict[str, Any]) -> str:
    outcome = rule.get("last_outcome") or {}
    if not outcome:
        return "pending" if rule.get("pending") else "-"
    return f"{outcome.get('action')}: {outcome.get('reason', '')}"


def _event(rule: dict[str, Any]) -> str:
    event = rule.get("last_event") or {}
    if not event:
        return "-"
    what = event.get("event") or event.get("source")
    version = f" -> {event['version']}" if event.get("version") is not None else ""
    return f"{event.get('source')}: {what} {event.get('uri', '')}{version}"


def _table(rules: list[dict[str, Any]]) -> Table:
    table = Table(
        "deployment", "follows", "golden set", "auto-promote", "last event", "last outcome"
    )
    for rule in rules:
        plan = rule["plan"]
        cells = (
            rule["deployment"],
            "\n".join(rule["follows"]),
            rule["golden_set"],
            str(plan["steps"]) if rule["auto_promote"] and plan else "no",
            _event(rule),
            _outcome(rule),
        )
        table.add_row(*(Text(cell) for cell in cells))
    return table


def _print(rule: dict[str, Any]) -> None:
    console.print(_table([rule]))
