"""The command line: `bgserve demo`, and `bgserve serve` driven by the CLI verbs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.flow_helpers import RELEASES, register_demo

BGSERVE = [sys.executable, "-m", "bgserve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_gone(pids: list[int], deadline_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + deadline_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p
            for p in alive
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.1)
    return alive


def test_demo_finishes_with_zero_failed_requests_and_no_process_left() -> None:
    proc = subprocess.Popen(
        [*BGSERVE, "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    seen: list[int] = []
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 170:
        seen.extend(p for p in descendants(proc.pid) if p not in seen)
        time.sleep(0.2)
    output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert "gate closed, as it should be" in output
    assert "failed requests: 0 of" in output
    total = int(output.rsplit("failed requests: 0 of", 1)[1].split()[0])
    assert total > 100
    assert seen, "the demo started no slot process"
    assert wait_gone(seen) == []


@pytest.fixture
def serve_process(tmp_path: Path, mlflow_store: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    register_demo(mlflow_store)
    port = free_port()
    env = {
        **os.environ,
        "BGSERVE_HOME": str(tmp_path),
        "BGSERVE_DATA_PORT": "0",
        "MLFLOW_TRACKING_URI": mlflow_store,
        "MLFLOW_REGISTRY_URI": mlflow_store,
    }
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
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


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

    name, model, prompt = RELEASES["v2"]
    green = run("release", name, "-m", model, "-p", prompt, "--url", url)
    run("stage", "cli", "--release", str(green["id"]), "--url", url)
    html = tmp_path / "report.html"
    compared = CliRunner().invoke(
        app, ["compare", "cli", "-g", "summarize", "--html", str(html), "--url", url]
    )
    assert compared.exit_code == 3, compared.output
    assert "FAILED" in compared.output and "list-like" in compared.output
    page = html.read_text()
    # failing cases come first: "medium" fails, "short-fact" (first in the file) passes
    assert page.index("medium") < page.index("short-fact")

    slots = descendants(proc.pid)
    assert slots
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is done
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    output = proc.stdout.read() if proc.stdout else ""
    assert "Application shutdown complete" in output
    assert wait_gone(slots) == []
