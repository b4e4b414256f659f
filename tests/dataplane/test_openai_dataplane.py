"""The OpenAI-compatible data plane, through the real data-plane process: chat completions
routed like infer requests (weights, sticky keys, slot headers), streamed answers relayed
chunk by chunk as the slot sends them, OpenAI-shaped errors, per-deployment timeouts and
the streaming figures measured per slot."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.backends.local.slot_launcher import SlotLauncher
from bgserve.backends.local.traffic import side_window
from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import RouteTarget, SlotStats
from bgserve.domain.analysis import AnalysisSettings, Outcome
from bgserve.domain.latency import LATENCY_BUCKETS_MS
from bgserve.domain.streaming import run
from tests.support.models import wait_until
from tests.support.openai_stub import OpenAIStub, openai_stub

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneClient]:
    launcher = SlotLauncher(
        env={},
        python=sys.executable,
        log_dir=tmp_path_factory.mktemp("plane"),
        ready_timeout=30,
        stop_grace=5,
    )
    options: dict[str, object] = {
        "breaker": True,
        "connect_timeout": 1.0,
        "first_byte_timeout": 5.0,
        "outlier_failures": 3,
        "probe_interval": 0.1,
    }
    plane = launcher.start_plane("127.0.0.1", 0, options, lambda *_: None)
    try:
        yield plane
    finally:
        plane.stop()
        launcher.close()


@pytest.fixture
def pair() -> Iterator[tuple[OpenAIStub, OpenAIStub]]:
    with openai_stub("blue") as blue, openai_stub("green") as green:
        yield blue, green


def route(
    plane: DataPlaneClient, name: str, blue: OpenAIStub, green: OpenAIStub, weight: int
) -> None:
    plane.set_routes(
        name,
        [
            RouteTarget("blue", 1, "127.0.0.1", blue.port, 100 - weight),
            RouteTarget("green", 2, "127.0.0.1", green.port, weight),
        ],
    )


def base(plane: DataPlaneClient, prefix: str = "/openai/v1") -> str:
    return f"http://127.0.0.1:{plane.port}{prefix}"


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def content_of(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )


def slot_stats(plane: DataPlaneClient, name: str) -> dict[str, SlotStats]:
    return {s["role"]: s for s in plane.stats()["slots"] if s["deployment"] == name}


@pytest.mark.parametrize("prefix", ["/openai/v1", "/v1"])
def test_plain_and_streamed_answers_are_relayed_with_the_slot_headers(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub], prefix: str
) -> None:
    blue, green = pair
    route(plane, "chat", blue, green, 100)
    with httpx.Client(timeout=10) as http:
        url = base(plane, prefix) + "/chat/completions"
        plain = http.post(url, json={"model": "chat", "messages": MESSAGES})
        assert plain.status_code == 200, plain.text
        assert plain.headers["x-bgserve-slot"] == "green"
        assert plain.headers["x-bgserve-release"] == "2"
        assert plain.json()["choices"][0]["message"]["content"] == green.answer_text()
        body = {"model": "chat", "messages": MESSAGES, "stream": True}
        with http.stream("POST", url, json=body) as streamed:
            assert streamed.headers["content-type"] == "text/event-stream"
            assert streamed.headers["x-bgserve-slot"] == "green"
            events = list(sse_events(streamed.iter_lines()))
    assert content_of(events) == green.answer_text()
    assert green.paths == ["/openai/v1/chat/completions"] * 2
    assert green.bodies[1]["stream"] is True and green.bodies[1]["messages"] == MESSAGES
    assert blue.paths == []


def test_each_chunk_reaches_the_client_before_the_slot_sends_the_next(
    plane: DataPlaneClient,
) -> None:
    with openai_stub("blue", lockstep=True, tokens=5) as blue, openai_stub("green") as green:
        route(plane, "lockstep", blue, green, 0)
        body = {"model": "lockstep", "messages": MESSAGES, "stream": True}
        seen: list[str] = []
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", base(plane) + "/chat/completions", json=body) as response,
        ):
            for event in sse_events(response.iter_lines()):
                word = event["choices"][0]["delta"].get("content") if event["choices"] else None
                if not word:
                    continue
                seen.append(word)
                # The slot waits for release() before its next chunk: the client has this
                # one while the slot has sent exactly as many.
                assert blue.sent == len(seen), (blue.sent, seen)
                blue.release()
        assert seen == blue.words()
        assert blue.lockstep_timeouts == 0


def test_the_openai_sdk_gets_a_completion_a_stream_with_usage_and_the_models(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub]
) -> None:
    blue, green = pair
    route(plane, "sdk", blue, green, 0)
    client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
    completion = client.chat.completions.create(model="sdk", messages=MESSAGES)
    assert completion.choices[0].message.content == blue.answer_text()
    assert completion.usage is not None and completion.usage.completion_tokens == blue.tokens
    stream = client.chat.completions.create(
        model="sdk",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": {"question": "why"}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == blue.answer_text()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == blue.tokens
    assert blue.bodies[-1]["variables"] == {"question": "why"}
    assert "sdk" in {m.id for m in client.models.list()}


def test_weights_are_honoured_for_streamed_chat_completions(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub]
) -> None:
    blue, green = pair
    route(plane, "weights", blue, green, 30)
    client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
    roles: Counter[str] = Counter()
    for _ in range(300):
        raw = client.chat.completions.with_raw_response.create(
            model="weights",
            messages=MESSAGES,
            stream=True,
        )
        roles[raw.headers["x-bgserve-slot"]] += 1
        chunks = raw.parse()
        assert isinstance(chunks, openai.Stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    share = 100 * roles["green"] / 300
    assert 23 <= share <= 37, roles
    stats = slot_stats(plane, "weights")
    assert stats["green"]["requests"] == roles["green"]
    assert stats["blue"]["errors"] == stats["green"]["errors"] == 0


def test_the_user_field_is_a_sticky_key_unless_the_header_gives_one(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub]
) -> None:
    blue, green = pair
    route(plane, "sticky", blue, green, 50)
    url = base(plane) + "/chat/completions"
    with httpx.Client(timeout=10) as http:

        def slot(user: str, header: str | None = None) -> str:
            headers = {"x-bgserve-key": header} if header else {}
            body = {"model": "sticky", "messages": MESSAGES, "user": user}
            return http.post(url, json=body, headers=headers).headers["x-bgserve-slot"]

        users = [f"user-{i}" for i in range(40)]
        first = {user: slot(user) for user in users}
        assert all(slot(user) == first[user] for user in users for _ in range(3))
        assert set(first.values()) == {"blue", "green"}  # 40 keys at 50%: both sides
        a_blue = next(u for u in users if first[u] == "blue")
        a_green = next(u for u in users if first[u] == "green")
        assert all(slot(a_blue, header=a_green) == "green" for _ in range(3))


def test_errors_on_the_openai_paths_are_in_openais_shape(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub]
) -> None:
    blue, green = pair
    route(plane, "shape", blue, green, 0)
    url = base(plane) + "/chat/completions"

    def error(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        body = response.json()["error"]
        assert set(body) == {"message", "type", "param", "code"}
        assert isinstance(body["message"], str) and body["message"]
        return dict(body)

    with httpx.Client(timeout=10) as http:
        missing = error(http.post(url, json={"model": "nowhere", "messages": MESSAGES}), 404)
        assert missing["code"] == "model_not_found" and missing["param"] == "model"
        assert "nowhere" in missing["message"]
        bad = error(http.post(url, content=b"{not json"), 400)
        assert bad["type"] == "invalid_request_error"
        assert error(http.post(url, json={"messages": MESSAGES}), 400)["param"] == "model"
        assert error(http.post(url, json=["a list"]), 400)["param"] is None
        stream = {"model": "shape", "messages": MESSAGES, "stream": "yes"}
        assert error(http.post(url, json=stream), 400)["param"] == "stream"
        assert error(http.get(url), 405)["type"] == "invalid_request_error"
    plane.set_routes("shape", [RouteTarget("blue", 1, "127.0.0.1", blue.port, 0)])
    with httpx.Client(timeout=10) as http:
        none = error(http.post(url, json={"model": "shape", "messages": MESSAGES}), 503)
    assert none["type"] == "server_error"
    client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="nowhere"):
        client.chat.completions.create(model="nowhere", messages=MESSAGES)
    assert blue.paths == []


def test_the_idle_timeout_cuts_a_stalled_stream_and_counts_it_on_the_slot(
    plane: DataPlaneClient,
) -> None:
    with openai_stub("blue", stall_after=2, tokens=5) as blue, openai_stub("green") as green:
        route(plane, "stall", blue, green, 0)
        plane.set_timeouts("stall", 5.0, 0.5)
        body = {"model": "stall", "messages": MESSAGES, "stream": True}
        seen: list[str] = []
        started = time.monotonic()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.Client(timeout=10) as http,
            http.stream("POST", base(plane) + "/chat/completions", json=body) as response,
        ):
            assert response.status_code == 200
            seen.extend(line for line in response.iter_lines() if line.startswith("data"))
        took = time.monotonic() - started
    assert 0.5 <= took < 3.0, took
    assert content_of(list(sse_events(iter(seen)))) == "".join(blue.words()[:2])
    stats = slot_stats(plane, "stall")["blue"]
    assert stats["requests"] == 1 and stats["errors"] == 1


def test_the_first_byte_timeout_is_per_deployment(plane: DataPlaneClient) -> None:
    # The plane's default first-byte timeout is 5 s: a 1 s answer fits it, not 0.3 s.
    with openai_stub("blue", first_token_s=1.0) as blue, openai_stub("green") as green:
        route(plane, "slow", blue, green, 0)
        route(plane, "hasty", blue, green, 0)
        plane.set_timeouts("hasty", 0.3, None)
        url = base(plane) + "/chat/completions"
        with httpx.Client(timeout=10) as http:
            ok = http.post(url, json={"model": "slow", "messages": MESSAGES})
            assert ok.status_code == 200, ok.text
            cut = http.post(url, json={"model": "hasty", "messages": MESSAGES})
    assert cut.status_code == 504, cut.text
    assert cut.json()["error"]["type"] == "server_error"
    assert "0.3s" in cut.json()["error"]["message"]


def test_timeouts_are_kept_across_a_restart_of_the_data_plane(plane: DataPlaneClient) -> None:
    with openai_stub("blue", stall_after=1) as blue, openai_stub("green") as green:
        route(plane, "restart", blue, green, 0)
        plane.set_timeouts("restart", None, 0.4)
        pid = plane.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(plane.check, 20, "the data plane restarted")
        body = {"model": "restart", "messages": MESSAGES, "stream": True}
        started = time.monotonic()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.Client(timeout=10) as http,
            http.stream("POST", base(plane) + "/chat/completions", json=body) as response,
        ):
            list(response.iter_lines())
        assert time.monotonic() - started < 3.0


def test_time_to_first_token_tokens_and_time_per_token_are_measured_per_slot(
    plane: DataPlaneClient,
) -> None:
    fast = {"first_token_s": 0.02, "chunk_s": 0.005, "tokens": 6}
    slow = {"first_token_s": 0.25, "chunk_s": 0.02, "tokens": 12}
    with openai_stub("blue", **fast) as blue, openai_stub("green", **slow) as green:
        route(plane, "ttft", blue, green, 50)
        client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
        for n in range(24):
            options: dict[str, Any] = {"stream_options": {"include_usage": True}} if n % 2 else {}
            stream = client.chat.completions.create(
                model="ttft",
                messages=MESSAGES,
                stream=True,
                **options,
            )
            list(stream)
        client.chat.completions.create(model="ttft", messages=MESSAGES)
    stats = slot_stats(plane, "ttft")
    windows = {role: side_window(s) for role, s in stats.items()}
    for role, stub, expected in (("blue", blue, fast), ("green", green, slow)):
        side = windows[role]
        assert sum(side.ttft) == 12, role  # streamed answers only
        assert sum(side.tokens) == stats[role]["requests"]  # the plain answer's usage too
        assert side.output_tokens == stub.tokens * stats[role]["requests"]
        ttft = _quantile(side.ttft, 0.5)
        assert expected["first_token_s"] * 1000 <= ttft * 1.25 + 1, (role, ttft)
        tpot = _quantile(side.tpot, 0.5)
        assert expected["chunk_s"] * 1000 * 0.75 <= tpot, (role, tpot)
    assert _quantile(windows["green"].ttft, 0.95) > 5 * _quantile(windows["blue"].ttft, 0.95)
    settings = AnalysisSettings(min_requests=10, checks=("ttft_p95", "tpot", "output_tokens"))
    checks = {c.name: c for c in run(windows["blue"], windows["green"], settings)}
    assert all(c.outcome is Outcome.FAIL for c in checks.values()), checks
    reverse = {c.name: c.outcome for c in run(windows["green"], windows["blue"], settings)}
    assert set(reverse.values()) == {Outcome.PASS}, reverse


def test_the_time_a_slot_says_its_model_kept_a_stream_waiting_is_not_its_ttft(
    plane: DataPlaneClient,
) -> None:
    # Both first tokens come 0.3 s after the request; green's slot says 0.27 s of that
    # was the wait for its model (a queue behind other calls), blue's says nothing.
    timing = {"first_token_s": 0.3, "chunk_s": 0.0, "tokens": 3}
    with (
        openai_stub("blue", **timing) as blue,
        openai_stub("green", queue_ms=270.0, **timing) as green,
    ):
        route(plane, "queued", blue, green, 50)
        client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
        for _ in range(12):
            list(client.chat.completions.create(model="queued", messages=MESSAGES, stream=True))
    windows = {role: side_window(s) for role, s in slot_stats(plane, "queued").items()}
    assert _quantile(windows["blue"].ttft, 0.5) >= 250
    assert _quantile(windows["green"].ttft, 0.5) <= 80


def _quantile(buckets: tuple[int, ...], q: float) -> float:
    """The upper bound of the bucket holding the ``q`` quantile."""
    rank, seen = q * sum(buckets), 0
    for index, count in enumerate(buckets):
        seen += count
        if count and seen >= rank:
            return LATENCY_BUCKETS_MS[min(index, len(LATENCY_BUCKETS_MS) - 1)]
    raise AssertionError("empty histogram")


def test_shadow_pairs_streamed_answers_assembled(
    plane: DataPlaneClient, pair: tuple[OpenAIStub, OpenAIStub], tmp_path: Path
) -> None:
    blue, green = pair
    route(plane, "mirror", blue, green, 0)
    plane.set_shadow("mirror", 100, 16)
    try:
        client = openai.OpenAI(base_url=base(plane), api_key="unused", max_retries=0)
        for _ in range(3):
            list(client.chat.completions.create(model="mirror", messages=MESSAGES, stream=True))
        pairs: list[dict[str, Any]] = []

        def three() -> bool:
            pairs.extend(plane.shadow_pairs("mirror")["pairs"])
            return len(pairs) >= 3

        wait_until(three, 20, "three shadow pairs")
    finally:
        plane.set_shadow("mirror", 0, 16)
    for shadow in pairs:
        assert json.loads(shadow["request_body"])["stream"] is True
        blue_answer = json.loads(shadow["blue_body"])
        green_answer = json.loads(shadow["green_body"])
        assert blue_answer["object"] == "chat.completion"
        assert blue_answer["choices"][0]["message"]["content"] == blue.answer_text()
        assert green_answer["choices"][0]["message"]["content"] == green.answer_text()
        assert green_answer["choices"][0]["finish_reason"] == "stop"
        assert shadow["green_error"] is None
    assert green.headers[-1]["x-bgserve-shadow"] == "1"


def test_a_data_token_guards_the_openai_paths_in_openais_shape() -> None:
    router = Router(data_token="s3cret")
    port = router.start("127.0.0.1", 0)
    try:
        router.set_routes("chat", [RouteTarget("blue", 1, "127.0.0.1", 9, 100)])
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
        )
        with pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
        assert refused.value.code == "invalid_api_key"
        allowed = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret", max_retries=0
        )
        assert [m.id for m in allowed.models.list()] == ["chat"]
    finally:
        router.stop()
