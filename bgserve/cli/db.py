"""``bgserve db``: the state database's schema, read or upgraded in place.

Both verbs work on the database the settings name (``BGSERVE_STATE_URL``, or the
SQLite file in ``BGSERVE_HOME``), the one ``bgserve serve`` would open. ``serve``
upgrades at start anyway; ``db upgrade`` lets an operator do it first, and
``db current`` says where a database stands without changing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy import Engine

from bgserve.cli.client import load_settings, say_error
from bgserve.errors import BgserveError

db_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Show or upgrade the schema of the state database.",
)

StateUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        help="SQLAlchemy URL of the state (default: BGSERVE_STATE_URL, else BGSERVE_HOME/state.db)",
        show_default=False,
    ),
]

_out = Console()
T = TypeVar("T")


def _on_database(state_url: str | None, work: Callable[[Engine], T]) -> tuple[str, T]:
    """Run ``work`` on an engine for the configured database; errors exit 1 with the message.

    The settings are the ones ``bgserve serve`` would load, so both see the same database.
    """
    from bgserve.store.database import open_engine, shown

    settings = load_settings({"state_url": state_url})
    try:
        engine = open_engine(settings.resolved_state_url)
        try:
            return shown(engine.url), work(engine)
        finally:
            engine.dispose()
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc


@db_app.command()
def upgrade(state_url: StateUrlOpt = None) -> None:
    """Migrate the state database to the schema of this bgserve (a no-op when it is there)."""
    from bgserve.store.database import upgrade_database

    where, (before, head) = _on_database(state_url, upgrade_database)
    if before == head:
        _out.print(f"{where}: already at schema revision {head}", highlight=False)
    else:
        _out.print(f"{where}: upgraded from {before} to schema revision {head}", highlight=False)


@db_app.command()
def current(state_url: StateUrlOpt = None) -> None:
    """Show the state database's schema revision and whether it needs an upgrade."""
    from bgserve.store.database import database_revision
    from bgserve.store.migrate import head_revision

    where, revision = _on_database(state_url, database_revision)
    head = head_revision()
    if revision == head:
        state = "up to date"
    elif revision is None:
        state = "no schema version yet (empty, or made before migrations): run bgserve db upgrade"
    else:
        state = f"behind {head}: run bgserve db upgrade"
    _out.print(f"{where}: schema revision {revision or 'none'}, {state}", highlight=False)
