"""CLI verbs that call a running bgserve over HTTP, with readable output or ``--json``."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="BGSERVE_URL", help="Control API base URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="BGSERVE_TOKEN", help="Bearer token", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer")]
DEFAULT_URL = os.environ.get("BGSERVE_URL", "http://127.0.0.1:8080")


def call(
    method: str, url: str, path: str, token: str | None, body: Any = None, timeout: float = 600.0
) -> Any:
    """Send one request; on an error answer print its message and exit 1."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        err_console.print(
            f"[red]cannot reach bgserve at {url}: {exc}[/red] "
            "(start it with `bgserve serve`, or set --url)"
        )
        raise typer.Exit(2) from exc
    payload = response.json() if response.content else None
    if response.is_error:
        message = (
            payload.get("message", response.text) if isinstance(payload, dict) else response.text
        )
        err_console.print(f"[red]{response.status_code}: {message}[/red]")
        raise typer.Exit(1)
    return payload


def show(payload: Any, as_json: bool, render: Any) -> None:
    """Print ``payload`` as JSON or through ``render``."""
    if as_json:
        console.print_json(json.dumps(payload))
    else:
        render(payload)


def release_table(releases: list[dict[str, Any]]) -> Table:
    table = Table("id", "name", "model", "prompt", "bundle", "created")
    for r in releases:
        table.add_row(
            str(r["id"]),
            r["name"],
            r["model_uri"],
            r["prompt_uri"],
            r["bundle_uri"],
            r["created_at"][:19],
        )
    return table


def _slot_row(table: Table, role: str, slot: dict[str, Any] | None) -> None:
    if slot is None:
        return
    ready = "[green]ready[/green]" if slot["ready"] else "[red]not ready[/red]"
    rel = slot["release"]
    table.add_row(
        role,
        f"{rel['id']} ({rel['name']})",
        f"{slot['weight']}%",
        f"{rel['model_uri']} + {rel['prompt_uri']}",
        slot["endpoint"] or "-",
        ready,
    )


def deployment_panel(d: dict[str, Any]) -> None:
    console.print(
        f"[bold]{d['name']}[/bold]  phase [cyan]{d['phase']}[/cyan]  "
        f"version {d['version']}  updated {d['updated_at'][:19]}"
    )
    table = Table("slot", "release", "weight", "model + prompt", "endpoint", "state")
    for role in ("blue", "green", "standby"):
        _slot_row(table, role, d.get(role))
    console.print(table)
    if d.get("plan"):
        console.print(f"promotion under way, remaining steps: {d['plan']}")
    if d.get("gate"):
        gate = d["gate"]
        verdict = "[green]passed[/green]" if gate["passed"] else "[red]failed[/red]"
        console.print(f"last comparison ({gate['blue']} vs {gate['green']}): {verdict}")
        for reason in gate["reasons"]:
            console.print(f"  - {reason}")
    if d.get("data_plane_url"):
        console.print(f"data plane: {d['data_plane_url']}")


def history_table(events: list[dict[str, Any]]) -> Table:
    table = Table("when", "who", "action", "before", "after", "reason")
    for e in events:
        table.add_row(
            e["at"][:19],
            e["principal"],
            e["action"],
            _weights(e["weights_before"]),
            _weights(e["weights_after"]),
            e["reason"],
        )
    return table


def _weights(weights: dict[str, int] | None) -> str:
    if not weights:
        return "-"
    return " ".join(f"r{k}:{v}%" for k, v in weights.items())
