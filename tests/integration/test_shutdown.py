"""SIGTERM while a killed slot is being restarted: nothing outlives bgserve, and the
shutdown is not recorded as a failed restart (the reliability bar, run 20 times)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from bgserve.store import Store
from tests.support.flow import RELEASES, ok, register_demo
from tests.support.processes import descendants, start_serve, wait_gone

# Starts of bgserve with two slots each, about 20 s apiece on a loaded 2-core machine:
# 10 in the suite (its longest test), BGSERVE_SHUTDOWN_RUNS=50 for a soak of the race.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

RUNS = int(os.environ.get("BGSERVE_SHUTDOWN_RUNS", "10"))


def slot_pid(bgserve_pid: int, release_id: int) -> int:
    """The slot process serving ``release_id`` below bgserve."""
    for pid in descendants(bgserve_pid):
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--release-id" in cmdline and cmdline[cmdline.index("--release-id") + 1] == str(
            release_id
        ):
            return pid
    raise AssertionError(f"no slot process of release {release_id}")


def setup_deployment(url: str) -> int:
    """Blue v1, green reworded; returns green's release id."""
    with httpx.Client(base_url=url, timeout=120) as http:
        ids = {}
        for key in ("v1", "reworded"):
            name, model, prompt = RELEASES[key]
            body = {"name": name, "model_uri": model, "prompt_uri": prompt}
            ids[key] = ok(http.post("/releases", json=body), 201)["id"]
        ok(http.post("/deployments", json={"name": "sd", "release_id": ids["v1"]}), 201)
        ok(http.post("/deployments/sd/green", json={"release_id": ids["reworded"]}))
    return int(ids["reworded"])


def test_sigkill_green_mid_shift_then_sigterm_leaves_no_child_and_no_failed_restart(
    tmp_path: Path, mlflow_store: str
) -> None:
    register_demo(mlflow_store)
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a loaded machine
    leftovers: list[tuple[int, list[int]]] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        url, proc = start_serve(tmp_path, mlflow_store)
        green = setup_deployment(url)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        for run in range(RUNS):
            url, proc = start_serve(tmp_path, mlflow_store)
            with httpx.Client(base_url=url, timeout=60) as http:
                ok(http.post("/deployments/sd/promote", json={"weight": 30, "force": True}))
            os.kill(slot_pid(proc.pid, green), signal.SIGKILL)
            time.sleep(random.uniform(0.0, 0.5))  # the restart is starting or under way
            children = descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            alive = wait_gone(children, deadline_s=10)
            if alive:
                leftovers.append((run, alive))
                for pid in alive:
                    os.kill(pid, signal.SIGKILL)
    finally:
        load.kill()
        load.wait()
        if proc is not None and proc.poll() is None:  # a failure or timeout mid-run
            proc.kill()
            proc.wait()
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        actions = [(e.action, e.reason) for e in store.history("sd")]
    finally:
        store.close()
    print(f"\n{RUNS} runs of SIGKILL green at 30% then SIGTERM: {len(leftovers)} left children")
    assert leftovers == []
    assert [a for a in actions if a[0] == "restart-failed"] == []
    # A kill the watcher saw before the SIGTERM reverted green (most of them do).
    assert any(a == "revert" for a, _ in actions)
