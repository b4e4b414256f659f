"""Shadow traffic's memory and identity in the data-plane process: the bytes it holds stay
under its bound and go when mirroring stops, and a copy taken for one green never reaches
another nor counts in another's report."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from bgserve.backends.local.backend import LocalBackend
from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.dataplane.wire import RouteTarget
from tests.support.models import wait_until
from tests.support.stub_slot import StubSlot, stub_slot

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[DataPlaneClient, str]]:
    """A data-plane process holding at most 4 MiB of shadow traffic, and demo's URL."""
    backend = LocalBackend(data_port=0, log_dir=tmp_path, shadow_max_bytes=4 * MiB)
    try:
        yield backend.router, f"http://127.0.0.1:{backend.data_port}/v2/models/demo/infer"
    finally:
        backend.close()


def body(tag: str, size: int = 0) -> bytes:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [tag + "x" * size]}]
    return json.dumps({"inputs": inputs}).encode()


def send(client: httpx.Client, url: str, data: bytes) -> None:
    response = client.post(url, content=data, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["x-bgserve-slot"] == "blue"


def routes(blue: StubSlot, green: StubSlot, green_release: int) -> list[RouteTarget]:
    return [
        RouteTarget("blue", 1, "127.0.0.1", blue.port, 100),
        RouteTarget("green", green_release, "127.0.0.1", green.port, 0),
    ]


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_shadow_bytes_stay_under_the_bound_and_go_when_mirroring_stops(
    plane: tuple[DataPlaneClient, str],
) -> None:
    dp, url = plane
    pid = dp.pid
    assert pid is not None
    with stub_slot("b") as blue, stub_slot("g", delay=0.3) as green:
        dp.set_routes("demo", routes(blue, green, 2))
        with httpx.Client() as client:
            send(client, url, body("warm", MiB))  # the parser's buffers, before the baseline
        baseline = rss(pid)
        dp.set_shadow("demo", 100, 256)
        peak_rss = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not done.is_set():
                peak_rss = max(peak_rss, rss(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def client_run(n: int) -> None:
            with httpx.Client(timeout=30) as client:
                for i in range(10):
                    send(client, url, body(f"c{n}-{i}", MiB))

        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(client_run, range(8)))
            held = dp.stats()["shadow"]
            page = dp.shadow_pairs("demo", 1000)
            dp.set_shadow("demo", 0, 256)
            wait_until(lambda: dp.stats()["shadow"]["bytes"] == 0, 10, "shadow bytes freed")
            time.sleep(0.5)
            after = rss(pid)
        finally:
            done.set()
            sampler.join()

    print(f"\nshadow usage {held}, RSS baseline {baseline / MiB:.0f} MiB, peak "
          f"{peak_rss / MiB:.0f} MiB, after stop {after / MiB:.0f} MiB")  # fmt: skip
    assert held["max_bytes"] == 4 * MiB
    assert 0 < held["peak_bytes"] <= 4 * MiB  # the data plane's own count: strict
    assert page["over_bytes"] > 0 and page["dropped"] >= page["over_bytes"]
    assert all(len(p["request_body"]) <= 64 * 1024 for p in page["pairs"])
    assert all(p["truncated"] for p in page["pairs"])
    # RSS is noisy: 80 MiB of bodies went through, 8 at a time; the data plane never
    # held them for shadow traffic, and gave them back once it stopped.
    assert peak_rss - baseline < 4 * MiB + 48 * MiB
    assert after - baseline < 16 * MiB


def test_copies_queued_for_one_green_never_reach_another_nor_its_report(
    plane: tuple[DataPlaneClient, str],
) -> None:
    dp, url = plane
    with (
        stub_slot("b") as blue,
        stub_slot("g2", delay=0.5) as old_green,
        stub_slot("g3") as new_green,
    ):
        dp.set_routes("demo", routes(blue, old_green, 2))
        dp.set_shadow("demo", 100, 256)
        with httpx.Client() as client:
            for i in range(10):
                send(client, url, body(f"old-{i}"))
        # Another green staged while copies for the old one wait: none goes to it.
        dp.set_routes("demo", routes(blue, new_green, 3))
        time.sleep(1.0)
        assert new_green.bodies == []
        with httpx.Client() as client:
            send(client, url, body("between"))  # not mirrored: the pair is not the one asked
        # Stopped, then started for the new green: nothing old is left to count or send.
        dp.set_shadow("demo", 0, 256)
        dp.set_shadow("demo", 100, 256)
        page = dp.shadow_pairs("demo", 1000)
        assert page["pairs"] == []
        with httpx.Client() as client:
            for i in range(3):
                send(client, url, body(f"new-{i}"))
        pairs: list[dict[str, object]] = []

        def paired() -> bool:
            pairs.extend(dp.shadow_pairs("demo", 1000)["pairs"])
            return len(pairs) >= 3

        wait_until(paired, 10, "the three new copies paired")
        time.sleep(0.5)
        pairs.extend(dp.shadow_pairs("demo", 1000)["pairs"])

    assert len(new_green.bodies) == 3
    assert all(b"new-" in b for b in new_green.bodies)
    assert len(pairs) == 3
    assert {(p["blue_release"], p["green_release"]) for p in pairs} == {(1, 3)}
    assert all('"g3"' in str(p["green_body"]) for p in pairs)
    assert len(old_green.bodies) <= 2  # the one in flight when the routes changed, at most
