"""Faults during a cutover, on real slot processes killed with real signals.

Each test prints the figures it asserts: client-visible errors, time until the router
stopped routing to a dead slot, time until the slot was back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.backends.local.backend import LocalBackend
from bgserve.dataplane.router import Router, RouteTarget
from bgserve.demo.traffic import TrafficClient
from tests.support.flow import create_releases, deploy, infer_body, make_settings, ok, shares
from tests.support.load import Load
from tests.support.processes import descendants, free_port, start_serve, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_TO_UNROUTED_LIMIT_S = 1.0


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 5 ms until true; the seconds it took. Fails at the deadline."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """What this module's ``app`` (tests/conftest.py) changes."""
    return {"plan_bake_s": 2.0}


def parts(client: TestClient) -> tuple[LocalBackend, dict[str, int]]:
    backend = client.app.state.components.backend  # type: ignore[attr-defined]
    assert isinstance(backend, LocalBackend)
    return backend, client.app.state.ids  # type: ignore[attr-defined]


def kill_slot(client: TestClient, name: str, release_id: int) -> tuple[int, int, float]:
    """SIGKILL the slot's process; its pid, port and the monotonic time of the kill."""
    backend, _ = parts(client)
    info = backend.slot_info(name, release_id)
    pid = backend.slot_pid(name, release_id)
    assert info is not None and pid is not None
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return pid, int(info.endpoint.rsplit(":", 1)[1]), killed_at


