"""The embedded backend: slot-server processes on this machine behind one weighted router.

The router runs in a data-plane process of its own (:mod:`bgserve.backends.local.plane`),
so nothing bgserve does in its own process (comparisons, scoring, MLflow, the database)
can delay an inference; it is told its routes over a private channel and restarted,
with the last routes it was given, if it dies.

Every slot is a child process (``python -m bgserve.backends.local.slot_server``) listening on a
socket the backend bound for it, so there is no free-port race. Children are spawned
from one long-lived thread with ``PR_SET_PDEATHSIG`` so they die with bgserve even when
it is SIGKILLed, and each gets its own process group so a Ctrl-C in the terminal reaches
bgserve (which then stops them in order) rather than the slots directly.

A watcher thread polls the slot processes every ``watch_interval`` seconds: a slot that
exits on its own is taken out of routing at once and reported to the callback given to
:meth:`LocalBackend.watch_slots`; the router's outlier detection ejects a slot that
refuses connections or fails (timeouts included) ``outlier_failures`` times in a row,
and the watcher reports an ejected slot exactly like a dead one. A prober thread keeps
each slot's readiness fresh, so :meth:`LocalBackend.slot_info` never waits on a slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx

from bgserve.backends.base import SlotInfo, SlotLostCallback
from bgserve.backends.local.plane import DataPlane, bind
from bgserve.backends.local.router import RouteTarget, SlotStats
from bgserve.backends.local.slot_process import LOOPBACK, Slot, death_signal_preexec, tail
from bgserve.domain.analysis import SideWindow
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout

log = logging.getLogger("bgserve.backends.local")
READY_PROBE_INTERVAL_S = 1.0


class LocalBackend:
    """Slots as local processes and a weighted data plane on ``data_host:data_port``.

    The data-plane process starts with the backend; ``close()`` stops it and every slot.
    ``connect_timeout`` and ``first_byte_timeout`` bound how long the router waits for a
    slot (``upstream_timeout`` for a whole answer); ``data_token``, when set, is required
    on every data-plane request but ``/v2/health/*``.
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
        outlier_failures: int = 3,
        probe_interval: float = 0.1,
        data_token: str | None = None,
    ) -> None:
        self.data_host = data_host
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._python = python
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bgserve-slots-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._slots: dict[tuple[str, int], Slot] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        # PDEATHSIG fires when the forking *thread* exits, so all forks happen on one
        # thread that lives as long as the backend.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgserve-spawn")
        self._http = httpx.Client(timeout=2.0)
        self._on_lost: SlotLostCallback | None = None
        self._watch_interval = watch_interval
        self._watch_stop = threading.Event()
        options: dict[str, object] = {
            "breaker": True,
            "connect_timeout": connect_timeout,
            "first_byte_timeout": first_byte_timeout,
            "upstream_timeout": upstream_timeout,
            "outlier_failures": outlier_failures,
            "probe_interval": probe_interval,
            "data_token": data_token,
        }
        try:
            self._plane = self._start_plane(data_host, data_port, options)
        except BaseException:
            self._spawner.shutdown()
            self._http.close()
            raise
        self.data_port = self._plane.port
        self._threads = [
            threading.Thread(target=self._watch, name="bgserve-watch", daemon=True),
            threading.Thread(target=self._refresh_ready, name="bgserve-ready", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _start_plane(self, host: str, port: int, options: dict[str, object]) -> DataPlane:
        try:
            listener = bind(host, port)
        except OSError as exc:
            raise BackendError(
                f"cannot bind the data plane on {host}:{port}: {exc}; "
                "set BGSERVE_DATA_PORT to a free port"
            ) from exc
        log_path = self._log_dir / "data-plane.log"
        self._plane_log = log_path.open("ab")
        try:
            return DataPlane(
                listener,
                options=options,
                popen=lambda args, fds: self._spawner.submit(
                    self._popen, args, self._plane_log, fds
                ).result(),
                python=self._python,
                log_path=log_path,
                on_event=self._plane_event,
            )
        except BaseException:
            listener.close()
            self._plane_log.close()
            raise

    @property
    def router(self) -> DataPlane:
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
            if slot is not None:
                self._discard(key, slot)
            slot = self._spawn(deployment, release)
            try:
                self._wait_ready(slot)
            except BaseException:
                self._stop(slot)
                raise
            self._register(key, slot)
            self._plane.mark_up(LOOPBACK, slot.port)  # the port may be a dead slot's
            return SlotInfo(release.id, slot.endpoint, True)

    def _register(self, key: tuple[str, int], slot: Slot) -> None:
        """Keep the ready slot, unless close() ran meanwhile: then stop it, never leak it."""
        with self._lock:
            closed = self._closed
            if not closed:
                slot.ready = True
                self._slots[key] = slot
        if closed:
            self._stop(slot)
            raise BackendError("the local backend is closed")

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Point the data plane at these slots and weights, atomically.

        Idempotent. Raises BackendError (weights unchanged) if the weights do not sum to
        100 or a routed release has no slot, or a slot with weight is not running.
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
        self._plane.set_routes(deployment, targets)

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
            if len(remaining) != len(routed):
                self._plane.set_routes(deployment, remaining)
            with self._lock:
                slot = self._slots.pop(key, None)
            if slot is not None:
                self._stop(slot)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The slot's endpoint and readiness; None if there is none. Never blocks: ready
        means alive, not ejected, and ready at the last probe (at most a second ago)."""
        slot = self._slots.get((deployment, release_id))
        if slot is None:
            return None
        return SlotInfo(release_id, slot.endpoint, slot.alive() and slot.ready and not slot.ejected)

    def data_plane_url(self, deployment: str) -> str:
        """``http://<data_host>:<port>/v2/models/<deployment>/infer`` on the router."""
        host = LOOPBACK if self.data_host in ("0.0.0.0", "::", "") else self.data_host
        return f"http://{host}:{self.data_port}/v2/models/{deployment}/infer"

    def traffic_stats(self) -> list[SlotStats]:
        """Requests, errors and retries per (deployment, slot role, release) since start."""
        return self._plane.stats()["slots"]

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests, errors and latency histogram per release since the data-plane process
        started: the rollout engine's live counts (a ``TrafficSource``). Raises
        BackendError if the data plane cannot be asked."""
        out: dict[int, SideWindow] = {}
        for stats in self.traffic_stats():
            if stats["deployment"] != deployment:
                continue
            side = SideWindow(stats["requests"], stats["errors"], tuple(stats["latency_buckets"]))
            before = out.get(stats["release_id"])
            out[stats["release_id"]] = side if before is None else before.plus(side)
        return out

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
            if self._closed:
                return
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
        self._watch_stop.set()
        for thread in self._threads:
            thread.join(5)
        self._plane.stop()
        self._plane_log.close()
        for slot in slots:  # signal all first so they shut down in parallel
            self._signal(slot, signal.SIGTERM)
        for slot in slots:
            self._stop(slot)
        self._spawner.shutdown(wait=True)
        self._http.close()

    # ----- processes -----

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
                if not self._closed:
                    log.error("the slot watcher: %s", exc.message)

    def _lost_slots(self) -> list[tuple[tuple[str, int], Slot]]:
        """Slots still registered (so not being stopped on purpose) whose process exited,
        or that the data plane ejected; each loss is returned once."""
        lost = []
        with self._lock:
            for key, slot in self._slots.items():
                if not slot.lost and not slot.alive():
                    slot.lost, slot.ready = True, False
                    lost.append((key, slot))
                elif slot.ejected and not slot.ejection_reported and not slot.lost:
                    slot.ejection_reported = True
                    lost.append((key, slot))
        return lost

    def _plane_event(self, kind: str, address: tuple[str, int], reason: str) -> None:
        """The data plane ejected or re-admitted the slot at ``address``."""
        with self._lock:
            slot = next((s for s in self._slots.values() if s.port == address[1]), None)
            if slot is None:
                return
            if kind == "ejected":
                slot.ejected, slot.ready = True, False
            else:
                slot.ejected = slot.ejection_reported = False
                slot.ready = True
        log.warning(
            "slot of release %s for %s %s: %s", slot.release_id, slot.deployment, kind, reason
        )

    def _refresh_ready(self) -> None:
        """Probe every live slot about once a second, so slot_info never has to."""
        while not self._watch_stop.wait(READY_PROBE_INTERVAL_S):
            with self._lock:
                slots = [s for s in self._slots.values() if not s.lost and not s.ejected]
            for slot in slots:
                ready = slot.alive() and self._probe(slot, timeout=0.5)
                if not slot.ejected:  # an ejection is undone only by the data plane's probe
                    slot.ready = ready

    def _key_lock(self, key: tuple[str, int]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _spawn(self, deployment: str, release: Release) -> Slot:
        if self._closed:
            raise BackendError("the local backend is closed")
        listener = socket.create_server((LOOPBACK, 0), backlog=1024)
        port = int(listener.getsockname()[1])
        log_path = self._log_dir / f"{deployment}-release-{release.id}.log"
        log_file = log_path.open("wb")
        args = [
            self._python,
            "-m",
            "bgserve.backends.local.slot_server",
            "--model-uri",
            release.bundle_uri,
            "--deployment",
            deployment,
            "--release-id",
            str(release.id),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--socket-fd",
            str(listener.fileno()),
        ]
        try:
            proc = self._spawner.submit(self._popen, args, log_file, (listener.fileno(),)).result()
        except RuntimeError as exc:  # the spawner was shut down: close() ran
            log_file.close()
            raise BackendError("the local backend is closed") from exc
        except OSError as exc:
            log_file.close()
            raise BackendError(f"cannot start a slot process for {deployment}: {exc}") from exc
        finally:
            listener.close()  # the child holds its own copy
        return Slot(deployment, release.id, proc, port, log_path, log_file)

    def _popen(
        self, args: list[str], log_file: IO[bytes], fds: tuple[int, ...]
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._env,
            pass_fds=fds,
            process_group=0,
            preexec_fn=death_signal_preexec(os.getpid()),
        )

    def _wait_ready(self, slot: Slot) -> None:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        # The socket already listens, so a probe waits in the backlog until the slot
        # serves; bound it by what is left of the deadline.
        while not self._probe(slot, timeout=min(1.0, max(0.05, deadline - time.monotonic()))):
            if self._closed:
                raise BackendError("the local backend is closed")
            if not slot.alive():
                raise BackendError(
                    f"slot of release {slot.release_id} for {slot.deployment} exited with code "
                    f"{slot.proc.returncode} while starting; log {slot.log_path} ends with:\n"
                    + tail(slot.log_path),
                    details={"log": str(slot.log_path)},
                )
            if time.monotonic() > deadline:
                raise ReadinessTimeout(
                    f"slot of release {slot.release_id} for {slot.deployment} was not ready "
                    f"within {self.ready_timeout}s; log {slot.log_path} ends with:\n"
                    + tail(slot.log_path),
                    details={"log": str(slot.log_path)},
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _probe(self, slot: Slot, timeout: float = 2.0) -> bool:
        try:
            url = f"{slot.endpoint}/v2/health/ready"
            return self._http.get(url, timeout=timeout).status_code == 200
        except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed
            return False

    def _signal(self, slot: Slot, sig: int) -> None:
        if slot.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.proc.pid, sig)

    def _stop(self, slot: Slot) -> None:
        self._signal(slot, signal.SIGTERM)
        try:
            slot.proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            self._signal(slot, signal.SIGKILL)
            slot.proc.wait()
        slot.log_file.close()

    def _discard(self, key: tuple[str, int], slot: Slot) -> None:
        with self._lock:
            self._slots.pop(key, None)
        self._stop(slot)
