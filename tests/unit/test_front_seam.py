"""The dashboard and ``/metrics`` read and act through the application layer only.

Both run here on the memory backend, which has no data-plane process (no ``router``, no
``traffic_stats``): a page or a scrape that reached around the service into the local
backend's internals would fail here. A backend that offers the ``TrafficStats`` port gets
its counters onto the page and into the scrape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import bgserve
from bgserve.api.app import create_app
from bgserve.app.ports import SlotCounters, TrafficStats
from bgserve.backends.memory import MemoryBackend
from bgserve.compose import Components, build_components
from bgserve.domain.latency import LATENCY_BUCKETS_MS
from bgserve.domain.release import Release, ResolvedRelease
from bgserve.gcpause import PauseStats
from bgserve.settings import Settings
from tests.support.flow import make_settings


class CountingPlane(MemoryBackend):
    """The memory backend with a data plane's counters (and nothing else of one)."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def traffic_reading(self) -> tuple[Sequence[SlotCounters], PauseStats | None]:
        self.readings += 1
        buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        buckets[0] = 7
        rows = [
            {
                "deployment": "chat",
                "role": route.role,
                "release_id": route.release_id,
                "requests": 7 + route.release_id,
                "errors": route.release_id,
                "latency_buckets": buckets,
            }
            for route in self.routes("chat")
        ]
        return rows, None


class NoAliases:
    """Registry aliases that move nowhere (no MLflow database to create per test)."""

    def move_aliases(self, deployment: str, live: Release, previous: Release | None) -> None:
        return None


def _app(tmp_path: Path, backend: MemoryBackend) -> Iterator[TestClient]:
    settings: Settings = make_settings(tmp_path / "home", f"sqlite:///{tmp_path}/mlflow.db")

    def build(s: Settings) -> Components:
        parts = build_components(s, backend=backend)
        parts.executor.aliases = NoAliases()  # MLflow is not what these tests are about
        for n in (1, 2):
            resolved = ResolvedRelease("m", n, "p", n, f"bundle-{n}", n)
            parts.store.add_release(
                f"r{n}", resolved, f"models:/m/{n}", f"prompts:/p/{n}", parts.service.clock()
            )
        return parts

    with TestClient(create_app(settings, build=build), base_url="http://127.0.0.1") as client:
        assert client.post("/deployments", json={"name": "chat", "release_id": 1}).is_success
        yield client


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def client(tmp_path: Path, memory: MemoryBackend) -> Iterator[TestClient]:
    yield from _app(tmp_path, memory)


def _csrf(client: TestClient) -> dict[str, str]:
    found = re.search(r"name='bgserve-csrf' content='([0-9a-f]{64})'", client.get("/ui").text)
    assert found, "no CSRF token in the page"
    return {"x-bgserve-csrf": found.group(1)}


def test_the_memory_backend_has_no_data_plane_to_reach_into(memory: MemoryBackend) -> None:
    assert not hasattr(memory, "router") and not hasattr(memory, "traffic_stats")
    assert not isinstance(memory, TrafficStats)


def test_pages_show_a_backend_without_counters(client: TestClient) -> None:
    assert "/ui/d/chat" in client.get("/ui").text
    for path in ("/ui/d/chat", "/ui/d/chat/live"):
        page = client.get(path)
        assert page.status_code == 200, page.text
        assert "has no counters to show" in page.text


def test_dashboard_actions_act_through_the_service(
    client: TestClient, memory: MemoryBackend
) -> None:
    headers = _csrf(client)
    staged = client.post("/ui/d/chat/stage", json={"release_id": 2}, headers=headers)
    assert staged.status_code == 200 and "staged: chat is staged" in staged.json()["message"]
    shifted = client.post("/ui/d/chat/promote", json={"weight": 30, "force": True}, headers=headers)
    assert shifted.status_code == 200 and "green at 30%" in shifted.json()["message"]
    assert memory.weights("chat") == {1: 70, 2: 30}
    both = client.post(
        "/ui/d/chat/promote", json={"weight": 40, "plan": {"steps": [50, 100]}}, headers=headers
    )
    assert both.status_code == 422 and both.json()["field"] == "plan"
    reverted = client.post("/ui/d/chat/revert", json={}, headers=headers)
    assert reverted.status_code == 200 and memory.weights("chat") == {1: 100, 2: 0}
    history = [e["action"] for e in client.get("/deployments/chat/history").json()]
    assert history[-3:] == ["stage", "shift", "revert"]


def test_metrics_without_counters_still_show_weights(client: TestClient) -> None:
    scrape = client.get("/metrics").text
    assert 'bgserve_slot_weight{deployment="chat",release="1",slot="blue"} 100.0' in scrape
    assert "bgserve_requests_total" not in scrape


def test_counters_come_through_the_traffic_stats_port(tmp_path: Path) -> None:
    plane = CountingPlane()
    for client in _app(tmp_path, plane):
        scrape = client.get("/metrics").text
        assert 'bgserve_requests_total{deployment="chat",release="1",slot="blue"} 8.0' in scrape
        assert 'bgserve_request_errors_total{deployment="chat",release="1",slot="blue"} 1.0' in (
            scrape
        )
        before = plane.readings
        live = client.get("/ui/d/chat/live").text
        assert plane.readings == before + 1
        assert "<td>8</td>" in live and "has no counters" not in live


def test_handlers_take_their_parts_through_dependencies() -> None:
    """Only the dependency functions (api/deps.py) and the lifespan that stores them
    (api/app.py) touch the app's components; every route and page asks ``Depends``."""
    package = Path(bgserve.__file__).parent
    allowed = {package / "api" / "deps.py", package / "api" / "app.py"}
    reaching = [
        str(path.relative_to(package))
        for folder in ("api", "ui")
        for path in sorted((package / folder).rglob("*.py"))
        if path not in allowed and "state.components" in path.read_text(encoding="utf-8")
    ]
    assert reaching == []
