"""The embedded backend: slot-server processes on this machine behind one weighted router.

The router runs in a data-plane process of its own (:mod:`bgserve.backends.local.dataplane_client`),
so nothing bgserve does in its own process (comparisons, scoring, MLflow, the database)
can delay an inference; it is told its routes over a private channel and restarted,
with the last routes it was given, if it dies.

Every slot is a child process (``python -m bgserve.slot.server``) that
:class:`~bgserve.backends.local.slot_launcher.SlotLauncher` starts, probes and stops.

A watcher thread polls the slots every ``watch_interval`` seconds: one that exits on its
own is taken out of routing at once and reported to :meth:`LocalBackend.watch_slots`'s
callback, exactly like one the router's outlier detection ejected (it refused connections
or failed ``outlier_failures`` times in a row). A prober thread keeps each slot's
readiness fresh, so :meth:`LocalBackend.slot_info` never waits on a slot.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgserve.backends.base import ShadowTraffic, SlotInfo, SlotLostCallback, check_shadow
from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.backends.local.slot_launcher import SlotLauncher
from bgserve.backends.local.slot_priority import ShadowGreenPriority, SlotKey
from bgserve.backends.local.slot_process import LOOPBACK, Slot
from bgserve.backends.local.traffic import windows_of
from bgserve.dataplane.wire import SHADOW_MAX_BYTES, RouteTarget, ShadowBatch, SlotStats
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError
from bgserve.gcpause import PauseStats

log = logging.getLogger("bgserve.backends.local")
READY_PROBE_INTERVAL_S = 1.0


class LocalBackend:
    """Slots as local processes and a weighted data plane on ``data_host:data_port``.

    The data-plane process starts with the backend; ``close()`` stops it and every slot.
    ``connect_timeout`` and ``first_byte_timeout`` bound how long the router waits for a
    slot (``upstream_timeout`` for a whole answer, ``stream_idle_timeout`` between two
    pieces of an answer's body); ``deployment_timeouts`` (``{deployment: (first_byte_s,
    idle_s)}``, None keeping the default) and :meth:`set_timeouts` give a deployment its
    own, e.g. an LLM whose unstreamed answer takes a minute; ``data_token``, when set, is required
    on every data-plane request but ``/v2/health/*``. While a deployment mirrors, its
    green slot with no traffic runs at nice ``shadow_green_nice`` (0 keeps its priority;
    :mod:`~bgserve.backends.local.slot_priority`); the data plane holds at most
    ``shadow_max_bytes`` of mirrored copies and pairs (:mod:`~bgserve.dataplane.mirror`).
    """

    name = "local"

    def __init__(
        self,
        data_host: str = LOOPBACK,
        data_port: int = 8081,
        ready_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        *,
        log_dir: Path | None = None,
        stop_grace: float = 10.0,
        watch_interval: float = 0.1,
        connect_timeout: float = 1.0,
        first_byte_timeout: float | None = 10.0,
        upstream_timeout: float = 300.0,
        stream_idle_timeout: float | None = None,
        deployment_timeouts: Mapping[str, tuple[float | None, float | None]] | None = None,
        outlier_failures: int = 3,
        probe_interval: float = 0.1,
        data_token: str | None = None,
        sticky_header: str | None = "x-bgserve-key",
        shadow_green_nice: int = 19,
        shadow_max_bytes: int = SHADOW_MAX_BYTES,
    ) -> None:
        self.data_host = data_host
        self._launcher = SlotLauncher(
            env=env or {},
            python=python,
            log_dir=log_dir,
            ready_timeout=ready_timeout,
            stop_grace=stop_grace,
        )
        self._slots: dict[tuple[str, int], Slot] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        self._on_lost: SlotLostCallback | None = None
        self._watch_interval = watch_interval
        self._green_priority = ShadowGreenPriority(shadow_green_nice, self._live_pid)
        self._watch_stop = threading.Event()
        options: dict[str, object] = {
            "breaker": True,
            "connect_timeout": connect_timeout,
            "first_byte_timeout": first_byte_timeout,
            "stream_idle_timeout": stream_idle_timeout,
            "upstream_timeout": upstream_timeout,
            "outlier_failures": outlier_failures,
            "probe_interval": probe_interval,
            "data_token": data_token,
            "sticky_header": sticky_header,
            "shadow_max_bytes": shadow_max_bytes,
        }
        try:
            self._plane = self._launcher.start_plane(
                data_host, data_port, options, self._plane_event
            )
        except BaseException:
            self._launcher.close()
            raise
        self.data_port = self._plane.port
        try:
            for deployment, (first_byte_s, idle_s) in (deployment_timeouts or {}).items():
                self._plane.set_timeouts(deployment, first_byte_s, idle_s)
        except BaseException:
            self._plane.stop()
            self._launcher.close()
            raise
        self._threads = [
            threading.Thread(target=self._watch, name="bgserve-watch", daemon=True),
            threading.Thread(target=self._refresh_ready, name="bgserve-ready", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def ready_timeout(self) -> float:
        """Seconds a new slot has to answer ready."""
        return self._launcher.ready_timeout

    @property
    def stop_grace(self) -> float:
        """Seconds between a slot's SIGTERM and its SIGKILL."""
        return self._launcher.stop_grace

    @property
    def router(self) -> DataPlaneClient:
        """The data plane's control handle (``routes``, ``is_down``, ``stats``, ``pid``)."""
        return self._plane

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Start a slot process serving ``release.bundle_uri`` and wait until it is ready.

        Idempotent: a live slot for (deployment, release) is reused; a dead one is replaced.
        Raises ReadinessTimeout (after killing the process) if it is not ready within
        ``ready_timeout``, BackendError if it exits while starting (with its log tail).
        """
        key = (deployment, release.id)
        with self._key_lock(key):
            slot = self._slots.get(key)
            if slot is not None and slot.alive():
                return SlotInfo(release.id, slot.endpoint, slot.ready and not slot.ejected)
            if slot is not None:  # its process died: replace it
                self._green_priority.retire(key, lambda: self._forget_slot(key))
                self._launcher.stop(slot)
            slot = self._launcher.start(deployment, release)
            self._register(key, slot)
            self._plane.mark_up(LOOPBACK, slot.port)  # the port may be a dead slot's
            return SlotInfo(release.id, slot.endpoint, True)

    def _register(self, key: tuple[str, int], slot: Slot) -> None:
        """Keep the ready slot, unless close() ran meanwhile: then stop it, never leak it."""
        with self._lock:
            closed = self._launcher.closed
            if not closed:
                slot.ready = True
                self._slots[key] = slot
        if closed:
            self._launcher.stop(slot)
            raise BackendError("the local backend is closed")

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Point the data plane at these slots and weights, atomically.

        Idempotent. Raises BackendError (weights unchanged) if the weights do not sum to
        100 or a routed release has no slot, a slot with weight is not running, or a
        slot in the background (see ``shadow_green_nice``) cannot get its priority back.
        """
        total = sum(r.weight for r in routes)
        if routes and (total != 100 or any(r.weight < 0 for r in routes)):
            weights = [r.weight for r in routes]
            raise BackendError(
                f"weights of {deployment} must be 0 or more and sum to 100, got {weights}"
            )
        targets = []
        for route in routes:
            slot = self._slots.get((deployment, route.release_id))
            if slot is None or (route.weight > 0 and not slot.alive()):
                raise BackendError(
                    f"release {route.release_id} has no running slot for {deployment}: "
                    "ensure the slot before routing to it"
                )
            targets.append(
                RouteTarget(route.role, route.release_id, LOOPBACK, slot.port, route.weight)
            )
        self._green_priority.route(
            deployment, targets, lambda: self._plane.set_routes(deployment, targets)
        )

    def set_timeouts(
        self, deployment: str, first_byte_s: float | None, idle_s: float | None
    ) -> None:
        """How long the data plane waits for the deployment's slots: for an answer to begin
        (``first_byte_s``, then one retry elsewhere) and between two pieces of its body
        (``idle_s``, then the answer is cut and counts as the slot's failure); None keeps
        the backend's default. Idempotent; kept across a restart of the data plane.
        Raises BackendError for a value not above 0 or a data plane that is down."""
        self._plane.set_timeouts(deployment, first_byte_s, idle_s)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Stop the slot's process (SIGTERM, SIGKILL after ``stop_grace``) and forget it.

        Idempotent. Raises BackendError if the slot still takes traffic.
        """
        key = (deployment, release_id)
        with self._key_lock(key):
            routed = self._plane.routes(deployment)
            if any(t.release_id == release_id and t.weight > 0 for t in routed):
                raise BackendError(
                    f"release {release_id} still takes traffic on {deployment}: "
                    "route it to 0 before retiring it"
                )
            remaining = [t for t in routed if t.release_id != release_id]

            def unroute() -> Slot | None:
                if len(remaining) != len(routed):
                    self._plane.set_routes(deployment, remaining)
                return self._forget_slot(key)

            slot = self._green_priority.retire(key, unroute)
            if slot is not None:
                self._launcher.stop(slot)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The slot's endpoint and readiness; None if there is none. Never blocks: ready
        means alive, not ejected, and ready at the last probe (at most a second ago)."""
        slot = self._slots.get((deployment, release_id))
        if slot is None:
            return None
        return SlotInfo(release_id, slot.endpoint, slot.serving())

    def data_plane_url(self, deployment: str) -> str:
        """``http://<data_host>:<port>/v2/models/<deployment>/infer`` on the router."""
        host = LOOPBACK if self.data_host in ("0.0.0.0", "::", "") else self.data_host
        return f"http://{host}:{self.data_port}/v2/models/{deployment}/infer"

    def traffic_stats(self) -> list[SlotStats]:
        """Requests, errors and retries per (deployment, slot role, release) since start."""
        return self._plane.stats()["slots"]

    def traffic_reading(self) -> tuple[list[SlotStats], PauseStats | None]:
        """Per-slot counters and the data plane's collector pauses, in one call to it (the
        application's ``TrafficStats``). Raises BackendError if it cannot be asked."""
        stats: Mapping[str, Any] = self._plane.stats()
        return stats["slots"], stats.get("gc")

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests, errors, latency histogram and the streaming checks' histograms per
        release since the data-plane process started: the rollout engine's live counts (a
        ``TrafficSource``). Raises BackendError if the data plane cannot be asked."""
        return windows_of(self.traffic_stats(), deployment)

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of the infer requests blue answers to the
        green slot, beside blue's call (never delaying it), through a queue of at most
        ``max_queue`` copies. Idempotent; kept across a restart of the data plane.

        Raises InvalidInput for a percent outside 0-100 or a ``max_queue`` below 1,
        BackendError if the deployment has no green route or the data plane refuses.
        """
        check_shadow(percent, max_queue)

        def apply() -> list[RouteTarget]:
            routes = self._plane.routes(deployment)
            if percent and not any(t.role == "green" for t in routes):
                raise BackendError(
                    f"{deployment} has no green release to mirror to: stage one first"
                )
            self._plane.set_shadow(deployment, percent, max_queue)
            return routes

        self._green_priority.mirror(deployment, bool(percent), apply)

    def _live_pid(self, key: SlotKey) -> int | None:
        slot = self._slots.get(key)
        return slot.proc.pid if slot is not None and slot.alive() else None

    def _forget_slot(self, key: SlotKey) -> Slot | None:
        with self._lock:
            return self._slots.pop(key, None)

    def shadow_pairs(self, deployment: str) -> ShadowBatch:
        """Drain the pairs and counters the data plane collected since the previous call.

        Raises BackendError if the data plane cannot be asked.
        """
        return self._plane.drain_shadow(deployment)

    def slot_pid(self, deployment: str, release_id: int) -> int | None:
        """The slot's process id, for diagnostics; None if there is no slot."""
        slot = self._slots.get((deployment, release_id))
        return slot.proc.pid if slot else None

    def watch_slots(self, callback: SlotLostCallback) -> None:
        """Call ``callback(deployment, release_id)`` when a slot process exits on its own,
        or when the data plane ejects it (it stopped answering or kept failing).

        Called on the watcher thread, once per lost process and once per ejection, after
        the slot is already out of routing; the callback must return quickly. Replaces an
        earlier callback. A restart of the data-plane process is no slot loss.
        """
        self._on_lost = callback

    def close(self) -> None:
        """Stop the data plane and every slot, including one a concurrent ensure_slot is
        starting (it stops its own when it finds the backend closed). Idempotent."""
        with self._lock:
            if self._launcher.closed:
                return
            self._launcher.mark_closed()
            slots = list(self._slots.values())
            self._slots.clear()
        self._watch_stop.set()
        for thread in self._threads:
            thread.join(5)
        self._plane.stop()
        self._launcher.stop_all(slots)
        self._launcher.close()

    # ----- the watcher and the prober -----

    def _watch(self) -> None:
        while not self._watch_stop.wait(self._watch_interval):
            try:
                self._plane.check()
                for key, slot in self._lost_slots():
                    if slot.lost:
                        self._plane.mark_down(LOOPBACK, slot.port)
                    callback = self._on_lost
                    if callback is not None:
                        callback(*key)
            except BackendError as exc:
                if not self._launcher.closed:
                    log.error("the slot watcher: %s", exc.message)

    def _lost_slots(self) -> list[tuple[tuple[str, int], Slot]]:
        """Slots still registered (so not being stopped on purpose) whose process exited,
        or that the data plane ejected; each loss is returned once."""
        with self._lock:
            return [(key, slot) for key, slot in self._slots.items() if slot.newly_lost()]

    def _plane_event(self, kind: str, address: tuple[str, int], reason: str) -> None:
        """The data plane ejected or re-admitted the slot at ``address``."""
        with self._lock:
            slot = next((s for s in self._slots.values() if s.port == address[1]), None)
            if slot is None:
                return
            slot.note_plane_event(kind)
        log.warning(
            "slot of release %s for %s %s: %s", slot.release_id, slot.deployment, kind, reason
        )

    def _refresh_ready(self) -> None:
        """Probe every live slot about once a second, so slot_info never has to."""
        while not self._watch_stop.wait(READY_PROBE_INTERVAL_S):
            with self._lock:
                slots = [s for s in self._slots.values() if not s.lost and not s.ejected]
            for slot in slots:
                ready = slot.alive() and self._launcher.probe(slot, timeout=0.5)
                if not slot.ejected:  # an ejection is undone only by the data plane's probe
                    slot.ready = ready

    def _key_lock(self, key: tuple[str, int]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())


if TYPE_CHECKING:
    _shadows: type[ShadowTraffic] = LocalBackend
