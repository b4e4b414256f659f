"""A green slot that only answers mirrored copies runs in the background, and gets its
priority back before it takes traffic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bgserve.backends.local import slot_priority
from bgserve.backends.local.backend import LocalBackend
from bgserve.backends.local.slot_priority import (
    ShadowGreenPriority,
    SlotPriority,
    restorable,
    set_nice,
)
from bgserve.dataplane.wire import RouteTarget
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.support.models import build_bundle, local_release

THREADED_CHILD = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def nice_values(pid: int) -> set[int]:
    """The nice value of every thread of ``pid``."""
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.fixture
def threaded_child() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", THREADED_CHILD], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("normal", "rlimit", "cap", "expected"),
    [
        (0, 0, False, False),  # the usual unprivileged limit: nice can only go up
        (0, 19, False, False),
        (0, 20, False, True),
        (5, 15, False, True),
        (0, 0, True, True),
    ],
)
def test_a_priority_is_restorable_only_as_the_kernel_allows(
    normal: int, rlimit: int, cap: bool, expected: bool
) -> None:
    assert restorable(normal, rlimit, cap) is expected


def test_every_thread_of_a_process_is_lowered_and_restored(threaded_child: int) -> None:
    assert len(os.listdir(f"/proc/{threaded_child}/task")) == 4
    priority = SlotPriority(19)
    assert priority.enabled, "the tests run with the right to give a priority back"

    priority.lower(("demo", 2), threaded_child)
    assert nice_values(threaded_child) == {19}
    assert priority.lowered() == {("demo", 2)}
    priority.restore(("demo", 2))
    assert nice_values(threaded_child) == {priority.normal}
    assert priority.lowered() == set()


def test_a_forgotten_slot_is_never_touched_again(threaded_child: int) -> None:
    priority = SlotPriority(19)
    priority.lower(("demo", 2), threaded_child)
    priority.forget(("demo", 2))
    priority.restore(("demo", 2))  # its pid may belong to another process by now
    assert nice_values(threaded_child) == {19}
    set_nice(threaded_child, priority.normal)


def test_a_background_at_or_below_the_own_priority_turns_it_off(threaded_child: int) -> None:
    priority = SlotPriority(0)
    assert not priority.enabled
    priority.lower(("demo", 2), threaded_child)
    assert nice_values(threaded_child) == {priority.normal}


def test_the_setting_accepts_only_nice_values_that_lower() -> None:
    assert Settings(shadow_green_nice=0).shadow.green_nice == 0
    with pytest.raises(ValidationError, match="shadow_green_nice"):
        Settings(shadow_green_nice=20)


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:.*type hints:UserWarning")
def test_green_is_in_the_background_only_while_it_mirrors_without_traffic(
    tmp_path: Path,
) -> None:
    bundles = {v: build_bundle(tmp_path, v) for v in ("v1", "v2")}
    backend = LocalBackend(data_port=0, log_dir=tmp_path, ready_timeout=90)
    try:
        for release_id, version in ((1, "v1"), (2, "v2")):
            backend.ensure_slot("demo", local_release(release_id, bundles[version]))
        blue, green = backend.slot_pid("demo", 1), backend.slot_pid("demo", 2)
        assert blue is not None and green is not None
        normal = os.getpriority(os.PRIO_PROCESS, 0)
        backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
        assert nice_values(green) == {normal}, "no mirroring: green keeps its priority"

        backend.set_shadow("demo", 100)
        assert nice_values(green) == {19}
        assert nice_values(blue) == {normal}

        backend.set_routes("demo", [Route("blue", 1, 90), Route("green", 2, 10)])
        assert nice_values(green) == {normal}, "green takes traffic: back to its priority"
        backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
        assert nice_values(green) == {19}, "back to copies only: back in the background"

        backend.set_shadow("demo", 0)
        assert nice_values(green) == {normal}

        backend.set_shadow("demo", 100)
        backend.set_routes("demo", [Route("blue", 1, 100)])
        backend.retire_slot("demo", 2)
        backend.set_routes("demo", [Route("blue", 1, 100)])  # nothing left to restore
    finally:
        backend.close()


def test_routes_that_would_give_traffic_to_a_green_stuck_in_the_background_are_refused(
    threaded_child: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    greens = ShadowGreenPriority(19, lambda key: threaded_child if key == ("demo", 2) else None)
    quiet = [RouteTarget("blue", 1, "127.0.0.1", 1, 100), RouteTarget("green", 2, "x", 2, 0)]
    applied: list[str] = []

    def start_mirroring() -> list[RouteTarget]:
        applied.append("mirror")
        return quiet

    greens.mirror("demo", True, start_mirroring)
    assert nice_values(threaded_child) == {19}

    def refuse(pid: int, nice: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(slot_priority, "set_nice", refuse)
    taking = [RouteTarget("blue", 1, "127.0.0.1", 1, 90), RouteTarget("green", 2, "x", 2, 10)]
    with pytest.raises(BackendError, match="release 2 for demo its CPU priority back"):
        greens.route("demo", taking, lambda: applied.append("routes"))
    assert applied == ["mirror"], "the routes were applied to a green still in the background"
    monkeypatch.undo()
    greens.route("demo", taking, lambda: applied.append("routes"))
    assert applied == ["mirror", "routes"]
    assert nice_values(threaded_child) == {greens.priority.normal}


def test_without_the_right_to_restore_it_says_so_and_lowers_nothing(
    threaded_child: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(slot_priority, "restorable", lambda *_: False)
    with caplog.at_level("WARNING", logger="bgserve.backends.local"):
        priority = SlotPriority(19)
        assert not priority.enabled and caplog.text == "", "nothing to say before mirroring"
        priority.lower(("demo", 2), threaded_child)
        priority.lower(("demo", 3), threaded_child)
    assert nice_values(threaded_child) == {priority.normal}
    assert "CAP_SYS_NICE" in caplog.text and "BGSERVE_SHADOW_GREEN_NICE=0" in caplog.text
    assert caplog.text.count("keeps its CPU priority") == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="bgserve.backends.local"):
        SlotPriority(0).lower(("demo", 2), threaded_child)
    assert caplog.text == "", "turned off on purpose: nothing to say"
