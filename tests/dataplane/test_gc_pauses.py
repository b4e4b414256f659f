"""Garbage-collector pauses: the tracker's bookkeeping on forced collections, freezing,
their Prometheus families, and the data plane and control process reporting their own."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bgserve.gcmetrics import PauseCollector
from bgserve.gcpause import PAUSE_BUCKETS_MS, PauseStats, PauseTracker


@pytest.fixture
def tracker() -> Iterator[PauseTracker]:
    """A tracker seeing only the collections the test forces (automatic ones are off)."""
    tracker = PauseTracker()
    was_enabled = gc.isenabled()
    gc.disable()
    tracker.install()
    try:
        yield tracker
    finally:
        tracker.uninstall()
        if was_enabled:
            gc.enable()


def _full_collection(tracker: PauseTracker) -> float:
    """Force one full collection; the pause the tracker measured for it, in ms."""
    before = tracker.snapshot()["total_ms"]
    gc.collect()
    return tracker.snapshot()["total_ms"] - before


def test_tracker_keeps_the_longest_full_collection_and_counts_each(
    tracker: PauseTracker,
) -> None:
    # Many tracked objects make one collection clearly longer than the next.
    ballast = [[i] for i in range(300_000)]
    slow = _full_collection(tracker)
    del ballast
    fast = [_full_collection(tracker) for _ in range(2)]

    stats = tracker.snapshot()
    assert slow > 0 and min(fast) > 0
    assert stats["collections"][2] == 3
    # Usually the ballast's, but a loaded machine can stretch any single pause.
    assert stats["longest_ms"][2] == pytest.approx(max(slow, *fast))
    assert 0 < stats["longest_full_cpu_ms"] <= stats["longest_ms"][2] * 1.05
    assert sum(stats["buckets"]) == sum(stats["collections"])
    assert stats["slow"] == sum(1 for b in _bucket_bounds(stats) if b > 20.0)


def _bucket_bounds(stats: PauseStats) -> list[float]:
    """The upper bound of every recorded pause's bucket (inf for the last)."""
    bounds = [*PAUSE_BUCKETS_MS, float("inf")]
    return [bounds[i] for i, n in enumerate(stats["buckets"]) for _ in range(n)]


def test_reset_forgets_every_pause_and_later_ones_count_again(tracker: PauseTracker) -> None:
    gc.collect()
    tracker.reset()
    cleared = tracker.snapshot()
    assert cleared["collections"] == [0, 0, 0] and cleared["longest_ms"] == [0.0, 0.0, 0.0]
    assert cleared["total_ms"] == 0 and sum(cleared["buckets"]) == 0 and cleared["slow"] == 0
    assert cleared["longest_full_cpu_ms"] == 0

    after = _full_collection(tracker)
    stats = tracker.snapshot()
    assert stats["collections"][2] == 1 and stats["longest_ms"][2] == pytest.approx(after)


def test_an_uninstalled_tracker_counts_nothing_and_install_is_idempotent() -> None:
    tracker = PauseTracker()
    tracker.install()
    tracker.install()
    assert sum(cb is tracker for cb in gc.callbacks) == 1
    tracker.uninstall()
    gc.collect()
    assert tracker.snapshot()["collections"] == [0, 0, 0]
    assert not tracker.installed


