"""The data plane in its own process: isolation from the control plane's GIL, versioned
route updates, restart with the routes restored, the data-plane token and bind guard,
and no slot left behind by a close() racing ensure_slot."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import ValidationError

from bgserve.backends.local.backend import LocalBackend
from bgserve.dataplane.main import ControlDispatcher
from bgserve.dataplane.router import Router
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.support.models import infer_body, local_release, pid_gone, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]


@pytest.fixture(scope="module")
def backend(
    bundles: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBackend]:
    backend = LocalBackend(
        "127.0.0.1", 0, ready_timeout=90, log_dir=tmp_path_factory.mktemp("slots")
    )
    try:
        backend.ensure_slot("demo", local_release(1, bundles["v1"]))
        backend.ensure_slot("demo", local_release(2, bundles["v2"]))
        backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
        yield backend
    finally:
        backend.close()


def slot_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-bgserve-slot"]


def test_the_router_runs_in_a_child_process_and_switches_once_the_call_returns(
    backend: LocalBackend,
) -> None:
    pid = backend.router.pid
    assert pid is not None and pid != os.getpid()
    assert psutil.Process(pid).ppid() == os.getpid()
    url = backend.data_plane_url("demo")
    with httpx.Client() as http:
        for green in (100, 0, 100, 0):
            started = time.monotonic()
            backend.set_routes("demo", [Route("blue", 1, 100 - green), Route("green", 2, green)])
            took = time.monotonic() - started
            expected = "green" if green else "blue"
            assert [slot_of(http.post(url, json=infer_body("x"))) for _ in range(3)] == [
                expected
            ] * 3
            print(f"\nset_routes returned after {took * 1000:.1f} ms, switch already applied")


def test_a_killed_data_plane_is_restarted_with_its_routes_and_no_slot_loss(
    backend: LocalBackend,
) -> None:
    lost: list[tuple[str, int]] = []
    backend.watch_slots(lambda d, r: lost.append((d, r)))
    backend.set_routes("demo", [Route("blue", 1, 0), Route("green", 2, 100)])
    old_pid, restarts = backend.router.pid, backend.router.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: backend.router.restarts == restarts + 1, 15, "the data plane restart")
    with httpx.Client() as http:
        answered = [slot_of(http.post(backend.data_plane_url("demo"), json=infer_body("x")))]
    assert answered == ["green"]
    assert backend.router.pid != old_pid and pid_gone(old_pid)
    assert lost == []
    backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])


def test_stale_route_versions_are_ignored() -> None:
    plane = ControlDispatcher(Router())
    newer = [["green", 2, "127.0.0.1", 9, 100]]
    older = [["blue", 1, "127.0.0.1", 8, 100]]

    assert plane.set_routes("d", 5, newer)
    assert not plane.set_routes("d", 4, older)
    assert not plane.set_routes("d", 5, older)
    assert [t.role for t in plane.router.routes("d")] == ["green"]
    assert plane.set_routes("d", 6, None)
    assert not plane.set_routes("d", 5, newer)
    assert plane.router.routes("d") == []


CLIENT = textwrap.dedent(
    """
    import json, sys, time, httpx
    url, body = sys.argv[1], {body}
    samples = []
    with httpx.Client(timeout=30) as http:
        http.post(url, json=body)
        print("ready", flush=True)
        import select
        while not select.select([sys.stdin], [], [], 0)[0]:
            start = time.monotonic()
            status = http.post(url, json=body).status_code
            samples.append((start, time.monotonic() - start, status))
            time.sleep(0.002)
    print(json.dumps(samples), flush=True)
    """
)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_a_gil_holding_regex_in_the_control_plane_costs_inference_nothing(
    backend: LocalBackend,
) -> None:
    script = CLIENT.format(body=repr(infer_body("Latency, please.")))
    client = subprocess.Popen(
        [sys.executable, "-c", script, backend.data_plane_url("demo")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # the baseline
    window: list[float] = []

    def pathological() -> None:
        window.append(time.monotonic())
        re.search(r"^(a+)+$", "a" * 26 + "b")  # holds the GIL for seconds
        window.append(time.monotonic())

    regex = threading.Thread(target=pathological)
    regex.start()
    regex.join()
    time.sleep(0.3)
    out, _ = client.communicate("stop\n", timeout=60)
    samples = json.loads(out.strip().splitlines()[-1])
    start, end = window
    base = [s[1] for s in samples if s[0] < start]
    during = [s[1] for s in samples if start <= s[0] and s[0] + s[1] <= end]
    print(
        f"\nregex held the GIL {end - start:.1f} s; data-plane p99 {p99(base) * 1000:.1f} ms "
        f"before ({len(base)} requests), {p99(during) * 1000:.1f} ms during ({len(during)}), "
        f"max during {max(during) * 1000:.1f} ms"
    )
    assert all(s[2] == 200 for s in samples)
    assert end - start > 1.0 and len(during) > 50
    assert p99(during) < 3 * p99(base) + 0.020
    assert max(during) < 1.0


def test_data_token_guards_everything_but_health(tmp_path: Path, bundles: dict[str, str]) -> None:
    backend = LocalBackend("127.0.0.1", 0, log_dir=tmp_path, data_token="s3cret-token")
    try:
        backend.ensure_slot("demo", local_release(1, bundles["v1"]))
        backend.set_routes("demo", [Route("blue", 1, 100)])
        url = backend.data_plane_url("demo")
        base = url.split("/v2/")[0]
        missing = httpx.post(url, json=infer_body("x"))
        wrong = httpx.post(url, json=infer_body("x"), headers={"authorization": "Bearer nope"})
        right = httpx.post(
            url, json=infer_body("x"), headers={"authorization": "Bearer s3cret-token"}
        )
        health = httpx.get(f"{base}/v2/health/ready")
        ready = httpx.get(f"{base}/v2/models/demo/ready")
    finally:
        backend.close()
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "token" in missing.json()["error"]
    assert right.status_code == 200 and right.json()["outputs"][0]["data"] == ["v1:X"]
    assert health.status_code == 200
    assert ready.status_code == 401


def test_open_data_plane_bind_needs_a_token_or_an_explicit_opt_out(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="BGSERVE_DATA_ALLOW_UNAUTHENTICATED"):
        Settings(home=tmp_path, data_host="0.0.0.0")
    assert Settings(home=tmp_path, data_host="0.0.0.0", data_token="t").data_token == "t"
    assert Settings(home=tmp_path, data_host="0.0.0.0", data_allow_unauthenticated=True)
    assert Settings(home=tmp_path, data_host="::1").data_host == "::1"


def test_close_racing_ensure_slot_leaves_no_process(
    tmp_path: Path, bundles: dict[str, str]
) -> None:
    backend = LocalBackend("127.0.0.1", 0, ready_timeout=90, log_dir=tmp_path)
    plane_pid = backend.router.pid
    assert plane_pid is not None
    others = {c.pid for c in slot_children()}  # the module fixture's slots

    def spawned() -> list[psutil.Process]:
        return [c for c in slot_children() if c.pid not in others]

    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(backend.ensure_slot, "demo", local_release(1, bundles["v1"]))
        wait_until(lambda: spawned(), 30, "the slot process to start")
        started = spawned()
        backend.close()
        with pytest.raises(BackendError, match="the local backend is closed"):
            starting.result(timeout=60)
    assert pid_gone(plane_pid)
    for child in started:
        wait_until(lambda c=child: pid_gone(c.pid), 15, "the slot to exit")


def slot_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if "bgserve.slot.server" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass  # exited meanwhile
    return found