def events(client: TestClient, name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ok(client.get(f"/deployments/{name}/history"))
    return result


def wait_restarted(client: TestClient, name: str, release_id: int, old_pid: int) -> float:
    backend, _ = parts(client)

    def back() -> bool:
        info = backend.slot_info(name, release_id)
        pid = backend.slot_pid(name, release_id)
        restarted = any(e["action"] == "slot-restarted" for e in events(client, name))
        return bool(info and info.ready and pid != old_pid and restarted)

    return wait_for(back, 120, f"slot of release {release_id} restarted")


def assert_only_in_flight_failed(load: Load, unrouted_at: float) -> None:
    """Only requests the dying process had accepted failed: at most one per client, and
    none sent after the router took the slot out (a SIGKILLed process keeps accepting
    connections until the kernel has torn it down and closed its sockets)."""
    failed = load.failures()
    assert all(start <= unrouted_at for start, *_ in failed), failed
    assert len(failed) <= load.clients, failed


def test_green_killed_mid_promotion_reverts_within_a_second(app: TestClient) -> None:
    backend, ids = parts(app)
    url = deploy(app, "gk", ids["v1"], ids["reworded"])
    with Load(url, timeout=10.0) as load, ThreadPoolExecutor(1) as pool:
        plan = pool.submit(app.post, "/deployments/gk/promote", json={"force": True})
        wait_for(lambda: load.answered_by("green") >= 5, 30, "green to take traffic")
        pid, port, killed_at = kill_slot(app, "gk", ids["reworded"])
        unrouted = wait_for(lambda: backend.router.is_down("127.0.0.1", port), 5, "unrouting")
        wait_for(lambda: ok(app.get("/deployments/gk"))["phase"] == "reverted", 10, "revert")
        restart = wait_restarted(app, "gk", ids["reworded"], pid)
        after_restart = time.monotonic()
        wait_for(lambda: load.answered_by("blue", after_restart) >= 50, 30, "more traffic")
        assert plan.result(timeout=60).status_code == 202
    print(
        f"\ngreen SIGKILLed at 10%: unrouted after {unrouted * 1000:.0f} ms, "
        f"{len(load.failures())} client errors of {len(load.calls)}, restarted in {restart:.1f} s"
    )
    assert unrouted < KILL_TO_UNROUTED_LIMIT_S
    assert_only_in_flight_failed(load, killed_at + unrouted)
    assert load.answered_by("green", after_restart) == 0  # reverted: green stays at 0
    body = ok(app.get("/deployments/gk"))
    assert (body["blue"]["weight"], body["green"]["weight"], body["plan"]) == (100, 0, None)
    revert = next(e for e in events(app, "gk") if e["action"] == "revert")
    assert revert["principal"] == "bgserve" and revert["details"] == {"slot_lost": ids["reworded"]}
    assert "died" in revert["reason"]


def test_old_blue_killed_after_cutover_stays_on_green(app: TestClient) -> None:
    _, ids = parts(app)
    url = deploy(app, "sk", ids["v1"], ids["reworded"])
    before = ok(app.post("/deployments/sk/promote", json={"weight": 100, "force": True}))
    assert before["standby"]["release"]["id"] == ids["v1"]
    with Load(url, timeout=10.0) as load:
        wait_for(lambda: load.answered_by("blue") >= 20, 30, "traffic")
        pid, _, _ = kill_slot(app, "sk", ids["v1"])
        restart = wait_restarted(app, "sk", ids["v1"], pid)
    print(
        f"\nstandby SIGKILLed: {len(load.failures())} client errors, restarted in {restart:.1f} s"
    )
    assert load.failures() == []
    after = ok(app.get("/deployments/sk"))
    assert after["version"] == before["version"] and after["phase"] == "stable"
    assert after["blue"]["release"]["id"] == ids["reworded"] and after["standby"]["ready"]
    lost = next(e for e in events(app, "sk") if e["action"] == "slot-lost")
    assert lost["principal"] == "bgserve" and "standby" in lost["reason"]
    assert ok(app.post("/deployments/sk/revert", json={}))["blue"]["release"]["id"] == ids["v1"]


def test_blue_killed_mid_shift_sends_traffic_to_green_until_it_is_back(app: TestClient) -> None:
    backend, ids = parts(app)
    url = deploy(app, "bk", ids["v1"], ids["reworded"])
    before = ok(app.post("/deployments/bk/promote", json={"weight": 50, "force": True}))
    with Load(url, timeout=10.0) as load:
        wait_for(lambda: load.answered_by("blue") >= 10, 30, "traffic")
        pid, port, killed_at = kill_slot(app, "bk", ids["v1"])
        unrouted = wait_for(lambda: backend.router.is_down("127.0.0.1", port), 5, "unrouting")
        restart = wait_restarted(app, "bk", ids["v1"], pid)
    print(
        f"\nblue SIGKILLed at 50/50: unrouted after {unrouted * 1000:.0f} ms, "
        f"{len(load.failures())} client errors of {len(load.calls)}, restarted in {restart:.1f} s"
    )
    assert unrouted < KILL_TO_UNROUTED_LIMIT_S
    assert_only_in_flight_failed(load, killed_at + unrouted)
    after = ok(app.get("/deployments/bk"))
    assert after["version"] == before["version"] and after["green"]["weight"] == 50
    slots, _ = shares(url, 100)
    assert slots == {"blue": 50, "green": 50}


class _Ready(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = (
            b'{"outputs": [{"name": "output", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


def serve_stub(port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_breaker_trips_on_a_refused_connection_and_probes_the_slot_back(tmp_path: Path) -> None:
    up = serve_stub()
    placeholder = serve_stub()  # reserves a port, then frees it: nothing listens there
    down_port = placeholder.server_address[1]
    placeholder.shutdown()
    placeholder.server_close()
    router = Router(breaker=True, probe_interval=0.05)
    url = f"http://127.0.0.1:{router.start('127.0.0.1', 0)}/v2/models/d/infer"
    revived = None
    try:
        router.set_routes(
            "d",
            [
                RouteTarget("blue", 1, "127.0.0.1", down_port, 50),
                RouteTarget("green", 2, "127.0.0.1", up.server_address[1], 50),
            ],
        )
        with httpx.Client() as http:
            statuses = [http.post(url, json=infer_body("x")).status_code for _ in range(20)]
            assert statuses == [200] * 20
            blue = next(s for s in router.stats()["slots"] if s["role"] == "blue")
            assert blue["retries"] == 1 and router.is_down("127.0.0.1", down_port)
            revived = serve_stub(down_port)
            back = wait_for(lambda: not router.is_down("127.0.0.1", down_port), 5, "probe")
            answered = [
                http.post(url, json=infer_body("x")).headers["x-bgserve-slot"] for _ in range(20)
            ]
        print(f"\nbreaker: 1 connect attempt to the dead slot, probed back in {back * 1000:.0f} ms")
        assert answered.count("blue") == 10
    finally:
        router.stop()
        for server in (up, revived):
            if server is not None:
                server.shutdown()
                server.server_close()


def test_bgserve_killed_mid_bake_resumes_the_same_step_and_bakes_it_whole(
    tmp_path: Path, mlflow_store: str
) -> None:
    from tests.support.flow import RELEASES, register_demo

    register_demo(mlflow_store)
    env = {
        "BGSERVE_PLAN_BAKE_S": "20",
        "BGSERVE_PLAN_INITIAL_DELAY_S": "0",
        "BGSERVE_PLAN_WARMUP_REQUESTS": "0",
        "BGSERVE_PLAN_MIN_REQUESTS": "5",
        "BGSERVE_PLAN_MAX_LATENCY_P95_RATIO": "20",
        "BGSERVE_ENGINE_INTERVAL_SECONDS": "0.1",
    }
    url, proc = start_serve(tmp_path, mlflow_store, env)
    http = httpx.Client(base_url=url, timeout=120)
    try:
        ids = {}
        for key in ("v1", "reworded"):
            name, model, prompt = RELEASES[key]
            body = {"name": name, "model_uri": model, "prompt_uri": prompt}
            ids[key] = ok(http.post("/releases", json=body), 201)["id"]
        ok(http.post("/deployments", json={"name": "bk", "release_id": ids["v1"]}), 201)
        ok(http.post("/deployments/bk/green", json={"release_id": ids["reworded"]}))
        plan = {"steps": [10, 100]}
        before = ok(http.post("/deployments/bk/promote", json={"plan": plan, "force": True}), 202)
        time.sleep(1.0)
        slots = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        orphans = wait_gone(slots)
        restarted = datetime.now(UTC)
        url, proc = start_serve(tmp_path, mlflow_store, env)
        http = httpx.Client(base_url=url, timeout=120)
        after = ok(http.get("/deployments/bk"))
        print(
            f"\nbgserve SIGKILLed 1 s into a 20 s bake: {len(slots)} child processes, "
            f"{len(orphans)} left; after restart phase {after['phase']}, green "
            f"{after['green']['weight']}%, bake until {after['plan']['bake_until']}"
        )
        assert slots and orphans == []
        # The same step; an analysis may already be recorded if the restart outlasted the bake.
        assert after["phase"] == "promoting" and after["version"] - before["version"] in (0, 1)
        assert after["plan"]["bake_until"] == before["plan"]["bake_until"]
        assert after["plan"]["weight"] == 10 and after["green"]["weight"] == 10
        text = {"text": "Keep calling. While the plan resumes."}
        with TrafficClient(after["data_plane_url"], text, pause=0.005) as traffic:

            def done() -> bool:
                return bool(ok(http.get("/deployments/bk"))["phase"] == "stable")

            wait_for(done, 90, "the resumed plan to finish")
            counts = traffic.stop()
        assert counts.failures == [] and counts.per_slot["green"] > 0
        history = ok(http.get("/deployments/bk/history"))
        step = next(e for e in history if e["principal"] == "bgserve" and e["action"] == "promote")
        # The counts of the first second died with the process: the step bakes its whole
        # 20 s again from the new leader's first reading, never ending on a short window.
        promoted_at = datetime.fromisoformat(step["at"])
        assert (promoted_at - restarted).total_seconds() >= 20
    finally:
        slots = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert wait_gone(slots) == []


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``mlflow server`` (SQLite behind it) in its own process group."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{uri}/health").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "mlflow server")
        yield uri, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_mlflow_down_refuses_registration_and_comparison_but_serves_and_reverts(
    tmp_path: Path, mlflow_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    import mlflow

    from tests.support.flow import register_demo

    uri, proc = mlflow_server
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        register_demo(uri)
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
    with TestClient(
        create_app(make_settings(tmp_path / "home", uri)), base_url="http://127.0.0.1"
    ) as client:
        ids = create_releases(client)
        url = deploy(client, "down", ids["v1"], ids["reworded"])
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with Load(url, timeout=10.0) as load:
            started = time.monotonic()
            refused = client.post(
                "/releases",
                json={
                    "name": "late",
                    "model_uri": "models:/summarizer/1",
                    "prompt_uri": "prompts:/summarize/1",
                },
            )
            register_s = time.monotonic() - started
            compared = client.post("/deployments/down/compare", json={"golden_set": "summarize"})
            ok(client.post("/deployments/down/promote", json={"weight": 100, "force": True}))
            started = time.monotonic()
            reverted = ok(client.post("/deployments/down/revert", json={}))
            revert_s = time.monotonic() - started
        print(
            f"\nMLflow killed: registration 503 in {register_s:.1f} s, comparison "
            f"{compared.status_code}, revert 200 in {revert_s:.1f} s, {len(load.failures())} "
            f"client errors of {len(load.calls)}"
        )
    assert refused.status_code == 503 and "MLflow" in refused.json()["message"]
    assert compared.status_code == 503 and "MLflow" in compared.json()["message"]
    assert register_s < 15 and revert_s < 15
    assert reverted["blue"]["release"]["id"] == ids["v1"]
    assert load.failures() == [] and len(load.calls) > 50
