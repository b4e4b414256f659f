"""Garbage-collector pauses of this process, measured with ``gc.callbacks``.

A collection holds the GIL from start to stop, so its wall time is a pause every thread
of the process sees, the event loop included. A slot holds a few hundred thousand
long-lived objects once its model is loaded (MLflow, pandas, kserve); each full
collection walked them all for ~180 ms and found nothing to free. :func:`freeze_long_lived`
moves everything alive at the end of start-up into the permanent generation, which no
collection walks again, and :func:`install` starts counting what pauses remain.

The control process keeps loading code after start-up (the first deploy, comparison or
alias move imports parts of MLflow and builds caches), and its first full collection
walked those objects for 44 ms of CPU during a cutover (52 to 72 on a loaded machine).
:class:`Refreezer` freezes what survives each full collection, so the next one walks
only what was made since.

Standard library only: the data-plane process imports this module.
"""

from __future__ import annotations

import bisect
import gc
import time
from typing import Any, TypedDict

PAUSE_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
SLOW_PAUSE_MS = 20.0
GENERATIONS = 3


class PauseStats(TypedDict):
    """A JSON-ready snapshot of one process's collections since the tracker's last reset."""

    frozen: int  # objects in the permanent generation (gc.freeze)
    collections: list[int]  # per generation 0, 1, 2
    longest_ms: list[float]  # longest pause per generation
    longest_full_cpu_ms: float  # most CPU time one full (gen-2) collection took
    total_ms: float
    slow: int  # pauses over SLOW_PAUSE_MS
    buckets: list[int]  # pauses per PAUSE_BUCKETS_MS bucket, the last one unbounded


class PauseTracker:
    """Times every collection of this process. Use :func:`install` for the process's own.

    It runs inside every collection, young ones included (hundreds a second under
    load), so it only bumps counters: no lock, no allocation beyond a float. A snapshot
    taken on another thread may therefore be one collection behind in some fields.

    Pauses are wall time (what a waiting request sees); full collections also get their
    CPU time, which tells the collector's own work from time the process sat descheduled
    on a busy machine.
    """

    _collections: list[int]
    _longest_ms: list[float]
    _longest_full_cpu_ms: float
    _total_ms: float
    _buckets: list[int]

    def __init__(self) -> None:
        self._started = 0.0
        self._cpu_started = 0.0
        self.reset()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            if generation == GENERATIONS - 1:
                self._cpu_started = time.thread_time()
            self._started = time.perf_counter()
            return
        if not self._started:
            return  # installed while a collection ran
        ms = (time.perf_counter() - self._started) * 1000.0
        self._started = 0.0
        if generation == GENERATIONS - 1 and self._cpu_started:
            cpu_ms = (time.thread_time() - self._cpu_started) * 1000.0
            self._cpu_started = 0.0
            self._longest_full_cpu_ms = max(self._longest_full_cpu_ms, cpu_ms)
        self._collections[generation] += 1
        if ms > self._longest_ms[generation]:
            self._longest_ms[generation] = ms
        self._total_ms += ms
        self._buckets[bisect.bisect_left(PAUSE_BUCKETS_MS, ms)] += 1

    def reset(self) -> None:
        """Forget every pause so far (e.g. those of start-up)."""
        self._collections = [0] * GENERATIONS
        self._longest_ms = [0.0] * GENERATIONS
        self._longest_full_cpu_ms = 0.0
        self._total_ms = 0.0
        self._buckets = [0] * (len(PAUSE_BUCKETS_MS) + 1)

    def snapshot(self) -> PauseStats:
        """The counts since the last reset, and the frozen object count now."""
        buckets = list(self._buckets)
        return PauseStats(
            frozen=gc.get_freeze_count(),
            collections=list(self._collections),
            longest_ms=list(self._longest_ms),
            longest_full_cpu_ms=self._longest_full_cpu_ms,
            total_ms=self._total_ms,
            slow=sum(buckets[PAUSE_BUCKETS_MS.index(SLOW_PAUSE_MS) + 1 :]),
            buckets=buckets,
        )

    @property
    def installed(self) -> bool:
        """Whether the collector calls this tracker."""
        return any(callback is self for callback in gc.callbacks)

    def install(self) -> None:
        """Start timing collections. Idempotent."""
        if not self.installed:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        """Stop timing collections. Idempotent."""
        while self.installed:
            gc.callbacks.remove(self)


class _Process:
    """Holds the process's tracker: ``gc.callbacks`` is itself process-wide."""

    tracker: PauseTracker | None = None


class Refreezer:
    """Freezes the survivors of every full collection (installed by
    :func:`settle_after_start` with ``refreeze``).

    What survives a full collection in a long-running server is, almost always, code and
    caches that live as long as the process. The price: an object alive at a full
    collection that later becomes part of a reference cycle is never freed (reference
    counting still frees everything else); ``frozen`` in :class:`PauseStats` shows any
    growth.
    """

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == GENERATIONS - 1:
            gc.freeze()


def install() -> PauseTracker:
    """This process's tracker, installed on first use (later calls return the same one)."""
    if _Process.tracker is None:
        _Process.tracker = PauseTracker()
    _Process.tracker.install()
    return _Process.tracker


def freeze_long_lived() -> int:
    """Collect once, then move every object alive now out of reach of later collections.

    Call once start-up is over (the model loaded, the server built, not yet serving):
    what exists then lives as long as the process, so walking it again on every full
    collection is pure pause. Returns the number of frozen objects.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def settle_after_start(refreeze: bool = False) -> PauseTracker:
    """Freeze start-up's objects, then time collections from now on; the process's tracker.

    With ``refreeze``, the survivors of every later full collection are frozen too
    (:class:`Refreezer`). For a process that keeps running after start-up (the control
    API); pair it with :func:`thaw` when the app stops inside a longer-lived process.
    """
    freeze_long_lived()
    if refreeze and not any(isinstance(c, Refreezer) for c in gc.callbacks):
        gc.callbacks.append(Refreezer())
    tracker = install()
    tracker.reset()
    return tracker


def thaw() -> None:
    """Hand frozen objects back to the collector, so what start-up built can be freed once
    the app that built it stops (a process running several apps in turn, such as tests),
    and stop freezing the survivors of full collections."""
    gc.callbacks[:] = [c for c in gc.callbacks if not isinstance(c, Refreezer)]
    gc.unfreeze()
