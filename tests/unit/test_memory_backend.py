"""The shipped in-memory backend's test controls: injected failures, kills, the call log,
and its lock. Its Protocol rules are checked by the contract suite (tests/contract)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bgserve.backends.base import SlotInfo, SlotWatcher
from bgserve.backends.memory import Call, MemoryBackend
from bgserve.compose import build_backend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout, Unavailable
from bgserve.settings import Settings
from tests.support.kube import RELEASES


def test_a_failed_ensure_leaves_no_slot_and_the_next_one_succeeds() -> None:
    backend = MemoryBackend()
    backend.fail_next_ensure(2, Unavailable("image pull failed"))
    backend.time_out_next_ensure(2)
    with pytest.raises(Unavailable, match="image pull failed"):
        backend.ensure_slot("chat", RELEASES[2])
    with pytest.raises(ReadinessTimeout):
        backend.ensure_slot("chat", RELEASES[2])
    assert backend.slot_info("chat", 2) is None
    assert backend.ensure_slot("chat", RELEASES[2]) == SlotInfo(2, "memory://chat/2", True)


def test_a_failure_queued_for_a_running_slot_keeps_it_running() -> None:
    backend = MemoryBackend()
    backend.ensure_slot("chat", RELEASES[1])
    backend.fail_next_ensure(1)
    with pytest.raises(BackendError, match="injected"):
        backend.ensure_slot("chat", RELEASES[1])
    assert backend.slots() == {("chat", 1): True}


def test_kill_takes_the_slot_out_of_routing_and_reports_it() -> None:
    backend = MemoryBackend()
    lost: list[tuple[str, int]] = []
    assert isinstance(backend, SlotWatcher)
    backend.watch_slots(lambda d, r: lost.append((d, r)))
    for release_id in (1, 2):
        backend.ensure_slot("chat", RELEASES[release_id])
    backend.set_routes("chat", [Route("blue", 1, 50), Route("green", 2, 50)])
    backend.kill("chat", 2)
    assert lost == [("chat", 2)]
    assert backend.weights("chat") == {1: 50}
    assert backend.slot_info("chat", 2) == SlotInfo(2, "memory://chat/2", False)
    with pytest.raises(BackendError, match="down"):
        backend.set_routes("chat", [Route("blue", 1, 50), Route("green", 2, 50)])
    backend.set_routes("chat", [Route("blue", 1, 100), Route("green", 2, 0)])
    assert backend.ensure_slot("chat", RELEASES[2]).ready  # brought back up
    with pytest.raises(KeyError):
        backend.kill("chat", 3)


def test_every_call_is_recorded_in_order() -> None:
    backend = MemoryBackend(data_plane=None)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    assert backend.data_plane_url("chat") is None
    with pytest.raises(BackendError):
        backend.retire_slot("chat", 1)
    backend.close()
    routes = (Route("blue", 1, 100),)
    assert backend.calls == [
        Call("ensure_slot", ("chat", 1)),
        Call("set_routes", ("chat", routes)),
        Call("data_plane_url", ("chat",)),
        Call("retire_slot", ("chat", 1)),
        Call("close", ()),
    ]
    assert [c.method for c in backend.method_calls("set_routes", "close")] == [
        "set_routes",
        "close",
    ]
    with pytest.raises(BackendError, match="closed"):
        backend.ensure_slot("chat", RELEASES[1])


def test_concurrent_callers_never_see_weights_that_do_not_sum_to_100() -> None:
    backend = MemoryBackend()
    for release_id in (1, 2):
        backend.ensure_slot("chat", RELEASES[release_id])
    stop = threading.Event()
    seen: list[int] = []

    def shift(weight: int) -> None:
        backend.set_routes("chat", [Route("blue", 1, 100 - weight), Route("green", 2, weight)])

    def read() -> None:
        while not stop.is_set():
            seen.append(sum(backend.weights("chat").values()))

    shift(0)
    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(shift, [w % 101 for w in range(2000)]))
    stop.set()
    reader.join()
    assert seen and set(seen) == {100}
    assert len(backend.method_calls("set_routes")) == 2001


def test_the_memory_backend_is_a_settings_choice() -> None:
    backend = build_backend(Settings(backend="memory"))
    assert isinstance(backend, MemoryBackend) and backend.name == "memory"
