"""Shadow traffic on chat completions, through the real data-plane process: streamed and
plain answers mirrored to green, assembled, and scored by the shadow collector into the
report ``GET /deployments/{name}/shadow`` shows."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from bgserve.app.shadow import ShadowCollector, ShadowSettings
from bgserve.app.shadow_bodies import MESSAGES_KEY
from bgserve.backends.base import ShadowBatch
from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.backends.local.slot_launcher import SlotLauncher
from bgserve.dataplane.wire import RouteTarget
from bgserve.domain.state import DeploymentState
from bgserve.errors import NotFound
from bgserve.evaluation.comparison import TextScorer
from bgserve.evaluation.verdict import Thresholds
from bgserve.store import StoredDeployment
from tests.support.models import wait_until
from tests.support.openai_stub import OpenAIStub, openai_stub

pytestmark = pytest.mark.integration

REQUESTS = 8  # half streamed (every other one with usage), half plain
SCORER = TextScorer()


class PlaneShadow:
    """The data-plane process as the collector's shadow source (what the local backend
    does with it, and nothing else)."""

    def __init__(self, plane: DataPlaneClient) -> None:
        self.plane = plane

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        self.plane.set_shadow(deployment, percent, max_queue)

    def shadow_pairs(self, deployment: str) -> ShadowBatch:
        return self.plane.drain_shadow(deployment)


class Deployments:
    """Deployments with blue release 1 and green release 2."""

    def __init__(self, *names: str) -> None:
        now = datetime.now(UTC)
        self.stored = {
            name: StoredDeployment(DeploymentState(name, 1, 2), None, now, now) for name in names
        }

    def get_deployment(self, name: str) -> StoredDeployment:
        if name not in self.stored:
            raise NotFound(f"no deployment {name}")
        return self.stored[name]

    def list_deployments(self) -> list[StoredDeployment]:
        return list(self.stored.values())


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneClient]:
    launcher = SlotLauncher(
        env={},
        python=sys.executable,
        log_dir=tmp_path_factory.mktemp("plane"),
        ready_timeout=30,
        stop_grace=5,
    )
    plane = launcher.start_plane("127.0.0.1", 0, {"first_byte_timeout": 5.0}, lambda *_: None)
    try:
        yield plane
    finally:
        plane.stop()
        launcher.close()


def chat(plane: DataPlaneClient, name: str) -> list[str]:
    """Send the traffic; the answers the client got."""
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{plane.port}/openai/v1", api_key="unused", max_retries=0
    )
    answers = []
    for i in range(REQUESTS):
        messages: Any = [{"role": "user", "content": f"question {i}"}]
        extra = {"variables": {"topic": f"topic {i}"}}
        if i % 2:
            completion = client.chat.completions.create(
                model=name, messages=messages, extra_body=extra
            )
            answers.append(completion.choices[0].message.content or "")
            continue
        usage: Any = {"include_usage": True} if i % 4 == 0 else None
        chunks = client.chat.completions.create(
            model=name, messages=messages, extra_body=extra, stream=True, stream_options=usage
        )
        answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    return answers


def shadow_report(
    plane: DataPlaneClient, name: str, blue: OpenAIStub, green: OpenAIStub
) -> dict[str, Any]:
    """Mirror all of ``name``'s chat traffic, send it and return the collected report as
    the API shows it."""
    plane.set_routes(
        name,
        [
            RouteTarget("blue", 1, "127.0.0.1", blue.port, 100),
            RouteTarget("green", 2, "127.0.0.1", green.port, 0),
        ],
    )
    settings = ShadowSettings(Thresholds(), SCORER, min_pairs=REQUESTS, keep=REQUESTS)
    collector = ShadowCollector(PlaneShadow(plane), Deployments(name), settings)
    collector.start_shadow(name, 100)
    try:
        assert chat(plane, name) == [blue.answer_text()] * REQUESTS

        def settled() -> bool:
            collector.collect_once()
            report = collector.report(name)
            return report.pairs + report.dropped >= REQUESTS

        wait_until(settled, 30, f"{REQUESTS} mirrored chat completions")
        # Read while this collector leads: once closed it follows, and without a state
        # store a follower has no report to read.
        return collector.report(name).model_dump(mode="json")
    finally:
        collector.close()


def test_streamed_and_plain_chat_pairs_are_scored_like_any_pair(plane: DataPlaneClient) -> None:
    with openai_stub("blue") as blue, openai_stub("green") as green:
        report = shadow_report(plane, "chat-changed", blue, green)
    assert (report["pairs"], report["dropped"], report["green_errors"]) == (REQUESTS, 0, 0)
    assert report["differing"] == REQUESTS and report["exact_matches"] == 0
    expected = SCORER.score(blue.answer_text(), green.answer_text())
    assert report["similarity"]["mean"] == pytest.approx(expected, abs=0.01)
    assert report["similarity"]["mean"] < 1.0
    assert len(green.bodies) == REQUESTS  # every request, streamed or not, was mirrored
    assert {b.get("stream", False) for b in green.bodies} == {True, False}
    for pair in report["worst"]:
        assert (pair["blue"], pair["green"]) == (blue.answer_text(), green.answer_text())
        n = pair["inputs"]["topic"].removeprefix("topic ")
        assert pair["inputs"] == {"topic": f"topic {n}", MESSAGES_KEY: f"user: question {n}"}
        assert "[-blue-]{+green+}-0" in pair["diff"]
    assert {p["inputs"]["topic"] for p in report["recent"]} == {
        f"topic {i}" for i in range(REQUESTS)
    }


def test_a_green_that_answers_the_same_passes_on_streamed_and_plain_pairs(
    plane: DataPlaneClient,
) -> None:
    with openai_stub("blue") as blue, openai_stub("blue") as same:
        report = shadow_report(plane, "chat-same", blue, same)
    assert (report["pairs"], report["differing"], report["exact_matches"]) == (
        REQUESTS,
        0,
        REQUESTS,
    )
    assert report["similarity"]["mean"] == 1.0
    assert report["conclusive"] and report["verdict"]["passed"]
