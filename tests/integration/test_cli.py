"""The command line: `bgserve demo`, and `bgserve serve` driven by the CLI verbs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.support.flow import RELEASES, register_demo
from tests.support.processes import descendants, free_port, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BGSERVE = [sys.executable, "-m", "bgserve"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without bgserve's or MLflow's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGSERVE_", "MLFLOW_"))}
    return {**env, "COLUMNS": "120", **extra}


@contextmanager
def serving(
    home: Path, mlflow_uri: str, **extra: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`bgserve serve` on a free port, with its own home, this MLflow store and ``extra``
    variables."""
    port = free_port()
    env = clean_env(
        BGSERVE_HOME=str(home),
        BGSERVE_DATA_PORT="0",
        BGSERVE_PLAN_BAKE_S="0.2",
        BGSERVE_PLAN_MAX_BAKE_S="1",
        BGSERVE_ENGINE_INTERVAL_SECONDS="0.1",
        MLFLOW_TRACKING_URI=mlflow_uri,
        MLFLOW_REGISTRY_URI=mlflow_uri,
        **extra,
    )
    proc = subprocess.Popen(
        [*BGSERVE, "serve", "--port", str(port)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def serve_process(tmp_path: Path, mlflow_store: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    register_demo(mlflow_store)
    with serving(tmp_path, mlflow_store) as served:
        yield served


def run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.output)
    return parsed


def test_cli_verbs_drive_a_server_that_stops_cleanly_on_sigterm(
    serve_process: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, proc = serve_process
    name, model, prompt = RELEASES["v1"]
    release = run("release", name, "-m", model, "-p", prompt, "--url", url)
    assert release["model_uri"] == "models:/summarizer/1" and release["prompt_version"] == 1
    deployed = run("deploy", "cli", "--release", str(release["id"]), "--url", url)
    assert deployed["phase"] == "stable"
    status = run("status", "cli", "--url", url)
    assert status["blue"]["ready"] is True  # type: ignore[index]
    history = CliRunner().invoke(app, ["history", "cli", "--url", url, "--json"])
    assert json.loads(history.output)[0]["action"] == "create"

    bad = CliRunner().invoke(app, ["promote", "cli", "--weight", "10", "--url", url])
    assert bad.exit_code == 1 and "no green" in bad.output
    assert "next: bgserve stage cli --release ID" in bad.output
    assert "/deployments" not in bad.output

    name, model, prompt = RELEASES["v2"]
    green = run("release", name, "-m", model, "-p", prompt, "--url", url)
    run("stage", "cli", "--release", str(green["id"]), "--url", url)
    html = tmp_path / "report.html"
    compared = CliRunner().invoke(
        app, ["compare", "cli", "-g", "summarize", "--html", str(html), "--url", url]
    )
    assert compared.exit_code == 3, compared.output
    assert "FAILED" in compared.output and "list-like" in compared.output
    for flags, field in ((["--judge"], "judge"), (["--scorer", "no-such"], "scorer")):
        asked = CliRunner().invoke(app, ["compare", "cli", "-g", "summarize", *flags, "--url", url])
        assert asked.exit_code == 1 and field in asked.output, asked.output
    page = html.read_text()
    # failing cases come first: "medium" fails, "short-fact" (first in the file) passes
    assert page.index("medium") < page.index("short-fact")
    refused = CliRunner().invoke(app, ["promote", "cli", "--weight", "10", "--url", url])
    assert refused.exit_code == 1 and "comparison of cli failed" in refused.output
    assert "next: bgserve promote cli --weight 10 --force" in refused.output
    # No traffic: the first step cannot be judged and holds after max_bake (exit 4); a
    # second promote is the operator's go-ahead, to 100 here: cut over (exit 0).
    plan = ["promote", "cli", "--force", "--steps", "50,100", "--bake", "0.2", "--url", url]
    held = CliRunner().invoke(app, plan)
    assert held.exit_code == 4, held.output
    assert "held" in held.output and "too few requests" in held.output
    resumed = CliRunner().invoke(app, ["promote", "cli", "--url", url])
    assert resumed.exit_code == 0, resumed.output
    assert "cut over" in resumed.output

    slots = descendants(proc.pid)
    assert slots
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is done
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    output = proc.stdout.read() if proc.stdout else ""
    assert "Application shutdown complete" in output
    for noise in ("input example", "Successfully registered", "INFO mlflow", "\x1b["):
        assert noise not in output, output
    assert wait_gone(slots) == []


def readme_using_it() -> list[str]:
    """The `bgserve` lines of the README's "Using it" block, comments removed."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using it", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("bgserve ")]


def test_readme_using_it_works_verbatim_after_quickstart(tmp_path: Path) -> None:
    commands = readme_using_it()
    assert commands[0] == "bgserve quickstart" and commands[1] == "bgserve serve"
    assert any("@candidate" in c for c in commands)
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_uri)
    quick = subprocess.run(
        [*BGSERVE, "quickstart"], env=env, capture_output=True, text=True, timeout=180
    )
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert f"registering in MLflow at {mlflow_uri}" in quick.stdout
    assert "Successfully registered" not in quick.stdout + quick.stderr
    # Nobody sends traffic here, so no step can be judged: let the plan go on regardless.
    with serving(tmp_path / "home", mlflow_uri, BGSERVE_PLAN_ON_INCONCLUSIVE="continue") as (
        url,
        _,
    ):
        for command in commands[2:]:
            done = subprocess.run(
                [*BGSERVE, *command.split()[1:]],
                env={**env, "BGSERVE_URL": url},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        history = httpx.get(f"{url}/deployments/chat/history").json()
        releases = {r["name"]: r for r in httpx.get(f"{url}/releases").json()}
    assert {"create", "stage", "compare", "revert"} <= {e["action"] for e in history}
    # the aliases quickstart set were resolved to fixed versions at registration
    assert releases["chat-v2"]["prompt_version"] == 2
