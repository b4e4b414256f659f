"""The verbs that move a release through a running server: ``release``, ``releases``,
``deploy``, ``stage``, ``promote`` (a step or a watched plan), ``revert``, ``status`` and
``history``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bgserve.cli.client import (
    Remote,
    console,
    deployment_panel,
    history_table,
    release_table,
    remote_verb,
)
from bgserve.cli.plan_view import watch


@remote_verb
def release(
    name: Annotated[str, typer.Argument(help="Release name (DNS-1123 label)")],
    model_uri: Annotated[
        str, typer.Option("--model-uri", "-m", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    ],
    prompt_uri: Annotated[
        str,
        typer.Option("--prompt-uri", "-p", help="prompts:/NAME/VERSION or prompts:/NAME@ALIAS"),
    ],
    remote: Remote,
) -> None:
    """Register a model version + prompt version as a release (aliases resolved once)."""
    body = {"name": name, "model_uri": model_uri, "prompt_uri": prompt_uri}
    payload = remote.call("POST", "/releases", body)
    remote.show(payload, lambda r: console.print(release_table([r])))


@remote_verb
def releases(remote: Remote) -> None:
    """List releases."""
    remote.show(remote.call("GET", "/releases"), lambda r: console.print(release_table(r)))


@remote_verb
def deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (DNS-1123 label)")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to run as blue")],
    remote: Remote,
) -> None:
    """Create a deployment with a release as blue at 100%."""
    body = {"name": name, "release_id": release_id}
    remote.show(remote.call("POST", "/deployments", body, name=name), deployment_panel)


@remote_verb
def stage(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to stage")],
    remote: Remote,
) -> None:
    """Stage a release as green at 0%."""
    body = {"release_id": release_id}
    payload = remote.call("POST", f"/deployments/{name}/green", body, name=name)
    remote.show(payload, deployment_panel)


@remote_verb
def promote(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    remote: Remote,
    weight: Annotated[
        int | None, typer.Option(help="One step to this green weight, done at once")
    ] = None,
    steps: Annotated[
        str | None, typer.Option(help="The plan's green weights, e.g. 10,50,100 (settings)")
    ] = None,
    bake: Annotated[
        float | None, typer.Option(help="Seconds each step bakes before analysis (settings)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Skip a failed or missing comparison (recorded)")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Submit the plan and return without watching")
    ] = False,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Analyse green against a fresh slot of blue's release given green's share",
        ),
    ] = False,
) -> None:
    """Move green one step (--weight), or submit a promotion plan and watch it.

    The rollout engine runs the plan: each step bakes, then green is analysed against
    blue on live traffic; it moves on, holds, or reverts on its own. Exit codes when
    watching: 0 cut over, 3 reverted, 4 held for an operator (promote again to go on).
    Ctrl-C stops watching, not the plan.
    """
    body: dict[str, Any] = {"force": force}
    again = f"bgserve promote {name}"
    if weight is not None:
        body["weight"] = weight
        again += f" --weight {weight}"
    plan = _plan_body(steps, bake)
    if baseline:
        plan["compare_with"] = "baseline"
    if plan:
        body["plan"] = plan
    payload = remote.call("POST", f"/deployments/{name}/promote", body, name=name, again=again)
    if weight is not None or no_wait or remote.as_json:
        remote.show(payload, deployment_panel)
        return
    code = watch(
        lambda: remote.call("GET", f"/deployments/{name}", name=name),
        lambda: _last_action(remote, name),
        console,
    )
    raise typer.Exit(code)


def _plan_body(steps: str | None, bake: float | None) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    if steps is not None:
        try:
            plan["steps"] = [int(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter("use weights like 10,50,100", param_hint="--steps") from None
    if bake is not None:
        plan["bake_s"] = bake
    return plan


def _last_action(remote: Remote, name: str) -> str | None:
    events = remote.call_all(f"/deployments/{name}/history", name=name)
    return str(events[-1]["action"]) if events else None


@remote_verb
def revert(name: Annotated[str, typer.Argument(help="Deployment name")], remote: Remote) -> None:
    """Send all traffic back to the last good release."""
    remote.show(remote.call("POST", f"/deployments/{name}/revert", {}, name=name), deployment_panel)


@remote_verb
def status(
    remote: Remote,
    name: Annotated[str | None, typer.Argument(help="Deployment name (all when omitted)")] = None,
) -> None:
    """Show deployments: phase, slots, weights, readiness."""
    if name:
        remote.show(remote.call("GET", f"/deployments/{name}", name=name), deployment_panel)
        return
    remote.show(remote.call_all("/deployments"), _deployment_panels)


def _deployment_panels(deployments: list[dict[str, Any]]) -> None:
    if not deployments:
        console.print("no deployments yet: create one with `bgserve deploy NAME --release ID`")
    for deployment in deployments:
        deployment_panel(deployment)


@remote_verb
def history(name: Annotated[str, typer.Argument(help="Deployment name")], remote: Remote) -> None:
    """Show who changed what, when, with weights before and after."""
    payload = remote.call_all(f"/deployments/{name}/history", name=name)
    remote.show(payload, lambda e: console.print(history_table(e)))
