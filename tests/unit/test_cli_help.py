"""The CLI's help and its rendering of error hints, as a user reads them."""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from bgserve import errors
from bgserve.cli.app import app
from bgserve.cli.client import hint_command

runner = CliRunner()


def help_of(*verb: str) -> str:
    result = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return result.output


def every_verb() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    verbs: list[tuple[str, ...]] = []
    for name, command in root.commands.items():
        verbs.append((name,))
        if isinstance(command, TyperGroup):
            verbs += [(name, sub) for sub in command.commands]
    assert len(verbs) > 15
    return verbs


def test_flags_read_as_flags_in_every_help() -> None:
    status = help_of("status")
    assert "--json " in status and "--help " in status
    for verb in every_verb():
        text = help_of(*verb)
        assert "<bool>" not in text, (verb, text)


def test_remote_verbs_share_the_connection_options() -> None:
    remote = ["release", "releases", "deploy", "stage", "promote", "revert", "status", "history"]
    for verb in [*remote, "compare"]:
        text = help_of(verb)
        for option in ("--url", "BGSERVE_URL", "--token", "BGSERVE_TOKEN", "--json"):
            assert option in text, (verb, option)
    assert "--url" in help_of("prompts", "validate")


def test_serve_help_shows_the_default_ports_and_their_variables() -> None:
    text = " ".join(help_of("serve").split())
    assert "BGSERVE_PORT; default: 8080" in text
    assert "BGSERVE_DATA_PORT; default: 8081" in text
    assert "default: 127.0.0.1" in text


def test_compare_help_names_the_golden_set_and_the_exit_status() -> None:
    text = " ".join(help_of("compare").split())
    assert "--golden-set SET" in text and "prompts/<name>" not in text
    assert "3 when it failed" in text
    assert "3 otherwise" in " ".join(help_of("prompts", "validate").split())


@pytest.mark.parametrize("hint", sorted(errors.HINTS))
def test_every_hint_code_becomes_something_to_do(hint: str) -> None:
    rendered = hint_command(hint, "chat", "bgserve promote chat --weight 10")
    assert rendered
    assert "/deployments" not in rendered and '"force"' not in rendered


def test_hints_name_the_command_with_the_deployment() -> None:
    assert hint_command("stage", "chat", None) == "bgserve stage chat --release ID"
    assert hint_command("compare", "chat", None) == "bgserve compare chat --golden-set SET"
    assert hint_command("revert", "chat", None) == "bgserve revert chat"
    assert hint_command("force", "chat", "bgserve promote chat --weight 10") == (
        "bgserve promote chat --weight 10 --force"
    )
    assert hint_command("no-such-hint", "chat", None) is None


def test_a_bad_setting_is_named_and_exits_2() -> None:
    result = runner.invoke(app, ["render", "-d", "x"], env={"BGSERVE_PLAN_STEPS": "[50, 10]"})
    assert result.exit_code == 2
    assert "PLAN_STEPS" in result.output.upper()
