"""Two bgserve replicas on one real PostgreSQL: one leads (advisory lock), both serve.

The replicas share one in-memory backend, standing for the cluster both would drive. A plan
started through the follower is advanced by the leader; when the leader goes, the other takes
over and finishes the plan with no step applied twice; a lost slot is restarted once, by the
leader; a SIGKILLed holder frees the lock at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.backends.base import SlotLostCallback
from bgserve.backends.memory import MemoryBackend
from bgserve.compose import build_components
from bgserve.settings import Settings
from bgserve.store.advisory_lock import PostgresLease
from tests.support.flow import Answer, create_releases, make_settings, ok, poll, register_demo
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

PLAN = {
    "steps": [10, 50, 100],
    "bake_s": 1.0,
    "analysis": {"max_bake_s": 1.0, "on_inconclusive": "continue"},
}


def replica_settings(home: Path, mlflow_uri: str, state_url: str, name: str) -> Settings:
    return make_settings(home / name, mlflow_uri).model_copy(
        update={
            "backend": "memory",
            "state_url": state_url,
            "leader_election": "postgres",
            "leader_identity": name,
            "leader_retry_period_seconds": 0.1,
            "leader_renew_deadline_seconds": 0.5,
            "leader_lease_duration_seconds": 1.0,
            "engine_interval_seconds": 0.05,
        }
    )


class Cluster(MemoryBackend):
    """The platform both replicas drive: it outlives a replica that stops, and every
    replica's watch sees a slot die (as every replica's watch on the API server would)."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers: list[SlotLostCallback] = []

    def watch_slots(self, callback: SlotLostCallback) -> None:
        self.watchers.append(callback)
        super().watch_slots(self._tell_every_watcher)

    def _tell_every_watcher(self, deployment: str, release_id: int) -> None:
        for callback in list(self.watchers):
            callback(deployment, release_id)

    def close(self) -> None:
        return None


class Replicas:
    """Replicas ``a`` and ``b`` started in that order (so ``a`` leads first)."""

    def __init__(self, tmp: Path, mlflow_uri: str, state_url: str) -> None:
        self.backend = Cluster()
        self.stacks: dict[str, ExitStack] = {}
        self.clients: dict[str, TestClient] = {}
        for name in ("a", "b"):
            settings = replica_settings(tmp, mlflow_uri, state_url, name)
            app = create_app(settings, build=lambda s: build_components(s, self.backend))
            stack = ExitStack()
            self.clients[name] = stack.enter_context(TestClient(app, base_url="http://127.0.0.1"))
            self.stacks[name] = stack

    def leads(self, name: str) -> bool:
        status = ok(self.clients[name].get("/readyz"))["leadership"]
        return bool(status["leader"])

    def stop(self, name: str) -> None:
        self.stacks.pop(name).close()

    def close(self) -> None:
        for stack in self.stacks.values():
            stack.close()


@pytest.fixture
def replicas(
    tmp_path: Path, mlflow_store: str, pg: PostgresServer
) -> Iterator[tuple[Replicas, dict[str, int]]]:
    register_demo(mlflow_store)
    pair = Replicas(tmp_path, mlflow_store, pg.new_database())
    try:
        yield pair, create_releases(pair.clients["a"])
    finally:
        pair.close()


def moves(history: list[dict[str, Any]], release: int) -> list[int]:
    return [
        e["weights_after"][str(release)]
        for e in history
        if e["action"] in ("shift", "promote") and e["principal"] == "bgserve"
    ]


def test_the_follower_takes_a_plan_the_leader_advances_and_finishes_it_alone(
    replicas: tuple[Replicas, dict[str, int]],
) -> None:
    pair, ids = replicas
    a, b = pair.clients["a"], pair.clients["b"]
    assert pair.leads("a") and not pair.leads("b")
    assert ok(b.get("/readyz"))["leadership"]["holder"] == "a"
    assert "bgserve_leader 1.0" in a.get("/metrics").text
    assert "bgserve_leader 0.0" in b.get("/metrics").text

    ok(b.post("/deployments", json={"name": "ha", "release_id": ids["v1"]}), 201)
    ok(b.post("/deployments/ha/green", json={"release_id": ids["reworded"]}))
    ok(b.post("/deployments/ha/promote", json={"plan": PLAN, "force": True}), 202)
    poll(lambda: ok(b.get("/deployments/ha"))["green"]["weight"] == 50, 10, "the step to 50")

    pair.stop("a")  # the leader goes in the middle of the bake at 50
    started = time.monotonic()
    poll(lambda: pair.leads("b"), 5, "b taking the lock over")
    print(f"\nfailover (advisory lock, lease 1 s, retry 0.1 s): {time.monotonic() - started:.2f} s")

    done = poll(
        lambda: (d := ok(b.get("/deployments/ha")))["phase"] == "stable" and d, 15, "cutover"
    )
    assert done["blue"]["release"]["id"] == ids["reworded"]
    history = ok(b.get("/deployments/ha/history"))
    assert moves(history, ids["reworded"]) == [50, 100], "each step exactly once"
    assert len(history) == done["version"]


