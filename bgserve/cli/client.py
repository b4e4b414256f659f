"""CLI verbs that call a running bgserve over HTTP, with readable output or ``--json``.

Every such verb takes the same connection options, defined once here: decorate it with
:func:`remote_verb` and give it a ``remote: Remote`` parameter.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bgserve.cli.plan_view import plan_lines
from bgserve.settings import Settings

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8080"
PAGE_SIZE = 1000
"""Items the CLI asks a list route for at once: the control API's largest page."""
UrlOpt = Annotated[str, typer.Option("--url", envvar="BGSERVE_URL", help="Control API base URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="BGSERVE_TOKEN", help="Bearer token", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer")]

# What to run for each errors.HINTS code; {name} is the deployment, {again} the failed verb.
HINT_COMMANDS = {
    "stage": "bgserve stage {name} --release ID",
    "compare": "bgserve compare {name} --golden-set SET",
    "force": "{again} --force",
    "revert": "bgserve revert {name}",
    "promote": "bgserve promote {name}",
    "wait": "bgserve status {name}, then try again",
    "retry": "try again in a moment",
    "other-name": "choose another name",
}


def hint_command(hint: str, name: str | None, again: str | None) -> str | None:
    """The command a CLI user runs for an error's ``hint``, or None for an unknown code."""
    template = HINT_COMMANDS.get(hint)
    if template is None:
        return None
    return template.format(name=name or "NAME", again=again or f"bgserve promote {name or 'NAME'}")


@dataclass(frozen=True)
class Remote:
    """Where the control API is, how to authenticate, and how to print its answers."""

    url: str = DEFAULT_URL
    token: str | None = None
    as_json: bool = False

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        name: str | None = None,
        again: str | None = None,
        timeout: float = 600.0,
    ) -> Any:
        """Send one request; on an error answer print its message and next step, exit 1.

        ``name`` (the deployment) and ``again`` (this verb's command line) fill in the
        command an error's hint names. Exit 2 when the server cannot be reached.
        """
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, self.url.rstrip("/") + path, json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            say_error(
                f"cannot reach bgserve at {self.url}: {exc} "
                "(start it with `bgserve serve`, or set --url)"
            )
            raise typer.Exit(2) from exc
        payload = _json_or_none(response)
        if response.is_error:
            _print_error(response, payload, name, again)
            raise typer.Exit(1)
        return payload

    def call_all(self, path: str, *, name: str | None = None) -> list[Any]:
        """Every item of a list route, page after page (a server from before paging
        answers the whole list at once, which is taken as it is)."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            query = {"limit": PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
            payload = self.call("GET", f"{path}?{urlencode(query)}", name=name)
            if isinstance(payload, list):
                return payload
            items += payload["items"]
            cursor = payload["next_cursor"]
            if not cursor:
                return items

    def show(self, payload: Any, render: Callable[[Any], None]) -> None:
        """Print ``payload`` as JSON (``--json``) or through ``render``."""
        if self.as_json:
            console.print_json(json.dumps(payload))
        else:
            render(payload)


def remote_verb(func: Callable[..., None]) -> Callable[..., None]:
    """Give a verb the shared ``--url``, ``--token`` and ``--json`` options.

    ``func`` takes ``remote: Remote``; the command line gets the three options in its
    place (after the verb, as in ``bgserve status chat --url URL --json``).
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "remote"]
    shared = [
        inspect.Parameter(
            "url", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_URL, annotation=UrlOpt
        ),
        inspect.Parameter(
            "token", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=TokenOpt
        ),
        inspect.Parameter(
            "as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt
        ),
    ]

    @functools.wraps(func)
    def verb(*args: Any, url: str, token: str | None, as_json: bool, **kwargs: Any) -> None:
        func(*args, remote=Remote(url, token, as_json), **kwargs)

    parameters = [*own, *shared]
    verb.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    verb.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return verb


def load_settings(overrides: dict[str, object] | None = None) -> Settings:
    """Settings from the environment plus the options given (None means not given).

    A bad value exits 2 with pydantic's message, which names the setting.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return Settings.model_validate(given)
    except ValueError as exc:
        say_error(f"bad configuration: {exc}")
        raise typer.Exit(2) from exc


def say_error(message: str) -> None:
    """Print ``message`` in red on stderr, taken literally (no rich markup in it)."""
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _print_error(
    response: httpx.Response, payload: Any, name: str | None, again: str | None
) -> None:
    body = payload if isinstance(payload, dict) else {}
    say_error(f"{response.status_code}: {body.get('message') or response.text}")
    hint = body.get("hint")
    command = hint_command(hint, name, again) if isinstance(hint, str) else None
    if command:
        err_console.print(f"next: {command}", markup=False, highlight=False, soft_wrap=True)


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
    for line in plan_lines(d):
        console.print(line, markup=False)
    if d.get("gate"):
        gate = d["gate"]
        verdict = "[green]passed[/green]" if gate["passed"] else "[red]failed[/red]"
        console.print(f"last comparison ({gate['blue']} vs {gate['green']}): {verdict}")
        for reason in gate["reasons"]:
            console.print(f"  - {reason}")
        for t in gate.get("loosened", []):
            console.print(
                f"  - loosened per call: {t['name']} {t['used']:g} "
                f"(configured: {t['configured']:g}); promoting needs --force",
                markup=False,
            )
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
