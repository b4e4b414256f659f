"""The embedded backend: slot-server processes on this machine behind one weighted router.

Every slot is a child process (``python -m bgserve.backends.local.slot_server``) listening on a
socket the backend bound for it, so there is no free-port race. Children are spawned
from one long-lived thread with ``PR_SET_PDEATHSIG`` so they die with bgserve even when
it is SIGKILLed, and each gets its own process group so a Ctrl-C in the terminal reaches
bgserve (which then stops them in order) rather than the slots directly.

A watcher thread polls the slot processes every ``watch_interval`` seconds: a slot that
exits on its own is taken out of routing at once and reported to the callback given to
:meth:`LocalBackend.watch_slots`; the router's breaker does the same on a refused
connection, so traffic stops going to a dead slot well within a second.
"""

from __future__ import annotations

import contextlib
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
from bgserve.backends.local.router import Router, RouteTarget, SlotStats
from bgserve.backends.local.slot_process import LOOPBACK as _LOOPBACK
from bgserve.backends.local.slot_process import Slot as _Slot
from bgserve.backends.local.slot_process import death_signal_preexec, tail
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout


class LocalBackend:
    """Slots as local processes and a weighted data plane on ``data_host:data_port``.

    The router starts with the backend; ``close()`` stops it and every slot.
    """

    name = "local"

    def __init__(
        self,
        data_host: str = _LOOPBACK,
        data_port: int = 8081,
        ready_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        *,
        log_dir: Path | None = None,
        stop_grace: float = 10.0,
        watch_interval: float = 0.1,
    ) -> None:
        self.data_host = data_host
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._python = python
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bgserve-slots-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        # PDEATHSIG fires when the forking *thread* exits, so all forks happen on one
        # thread that lives as long as the backend.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgserve-spawn")
        self._http = httpx.Client(timeout=2.0)
        self._router = Router(breaker=True)
        self._on_lost: SlotLostCallback | None = None
        self._watch_interval = watch_interval
        self._watch_stop = threading.Event()
        try:
            self.data_port = self._router.start(data_host, data_port)
        except OSError as exc:
            self._spawner.shutdown()
            self._http.close()
            raise BackendError(
                f"cannot bind the data plane on {data_host}:{data_port}: {exc}; "
                "set BGSERVE_DATA_PORT to a free port"
            ) from exc
        self._watcher = threading.Thread(target=self._watch, name="bgserve-watch", daemon=True)
        self._watcher.start()

    @property
    def router(self) -> Router:
        """The data-plane router (for its ``stats()``)."""
        return self._router

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
                return SlotInfo(release.id, slot.endpoint, self._probe(slot))
            if slot is not None:
                self._discard(key, slot)
            slot = self._spawn(deployment, release)
            try:
                self._wait_ready(slot)
            except BaseException:
                self._stop(slot)
                raise
            with self._lock:
                self._slots[key] = slot
            self._router.mark_up(_LOOPBACK, slot.port)  # the port may be a dead slot's
            return SlotInfo(release.id, slot.endpoint, True)

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Point the data plane at these slots and weights, atomically.

        Idempotent. Raises BackendError (weights unchanged) if the weights do not sum to
        100 or a routed release has no slot, or a slot with weight is not running.
        """
        total = sum(r.weight for r in routes)
        if routes and total != 100:
            raise BackendError(f"weights of {deployment} sum to {total}, not 100: {routes}")
        targets = []
        for route in routes:
            slot = self._slots.get((deployment, route.release_id))
            if slot is None or (route.weight > 0 and not slot.alive()):
                raise BackendError(
                    f"release {route.release_id} has no running slot for {deployment}: "
                    "ensure the slot before routing to it"
                )
            targets.append(
                RouteTarget(route.role, route.release_id, _LOOPBACK, slot.port, route.weight)
            )
        self._router.set_routes(deployment, targets)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Stop the slot's process (SIGTERM, SIGKILL after ``stop_grace``) and forget it.

        Idempotent. Raises BackendError if the slot still takes traffic.
        """
        key = (deployment, release_id)
        with self._key_lock(key):
            routed = self._router.routes(deployment)
            if any(t.release_id == release_id and t.weight > 0 for t in routed):
                raise BackendError(
                    f"release {release_id} still takes traffic on {deployment}: "
                    "route it to 0 before retiring it"
                )
            remaining = [t for t in routed if t.release_id != release_id]
            if len(remaining) != len(routed):
                self._router.set_routes(deployment, remaining)
            with self._lock:
                slot = self._slots.pop(key, None)
            if slot is not None:
                self._stop(slot)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The slot's endpoint and whether it answers ready now; None if there is none."""
        slot = self._slots.get((deployment, release_id))
        if slot is None:
            return None
        return SlotInfo(release_id, slot.endpoint, slot.alive() and self._probe(slot))

    def data_plane_url(self, deployment: str) -> str:
        """``http://<data_host>:<port>/v2/models/<deployment>/infer`` on the router."""
        host = _LOOPBACK if self.data_host in ("0.0.0.0", "::", "") else self.data_host
        return f"http://{host}:{self.data_port}/v2/models/{deployment}/infer"

    def traffic_stats(self) -> list[SlotStats]:
        """Requests, errors and retries per (deployment, slot role, release) since start."""
        return self._router.stats()["slots"]

    def slot_pid(self, deployment: str, release_id: int) -> int | None:
        """The slot's process id, for diagnostics; None if there is no slot."""
        slot = self._slots.get((deployment, release_id))
        return slot.proc.pid if slot else None

    def watch_slots(self, callback: SlotLostCallback) -> None:
        """Call ``callback(deployment, release_id)`` when a slot process exits on its own.

        Called on the watcher thread, once per lost process, after the slot is already
        out of routing; the callback must return quickly. Replaces an earlier callback.
        """
        self._on_lost = callback

    def close(self) -> None:
        """Stop the router and every slot. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._watch_stop.set()
        self._watcher.join(5)
        self._router.stop()
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:  # signal all first so they shut down in parallel
            self._signal(slot, signal.SIGTERM)
        for slot in slots:
            self._stop(slot)
        self._spawner.shutdown(wait=True)
        self._http.close()

    # ----- processes -----

    def _watch(self) -> None:
        while not self._watch_stop.wait(self._watch_interval):
            for key, slot in self._lost_slots():
                self._router.mark_down(_LOOPBACK, slot.port)
                callback = self._on_lost
                if callback is not None:
                    callback(*key)

    def _lost_slots(self) -> list[tuple[tuple[str, int], _Slot]]:
        """Slots still registered (so not being stopped on purpose) whose process exited."""
        lost = []
        with self._lock:
            for key, slot in self._slots.items():
                if not slot.lost and not slot.alive():
                    slot.lost = True
                    lost.append((key, slot))
        return lost

    def _key_lock(self, key: tuple[str, int]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _spawn(self, deployment: str, release: Release) -> _Slot:
        if self._closed:
            raise BackendError("the local backend is closed")
        listener = socket.create_server((_LOOPBACK, 0), backlog=1024)
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
            _LOOPBACK,
            "--port",
            str(port),
            "--socket-fd",
            str(listener.fileno()),
        ]
        try:
            proc = self._spawner.submit(self._popen, args, log_file, listener.fileno()).result()
        except OSError as exc:
            log_file.close()
            raise BackendError(f"cannot start a slot process for {deployment}: {exc}") from exc
        finally:
            listener.close()  # the child holds its own copy
        return _Slot(deployment, release.id, proc, port, log_path, log_file)

    def _popen(self, args: list[str], log_file: IO[bytes], fd: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._env,
            pass_fds=(fd,),
            process_group=0,
            preexec_fn=death_signal_preexec(os.getpid()),
        )

    def _wait_ready(self, slot: _Slot) -> None:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        # The socket already listens, so a probe waits in the backlog until the slot
        # serves; bound it by what is left of the deadline.
        while not self._probe(slot, timeout=min(1.0, max(0.05, deadline - time.monotonic()))):
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

    def _probe(self, slot: _Slot, timeout: float = 2.0) -> bool:
        try:
            url = f"{slot.endpoint}/v2/health/ready"
            return self._http.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def _signal(self, slot: _Slot, sig: int) -> None:
        if slot.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.proc.pid, sig)

    def _stop(self, slot: _Slot) -> None:
        self._signal(slot, signal.SIGTERM)
        try:
            slot.proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            self._signal(slot, signal.SIGKILL)
            slot.proc.wait()
        slot.log_file.close()

    def _discard(self, key: tuple[str, int], slot: _Slot) -> None:
        with self._lock:
            self._slots.pop(key, None)
        self._stop(slot)