def test_freeze_moves_every_live_object_out_of_the_collectors_generations() -> None:
    # In a child: freezing is for good, the test process must not keep it.
    code = textwrap.dedent(
        """
        import gc, json
        from bgserve import gcpause
        kept = [[i] for i in range(50_000)]
        frozen = gcpause.freeze_long_lived()
        tracker = gcpause.install()
        walked = sum(len(gc.get_objects(g)) for g in range(3))
        gc.collect()
        print(json.dumps({"frozen": frozen, "walked": walked,
                          "same": gcpause.install() is tracker,
                          "snapshot": tracker.snapshot()}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["frozen"] > 50_000
    assert out["walked"] < 1_000  # the 50,000 lists are no longer the collector's to walk
    assert out["same"] is True
    assert out["snapshot"]["frozen"] == out["frozen"]
    assert out["snapshot"]["collections"][2] == 1


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metric_families_export_each_process_labelled() -> None:
    stats = PauseStats(
        frozen=1234,
        collections=[40, 3, 2],
        longest_ms=[0.5, 3.0, 25.0],
        longest_full_cpu_ms=12.0,
        total_ms=60.0,
        slow=1,
        buckets=[40, 0, 3, 0, 1, 1, 0, 0, 0, 0],
    )
    registry = CollectorRegistry()
    registry.register(PauseCollector(lambda: {"slot": stats}))
    samples = _samples(generate_latest(registry).decode())

    slot = (("process", "slot"),)
    assert samples["bgserve_gc_frozen_objects", slot] == 1234
    gen2 = (("generation", "2"), ("process", "slot"))
    assert samples["bgserve_gc_longest_pause_seconds", gen2] == pytest.approx(0.025)
    assert samples["bgserve_gc_collections_total", gen2] == 2
    assert samples["bgserve_gc_pause_seconds_bucket", (("le", "0.02"), *slot)] == 44
    assert samples["bgserve_gc_pause_seconds_bucket", (("le", "+Inf"), *slot)] == 45
    assert samples["bgserve_gc_pause_seconds_count", slot] == 45
    assert samples["bgserve_gc_pause_seconds_sum", slot] == pytest.approx(0.06)
    cpu = samples["bgserve_gc_longest_full_collection_cpu_seconds", slot]
    assert cpu == pytest.approx(0.012)


@pytest.mark.integration
@pytest.mark.slow
def test_control_metrics_report_its_own_pauses_and_the_frozen_data_plane(
    client: TestClient,
) -> None:
    samples = _samples(client.get("/metrics").text)

    plane = (("process", "data plane"),)
    assert samples["bgserve_gc_frozen_objects", plane] > 1_000
    # This test process is the control process: its app froze start-up's objects.
    assert samples["bgserve_gc_frozen_objects", (("process", "bgserve"),)] > 10_000
    assert ("bgserve_gc_pause_seconds_count", (("process", "bgserve"),)) in samples
    for process in ("bgserve", "data plane"):
        key = (("generation", "2"), ("process", process))
        assert samples["bgserve_gc_longest_pause_seconds", key] >= 0


def test_refreeze_keeps_full_collections_to_what_was_made_since_the_last() -> None:
    # In a child, as above: freezing is for good.
    code = textwrap.dedent(
        """
        import gc, json
        from bgserve import gcpause
        gcpause.settle_after_start(refreeze=True)
        gcpause.settle_after_start(refreeze=True)  # installs one refreezer, not two
        refreezers = sum(isinstance(c, gcpause.Refreezer) for c in gc.callbacks)
        frozen_at_start = gc.get_freeze_count()
        loaded_later = [[i] for i in range(50_000)]  # code and caches built after start-up
        gc.collect(1)  # a young collection freezes nothing
        after_young = gc.get_freeze_count()
        gc.collect()
        walked = sum(len(gc.get_objects(g)) for g in range(3))
        after_full = gc.get_freeze_count()
        cycle = []
        cycle.append(cycle)
        del cycle
        freed = gc.collect()  # garbage made after the refreeze is still collected
        gcpause.thaw()
        print(json.dumps({"refreezers": refreezers, "frozen_at_start": frozen_at_start,
                          "after_young": after_young, "after_full": after_full,
                          "walked": walked, "freed": freed,
                          "left": sum(isinstance(c, gcpause.Refreezer) for c in gc.callbacks),
                          "thawed": gc.get_freeze_count()}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["refreezers"] == 1
    assert out["after_young"] == out["frozen_at_start"]
    assert out["after_full"] > out["frozen_at_start"] + 50_000
    assert out["walked"] < 1_000
    assert out["freed"] >= 1
    assert out["left"] == 0 and out["thawed"] == 0