def test_a_lost_slot_is_restarted_once_by_the_leader(
    replicas: tuple[Replicas, dict[str, int]],
) -> None:
    pair, ids = replicas
    b = pair.clients["b"]
    ok(b.post("/deployments", json={"name": "lost", "release_id": ids["v1"]}), 201)
    pair.backend.kill("lost", ids["v1"])
    poll(lambda: pair.backend.slots().get(("lost", ids["v1"])), 10, "the restart")
    time.sleep(0.5)  # room for a second, wrong restart by the follower
    actions = [e["action"] for e in ok(b.get("/deployments/lost/history"))]
    assert actions.count("slot-lost") == 1 and actions.count("slot-restarted") == 1, actions


HOLDER = """
import sys, time
from bgserve.store.advisory_lock import PostgresLease
lease = PostgresLease(sys.argv[1], "bgserve-leader", "doomed")
assert lease.try_acquire_or_renew()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_frees_the_lock_at_once(pg: PostgresServer) -> None:
    url = pg.new_database()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    successor = PostgresLease(url, "bgserve-leader", "successor")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not successor.try_acquire_or_renew()
        assert successor.holder() == "doomed"
        holder.kill()
        holder.wait(10)
        started = time.monotonic()
        poll(successor.try_acquire_or_renew, 5, "the lock after SIGKILL")
        print(f"\nlock free after SIGKILL in {time.monotonic() - started:.3f} s")
        assert successor.holder() == "successor"
    finally:
        holder.kill()
        successor.release()


OPERATORS = 20


def weights(body: dict[str, Any]) -> dict[str, int]:
    slots = [body["blue"], body["green"], body["standby"]]
    return {str(s["release"]["id"]): s["weight"] for s in slots if s is not None}


def test_twenty_operators_split_across_both_replicas_lose_no_update(
    replicas: tuple[Replicas, dict[str, int]],
) -> None:
    pair, ids = replicas
    a, b = pair.clients["a"], pair.clients["b"]
    ok(a.post("/deployments", json={"name": "race", "release_id": ids["v1"]}), 201)
    ok(b.post("/deployments/race/green", json={"release_id": ids["reworded"]}))
    start = threading.Barrier(OPERATORS)
    calls = (
        [("promote", {"weight": w, "force": True}) for w in (10, 20, 30, 40, 50, 60, 70, 80)]
        + [("revert", {})] * 6
        + [("green", {"release_id": r}) for r in (ids["v2"], ids["reworded"], ids["v2"])]
        + [("promote", {"weight": 100, "force": True})] * 3
    )

    def call(numbered: tuple[int, tuple[str, dict[str, Any]]]) -> Answer:
        index, (verb, body) = numbered
        replica = a if index % 2 else b
        start.wait(30)
        response: Answer = replica.post(f"/deployments/race/{verb}", json=body)
        return response

    with ThreadPoolExecutor(OPERATORS) as pool:
        answers = list(pool.map(call, enumerate(calls)))

    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code >= 500]
    assert statuses.count(200) >= 2, "the lock serializes operations rather than refusing them"
    history = ok(b.get("/deployments/race/history"))
    final = ok(a.get("/deployments/race"))
    print(f"\n{OPERATORS} operators on 2 replicas: {statuses.count(200)} succeeded")
    assert len(history) == final["version"]
    for answer in (x.json() for x in answers if x.status_code == 200):
        assert history[answer["version"] - 1]["weights_after"] == weights(answer)
    assert history[-1]["weights_after"] == weights(final)
    serving = {k: v for k, v in pair.backend.weights("race").items() if v}
    assert serving == {int(k): v for k, v in weights(final).items() if v}, "traffic as stored"


def test_a_deployment_held_by_one_replica_waits_then_refuses_another(
    pg: PostgresServer,
) -> None:
    from sqlalchemy import create_engine

    from bgserve.errors import Conflict
    from bgserve.store.advisory_lock import deployment_lock

    url = pg.new_database()
    first, second = create_engine(url), create_engine(url)
    try:
        with deployment_lock(first, "chat", 1.0):
            with (
                pytest.raises(Conflict, match="another replica"),
                deployment_lock(second, "chat", 0.2),
            ):
                pass
            with deployment_lock(second, "other", 0.2):
                pass  # other deployments are not held
        with deployment_lock(second, "chat", 0.2):
            pass  # freed when the first block ended
    finally:
        first.dispose()
        second.dispose()
