"""Shadow traffic in the data plane: blue answers the client, green gets a copy after, paired."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bgserve.backends.base import ShadowBatch, ShadowPair, ShadowTraffic
from bgserve.backends.local.backend import LocalBackend
from bgserve.backends.memory import MemoryBackend
from bgserve.dataplane.http1 import Request
from bgserve.dataplane.router import Router
from bgserve.dataplane.shadow_state import Exchange, Job, Shadow, ShadowBudget
from bgserve.dataplane.wire import RouteTarget
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, InvalidInput
from tests.support.models import SlotProcess, infer_body, local_release, wait_until
from tests.support.stub_slot import StubSlot, stub_slot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]


@pytest.fixture(scope="module")
def blue(
    bundles: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlotProcess]:
    with SlotProcess(bundles["v1"], "demo", 1, tmp_path_factory.mktemp("b") / "blue.log") as slot:
        yield slot


@pytest.fixture
def green(bundles: dict[str, str], tmp_path: Path) -> Iterator[SlotProcess]:
    with SlotProcess(bundles["v2"], "demo", 2, tmp_path / "green.log") as slot:
        yield slot


def routes(blue: SlotProcess, green_port: int, green: int) -> list[RouteTarget]:
    return [
        RouteTarget("blue", 1, "127.0.0.1", blue.port, 100 - green),
        RouteTarget("green", 2, "127.0.0.1", green_port, green),
    ]


def collect(rt: Router | LocalBackend, total: int, timeout: float = 60) -> ShadowBatch:
    """Drain until ``total`` copies are accounted for (paired or dropped)."""
    pairs: list[dict[str, object]] = []
    counts = collections.Counter[str]()

    def settled() -> bool:
        if isinstance(rt, Router):
            batch = rt.shadow_pairs("demo")
            pairs.extend(batch["pairs"])
            counts.update(dropped=batch["dropped"], green_errors=batch["green_errors"])
        else:
            got = rt.shadow_pairs("demo")
            pairs.extend(vars(p) for p in got.pairs)
            counts.update(dropped=got.dropped, green_errors=got.green_errors)
        return len(pairs) + counts["dropped"] >= total

    wait_until(settled, timeout, f"{total} mirrored copies")
    return ShadowBatch(
        [ShadowPair(**p) for p in pairs],  # type: ignore[arg-type]
        counts["dropped"],
        counts["green_errors"],
    )


def post(client: httpx.Client, url: str, text: str) -> httpx.Response:
    response = client.post(url, json=infer_body(text))
    assert response.status_code == 200, response.text
    assert response.headers["x-bgserve-slot"] == "blue"
    assert response.json()["outputs"][0]["data"] == [f"v1:{text.upper()}"]
    return response


def test_every_blue_answer_is_mirrored_and_paired_at_100_percent(
    blue: SlotProcess, green: SlotProcess, demo_router: tuple[Router, str]
) -> None:
    rt, url = demo_router
    rt.set_routes("demo", routes(blue, green.port, 0))
    rt.set_shadow("demo", 100)
    with httpx.Client() as client:
        for n in range(300):
            post(client, url, f"q{n}")
    batch = collect(rt, 300)

    assert batch.dropped == 0
    assert batch.green_errors == 0
    assert len(batch.pairs) == 300
    texts = set()
    for pair in batch.pairs:
        text = json.loads(pair.request_body)["inputs"][0]["data"][0]
        texts.add(text)
        assert json.loads(pair.blue_body)["outputs"][0]["data"] == [f"v1:{text.upper()}"]
        assert pair.green_body is not None
        assert json.loads(pair.green_body)["outputs"][0]["data"] == [f"v2:{text.upper()}"]
        assert pair.green_error is None
        assert pair.blue_ms > 0 and pair.green_ms is not None and pair.green_ms > 0
        assert not pair.truncated
    assert texts == {f"q{n}" for n in range(300)}
    assert len({p.request_id for p in batch.pairs}) == 300
    # The copies are not traffic: green's counters saw none of them.
    by_role = {s["role"]: s["requests"] for s in rt.stats()["slots"]}
    assert by_role == {"blue": 300, "green": 0}
    assert rt.shadow_pairs("demo")["pairs"] == []  # drained


def test_a_share_mirrors_exactly_that_share_of_blue_answers_only(
    blue: SlotProcess, green: SlotProcess, demo_router: tuple[Router, str]
) -> None:
    rt, url = demo_router
    rt.set_routes("demo", routes(blue, green.port, 50))
    rt.set_shadow("demo", 50)
    roles: collections.Counter[str] = collections.Counter()
    with httpx.Client() as client:
        for n in range(200):
            response = client.post(url, json=infer_body(f"s{n}"))
            roles[response.headers["x-bgserve-slot"]] += 1
    batch = collect(rt, 50)

    assert roles == {"blue": 100, "green": 100}
    assert len(batch.pairs) == 50  # half of the 100 blue answered; green's are never copied
    assert all(p.blue_body.count("v1:") == 1 for p in batch.pairs)

    rt.set_shadow("demo", 0)
    with httpx.Client() as client:
        for n in range(20):
            client.post(url, json=infer_body(f"off{n}"))
    time.sleep(0.2)
    assert rt.shadow_pairs("demo")["pairs"] == []


def test_killing_green_while_shadowing_fails_no_client_request(
    blue: SlotProcess, green: SlotProcess, demo_router: tuple[Router, str]
) -> None:
    rt, url = demo_router
    rt.set_routes("demo", routes(blue, green.port, 0))
    rt.set_shadow("demo", 100)
    with httpx.Client() as client:
        for n in range(100):
            if n == 50:
                collect(rt, 50)  # green has answered the first half
                green.proc.send_signal(signal.SIGKILL)
                green.proc.wait()
            post(client, url, f"k{n}")
    batch = collect(rt, 50)

    assert (batch.green_errors, batch.dropped, len(batch.pairs)) == (50, 0, 50)
    failed = [p for p in batch.pairs if p.green_error is not None]
    assert len(failed) == 50
    assert all(p.green_body is None and p.green_ms is None for p in failed)
    assert all("v1:" in p.blue_body for p in failed)


@pytest.fixture
def slow_green() -> Iterator[StubSlot]:
    with stub_slot("x", delay=0.5) as stub:
        yield stub


def test_a_full_queue_drops_copies_and_counts_them(
    blue: SlotProcess, slow_green: StubSlot, demo_router: tuple[Router, str]
) -> None:
    rt, url = demo_router
    rt.set_routes("demo", routes(blue, slow_green.port, 0))
    rt.set_shadow("demo", 100, max_queue=2)
    with httpx.Client() as client:
        for n in range(20):
            post(client, url, f"d{n}")
    batch = collect(rt, 20)

    # One copy in flight at green and two queued: the rest arrived while green was busy.
    assert len(batch.pairs) + batch.dropped == 20
    assert batch.dropped >= 10
    assert 3 <= len(batch.pairs) <= 10
    assert all(p.green_body is not None and '"x"' in p.green_body for p in batch.pairs)
    assert len(slow_green.headers) == len(batch.pairs)
    assert all(h.get("x-bgserve-shadow") == "1" for h in slow_green.headers)


def job_and_exchange(
    shadow: Shadow, green: bytes, error: str | None = None
) -> tuple[Job, Exchange]:
    loop = asyncio.new_event_loop()
    request = Request(b"POST", b"/", b"", b"{}", True, False)
    job = Job(request, [b""], b"", loop.create_future(), 1, 2, shadow.generation, 10)
    loop.close()
    return job, Exchange(b"{}", [b""], green, error, 1.0, 1.0, False, 1, 2)


def test_the_pair_buffer_keeps_the_newest_and_counts_the_oldest_as_dropped() -> None:
    budget = ShadowBudget(1 << 20)
    shadow = Shadow("demo", max_pairs=3, budget=budget)
    shadow.max_queue = 1
    for n in range(5):
        job, exchange = job_and_exchange(shadow, str(n).encode(), "boom" if n == 4 else None)
        assert shadow.enqueue(job)
        assert shadow.next_job() is job
        shadow.add(job, exchange)

    assert budget.held == 3 * 3  # three pairs of 3 bytes each; the queued copy released
    exchanges, page = shadow.take(limit=2)
    assert [p.green for p in exchanges] == [b"2", b"3"]
    assert (page["dropped"], page["green_errors"], page["more"]) == (2, 1, True)
    exchanges, page = shadow.take(limit=10)
    assert [p.green for p in exchanges] == [b"4"]
    assert (page["dropped"], page["green_errors"], page["more"]) == (0, 0, False)
    assert budget.held == 0


def test_the_byte_budget_drops_copies_beyond_it_and_a_reset_frees_everything() -> None:
    budget = ShadowBudget(25)
    shadow = Shadow("demo", max_pairs=100, budget=budget)
    shadow.max_queue = 100
    jobs = [job_and_exchange(shadow, b"x")[0] for _ in range(3)]
    assert [shadow.enqueue(job) for job in jobs] == [True, True, False]  # 10 + 10, not 30
    _, page = shadow.take(0)
    assert (page["dropped"], page["over_bytes"]) == (1, 1)
    job = shadow.next_job()
    assert job is jobs[0]
    shadow.add(job, job_and_exchange(shadow, b"x" * 20)[1])  # 23 bytes beside 10 do not fit
    _, page = shadow.take(0)
    assert (page["dropped"], page["over_bytes"]) == (1, 1)

    stale, exchange = job_and_exchange(shadow, b"y")
    assert shadow.enqueue(stale)
    assert shadow.next_job() is jobs[1]
    shadow.reset((1, 3))  # the copy queued is freed; the one in flight is when it ends
    assert (budget.held, len(shadow.queue)) == (10, 0)
    shadow.add(jobs[1], exchange)  # taken for the previous run: discarded, not kept
    assert shadow.take(10)[0] == []
    assert budget.held == 0
    assert budget.peak == 20


def test_bad_settings_are_refused(blue: SlotProcess, demo_router: tuple[Router, str]) -> None:
    rt, _ = demo_router
    rt.set_routes("demo", [RouteTarget("blue", 1, "127.0.0.1", blue.port, 100)])
    with pytest.raises(ValueError, match="no green route"):
        rt.set_shadow("demo", 10)
    rt.set_shadow("demo", 0)  # stopping is always fine
    assert rt.shadow_pairs("unknown") == {
        "pairs": [],
        "dropped": 0,
        "green_errors": 0,
        "more": False,
    }


def test_the_local_backend_mirrors_through_its_data_plane_process(
    bundles: dict[str, str], tmp_path: Path
) -> None:
    backend = LocalBackend(data_port=0, log_dir=tmp_path, ready_timeout=90)
    try:
        assert isinstance(backend, ShadowTraffic)
        backend.ensure_slot("demo", local_release(1, bundles["v1"]))
        backend.set_routes("demo", [Route("blue", 1, 100)])
        with pytest.raises(BackendError, match="no green release"):
            backend.set_shadow("demo", 100)
        with pytest.raises(InvalidInput) as bad:
            backend.set_shadow("demo", 101)
        assert bad.value.field == "percent"
        backend.ensure_slot("demo", local_release(2, bundles["v2"]))
        backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
        backend.set_shadow("demo", 100, max_queue=64)
        url = backend.data_plane_url("demo")
        with httpx.Client() as client:
            for n in range(20):
                post(client, url, f"p{n}")
        # A restart of the data-plane process keeps mirroring on.
        pid = backend.router.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: backend.router.pid != pid, 30, "the data plane to restart")
        with httpx.Client() as client:
            for n in range(20, 30):
                post(client, url, f"p{n}")
        batch = collect(backend, 10)
    finally:
        backend.close()

    assert isinstance(batch, ShadowBatch)
    assert batch.green_errors == 0
    assert {p.green_body.count("v2:") for p in batch.pairs if p.green_body} == {1}
    assert any('"p29"' in p.request_body for p in batch.pairs)


def test_the_memory_backend_hands_back_pushed_pairs() -> None:
    backend = MemoryBackend()
    assert isinstance(backend, ShadowTraffic)
    backend.ensure_slot("demo", local_release(1, "x"))
    backend.set_routes("demo", [Route("blue", 1, 100)])
    with pytest.raises(BackendError):
        backend.set_shadow("demo", 50)
    backend.ensure_slot("demo", local_release(2, "x"))
    backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
    backend.set_shadow("demo", 50)
    pair = ShadowPair("r1", "{}", "a", None, "timeout", 1.0, None)
    backend.push_pair("demo", pair)
    backend.push_shadow_counts("demo", dropped=3)

    assert backend.shadow_percent("demo") == 50
    assert backend.shadow_pairs("demo") == ShadowBatch([pair], 3, 1)
    assert backend.shadow_pairs("demo") == ShadowBatch([], 0, 0)
    backend.set_shadow("demo", 0)
    assert backend.shadow_percent("demo") == 0


@pytest.mark.slow
def test_the_shadow_benchmark_runs_and_reports_its_goals() -> None:
    bench = Path(__file__).parents[2] / "bench" / "shadow.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--requests", "100", "--block", "50"],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "shadow 100% added p50 (ms)" in result.stdout
    assert "sticky lookup added p50 (ms)" in result.stdout
    saved = json.loads((bench.parent / "results" / "shadow.json").read_text())
    assert saved["failures"] == {"off": 0, "shadow": 0, "shadow-stub": 0, "sticky": 0}
    assert saved["pairs"] + saved["dropped"] >= 200  # every answer of both shadowed paths
    assert saved["green_nice"] == 19  # green answered its copies in the background
