"""The chat completions' streaming figures on ``/metrics``: time to first token and per
output token histograms and the output tokens counter per slot, measured by the real
data-plane process and read through the application's ``TrafficStats`` port."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bgserve.api.app import create_app
from bgserve.app.ports import SlotCounters
from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.backends.local.slot_launcher import SlotLauncher
from bgserve.backends.memory import MemoryBackend
from bgserve.compose import Components, build_components
from bgserve.dataplane.wire import RouteTarget
from bgserve.gcpause import PauseStats
from bgserve.settings import Settings
from tests.support.flow import make_settings
from tests.support.openai_stub import openai_stub

pytestmark = pytest.mark.integration

FIRST_TOKEN_S = 0.05
CHUNK_S = 0.02
TOKENS = 4
STREAMED, PLAIN = 4, 2


class PlaneCounters(MemoryBackend):
    """The memory backend with a real data plane's counters (the ``TrafficStats`` port)."""

    def __init__(self, plane: DataPlaneClient) -> None:
        super().__init__()
        self.plane = plane

    def traffic_reading(self) -> tuple[Sequence[SlotCounters], PauseStats | None]:
        return self.plane.stats()["slots"], None


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[DataPlaneClient]:
    launcher = SlotLauncher(
        env={}, python=sys.executable, log_dir=tmp_path, ready_timeout=30, stop_grace=5
    )
    plane = launcher.start_plane("127.0.0.1", 0, {"first_byte_timeout": 5.0}, lambda *_: None)
    try:
        yield plane
    finally:
        plane.stop()
        launcher.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(tmp_path: Path, plane: DataPlaneClient) -> Samples:
    """``/metrics`` of an app whose backend reads ``plane``: samples by (name, labels)."""
    settings: Settings = make_settings(tmp_path / "home", f"sqlite:///{tmp_path}/mlflow.db")

    def build(s: Settings) -> Components:
        return build_components(s, backend=PlaneCounters(plane))

    with TestClient(create_app(settings, build=build), base_url="http://127.0.0.1") as client:
        text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_streaming_figures_are_exported_per_slot(tmp_path: Path, plane: DataPlaneClient) -> None:
    with (
        openai_stub("blue", tokens=TOKENS, first_token_s=FIRST_TOKEN_S, chunk_s=CHUNK_S) as blue,
        openai_stub("green") as green,
    ):
        plane.set_routes(
            "chat",
            [
                RouteTarget("blue", 1, "127.0.0.1", blue.port, 100),
                RouteTarget("green", 2, "127.0.0.1", green.port, 0),
            ],
        )
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{plane.port}/openai/v1", api_key="-", max_retries=0
        )
        messages: Any = [{"role": "user", "content": "hi"}]
        for i in range(STREAMED):
            usage: Any = {"include_usage": True} if i % 2 else None
            list(
                client.chat.completions.create(
                    model="chat", messages=messages, stream=True, stream_options=usage
                )
            )
        for _ in range(PLAIN):
            client.chat.completions.create(model="chat", messages=messages)
        samples = scrape(tmp_path, plane)

    blue_key = (("deployment", "chat"), ("release", "1"), ("slot", "blue"))
    green_key = (("deployment", "chat"), ("release", "2"), ("slot", "green"))

    def buckets(name: str, key: tuple[tuple[str, str], ...]) -> dict[float, float]:
        """The cumulative ``le`` buckets of ``key``'s series of histogram ``name``."""
        found: dict[float, float] = {}
        for (sample, labels), value in samples.items():
            rest = tuple(pair for pair in labels if pair[0] != "le")
            if sample == f"{name}_bucket" and rest == key:
                found[float(dict(labels)["le"])] = value
        return found

    ttft = buckets("bgserve_time_to_first_token_seconds", blue_key)
    assert ttft[float("inf")] == STREAMED  # plain answers have no first token
    assert all(count == 0 for le, count in ttft.items() if le < FIRST_TOKEN_S), ttft
    assert buckets("bgserve_time_to_first_token_seconds", green_key) == {}  # none streamed

    tpot = buckets("bgserve_time_per_output_token_seconds", blue_key)
    assert tpot[float("inf")] == STREAMED
    assert all(count == 0 for le, count in tpot.items() if le < CHUNK_S / 10), tpot

    tokens = "bgserve_output_tokens_total"
    assert samples[(tokens, blue_key)] == (STREAMED + PLAIN) * TOKENS
    assert samples[(tokens, green_key)] == 0
    assert samples[("bgserve_requests_total", blue_key)] == STREAMED + PLAIN
