"""Sticky cohorts: a request key pins a caller to one release, monotonically in green's weight."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import httpx
import pytest

from bgserve.dataplane.route_table import sticky_bucket, sticky_slots
from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import RouteTarget
from tests.support.models import SlotProcess, build_bundle, infer_body

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]

KEYS = [f"user-{n}" for n in range(200)]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SlotProcess]]:
    root = tmp_path_factory.mktemp("sticky")
    started = {
        "blue": SlotProcess(build_bundle(root, "v1"), "demo", 1, root / "blue.log"),
        "green": SlotProcess(build_bundle(root, "v2"), "demo", 2, root / "green.log"),
    }
    try:
        for slot in started.values():
            slot.wait_ready()
        yield started
    finally:
        for slot in started.values():
            slot.stop()


def start_router(**options: object) -> tuple[Router, str]:
    router = Router(**options)  # type: ignore[arg-type]
    return router, f"http://127.0.0.1:{router.start('127.0.0.1', 0)}"


@pytest.fixture
def router() -> Iterator[tuple[Router, str]]:
    router, url = start_router()
    try:
        yield router, url
    finally:
        router.stop()


def routes(upstreams: dict[str, SlotProcess], green: int) -> list[RouteTarget]:
    blue, green_slot = upstreams["blue"], upstreams["green"]
    return [
        RouteTarget("blue", 1, "127.0.0.1", blue.port, 100 - green),
        RouteTarget("green", 2, "127.0.0.1", green_slot.port, green),
    ]


def assignments(
    url: str, keys: list[str], times: int, header: str = "x-bgserve-key"
) -> dict[str, set[str]]:
    """The releases that answered each key over ``times`` rounds."""
    seen: dict[str, set[str]] = collections.defaultdict(set)
    with httpx.Client() as client:
        for _ in range(times):
            for key in keys:
                response = client.post(
                    f"{url}/v2/models/demo/infer", json=infer_body("hi"), headers={header: key}
                )
                assert response.status_code == 200
                release = response.headers["x-bgserve-release"]
                assert response.json()["outputs"][0]["data"] == [f"v{release}:HI"]
                seen[key].add(release)
    return seen


def test_keys_stick_and_only_move_blue_to_green(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 30))
    at_30 = assignments(url, KEYS, 5)

    assert all(len(releases) == 1 for releases in at_30.values())
    green_30 = {key for key, releases in at_30.items() if releases == {"2"}}
    assert 23 <= len(green_30) / len(KEYS) * 100 <= 37

    rt.set_routes("demo", routes(upstreams, 60))
    at_60 = assignments(url, KEYS, 2)
    green_60 = {key for key, releases in at_60.items() if releases == {"2"}}
    assert all(len(releases) == 1 for releases in at_60.values())
    assert green_30 <= green_60  # no key went back from green to blue
    assert 53 <= len(green_60) / len(KEYS) * 100 <= 67

    rt.set_routes("demo", routes(upstreams, 0))
    assert set().union(*assignments(url, KEYS, 1).values()) == {"1"}


def test_requests_without_a_key_keep_the_weighted_round_robin(
    upstreams: dict[str, SlotProcess], router: tuple[Router, str]
) -> None:
    rt, url = router
    rt.set_routes("demo", routes(upstreams, 30))
    roles: collections.Counter[str] = collections.Counter()
    with httpx.Client() as client:
        for n in range(100):
            # Keyed requests in between do not disturb the unkeyed ones' exact shares.
            client.post(
                f"{url}/v2/models/demo/infer", json=infer_body("k"), headers={"x-bgserve-key": "a"}
            )
            response = client.post(f"{url}/v2/models/demo/infer", json=infer_body(str(n)))
            roles[response.headers["x-bgserve-slot"]] += 1

    assert roles == {"blue": 70, "green": 30}


def test_the_header_name_is_configurable_and_case_insensitive(
    upstreams: dict[str, SlotProcess],
) -> None:
    rt, url = start_router(sticky_header="X-Tenant")
    try:
        rt.set_routes("demo", routes(upstreams, 50))
        keys = KEYS[:40]
        by_custom = assignments(url, keys, 2, header="x-tenant")
        by_upper = assignments(url, keys, 1, header="X-TENANT")
        ignored = assignments(url, keys[:10], 1, header="x-bgserve-key")
    finally:
        rt.stop()

    expected = {k: {"2" if sticky_bucket(k.encode()) < 50 else "1"} for k in keys}
    assert by_custom == expected
    assert by_upper == expected
    # The default header means nothing here: those requests alternate by weight.
    assert set().union(*ignored.values()) == {"1", "2"}


def test_sticky_buckets_are_monotone_and_follow_health() -> None:
    def targets(green: int) -> tuple[RouteTarget, ...]:
        return (
            RouteTarget("blue", 1, "h", 1, 100 - green),
            RouteTarget("green", 2, "h", 2, green),
        )

    previous = sticky_slots(targets(0), [100, 0])
    assert previous == (0,) * 100
    for green in range(1, 101):
        slots = sticky_slots(targets(green), [100 - green, green])
        assert slots.count(1) == green
        assert all(now == 1 for before, now in zip(previous, slots, strict=True) if before == 1)
        previous = slots
    # Green down (no effective weight): every key on blue; blue down: every key on green.
    assert sticky_slots(targets(30), [70, 0]) == (0,) * 100
    assert sticky_slots(targets(30), [0, 30]) == (1,) * 100
    assert sticky_slots(targets(30), [0, 0]) == ()
    assert sticky_bucket(b"user-1") == sticky_bucket(b"user-1")
