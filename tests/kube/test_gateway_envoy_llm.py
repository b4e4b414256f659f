"""LLM releases on a real gateway: two SmolLM2 slots (llama.cpp, two chat prompt
versions) behind Envoy Gateway, the OpenAI rule bgserve writes beside the OIP one
(``/<deployment>/openai/v1/...`` rewritten to the slot's ``/openai/v1/...``, no request
timeout), and the official ``openai`` SDK streaming through Envoy: each stream arrives
piece by piece as the slot generates it, both releases answer by the weights, and no
stream fails or is cut through a shift and a revert."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from bgserve.compose import registry_at
from bgserve.compose.backends import llm_lookup, slot_mlflow
from bgserve.demo.llm_models import push_chat_prompts, register_smollm2
from bgserve.kube.kserve.backend import KServeBackend
from bgserve.kube.kserve.objects import route_name
from bgserve.kube.route_status import route_taken
from tests.support.envoy_gateway import Gateway
from tests.support.kserve_part import kserve_on_gateway
from tests.support.kube import make_components

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "gwchat"
MAX_TOKENS = 24
QUESTION = "Name the twelve months of the year, in order."  # longer than MAX_TOKENS
AT_HALF = 24  # streams counted at 50%


@dataclass
class Stream:
    """One streamed answer through Envoy, as the SDK gave it."""

    release: str
    arrivals: list[float]  # when each content chunk was read, from the request's start
    finish_reason: str | None
    total_s: float


def stream_once(client: openai.OpenAI) -> Stream:
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=NAME,
        messages=[],
        stream=True,
        max_tokens=MAX_TOKENS,
        extra_body={"variables": {"question": QUESTION}},
    )
    arrivals: list[float] = []
    finish = None
    for chunk in raw.parse():
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(time.perf_counter() - started)
            finish = choice.finish_reason or finish
    release = raw.headers.get("x-bgserve-release", "")
    return Stream(release, arrivals, finish, time.perf_counter() - started)


class Streamers:
    """Clients streaming back to back until stopped; every exception is kept."""

    def __init__(self, client: openai.OpenAI, clients: int) -> None:
        self._client = client
        self._stop = threading.Event()
        self.streams: list[tuple[float, Stream]] = []  # (start, stream)
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Streamers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                stream = stream_once(self._client)
            except Exception as exc:  # every failure is the test's to report
                self.failures.append(repr(exc)[:300])
                continue
            if stream.finish_reason not in ("stop", "length"):
                self.failures.append(f"stream cut: {stream}")
            self.streams.append((began, stream))


def test_streams_pass_through_envoy_unbuffered_by_the_weights_and_none_is_lost(
    tmp_path: Path, mlflow_store: str, envoy_gateway: Gateway
) -> None:
    with kserve_on_gateway(envoy_gateway) as (ns, kserve, settings):
        backend = KServeBackend(
            settings.kube,
            ready_timeout=settings.slot_ready_timeout_seconds,
            mlflow=slot_mlflow(settings),
            llms=llm_lookup(registry_at(mlflow_store)),
            api=ns.api_for(settings),
        )
        parts = make_components(tmp_path, mlflow_store, backend)
        service = parts.service
        model = register_smollm2(mlflow_store)
        ids = [
            service.register_release(
                f"gw-llm-{v}", model.model_uri, f"prompts:/chat/{v}", "test"
            ).id
            for v in push_chat_prompts(mlflow_store)
        ]
        blue, green = (str(i) for i in ids)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{envoy_gateway.port}/{NAME}/openai/v1",
            api_key="unused",
            max_retries=0,
            timeout=120.0,
        )
        try:
            with kserve.controller:
                service.create_deployment(NAME, ids[0], "test")
                route = ns.get("httproutes", route_name(NAME))
                assert route is not None and route_taken(route) is True, route
                paths = [r["matches"][0]["path"]["value"] for r in route["spec"]["rules"]]
                assert f"/{NAME}/openai/v1" in paths, paths
                first = stream_once(client)
                service.stage_green(NAME, ids[1], "test")
                service.shift(NAME, 50, "test", force=True)
                at_half = [stream_once(client) for _ in range(AT_HALF)]
                with Streamers(client, clients=2) as streamers:
                    while len(streamers.streams) < 4:
                        time.sleep(0.1)
                    began = time.monotonic()
                    service.revert(NAME, "test")
                    returned = time.monotonic()
                    while not [s for s, _ in list(streamers.streams) if s > returned + 1.0][3:]:
                        time.sleep(0.1)
        finally:
            backend.close()
    streams = [first, *at_half]
    print(
        f"\nthrough Envoy: {len(streams)} streams at 100/50%, "
        f"{len(streamers.streams)} around the revert (took {returned - began:.2f} s); "
        f"releases at 50%: {Counter(s.release for s in at_half)}; first chunk / last chunk "
        f"/ end (s): {[(round(s.arrivals[0], 2), round(s.arrivals[-1], 2)) for s in streams[:5]]}"
    )
    assert streamers.failures == [], streamers.failures[:3]
    assert kserve.controller.errors == []
    for stream in streams:
        assert stream.finish_reason in ("stop", "length"), stream
        # Piece by piece, as generated: not held back by the gateway until the end.
        assert len(stream.arrivals) >= 3, stream
        assert stream.arrivals[-1] - stream.arrivals[0] >= 0.3 * stream.total_s, stream
    assert first.release == blue
    shares = Counter(s.release for s in at_half)
    assert set(shares) == {blue, green} and min(shares.values()) >= AT_HALF // 5, shares
    # After the revert's return (and a second for streams already picked), blue alone.
    late = [s.release for start, s in streamers.streams if start > returned + 1.0]
    assert late and set(late) == {blue}, Counter(late)
