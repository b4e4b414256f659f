"""Starting, probing and stopping the local backend's processes: slots and the data plane.

Every child is forked from one long-lived thread with ``PR_SET_PDEATHSIG``, so it dies
with bgserve even when bgserve is SIGKILLed, and gets its own process group, so a Ctrl-C
in the terminal reaches bgserve (which then stops the children in order) rather than
the children directly. A slot listens on a socket bound here and passed by descriptor,
so there is no free-port race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx

from bgserve.backends.local.dataplane_client import DataPlaneClient, bind
from bgserve.backends.local.slot_process import LOOPBACK, Slot, death_signal_preexec, tail
from bgserve.domain.release import Release
from bgserve.errors import BackendError, ReadinessTimeout

PlaneEvent = Callable[[str, tuple[str, int], str], None]


class SlotLauncher:
    """Spawns slot processes and the data-plane process, waits for, probes and stops them.

    Safe from any thread. After :meth:`mark_closed` no new slot starts: :meth:`start`
    raises BackendError "the local backend is closed", even mid-start.
    """

    def __init__(
        self,
        *,
        env: dict[str, str],
        python: str,
        log_dir: Path | None,
        ready_timeout: float,
        stop_grace: float,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._python = python
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bgserve-slots-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._plane_log: IO[bytes] | None = None
        # PDEATHSIG fires when the forking *thread* exits, so all forks happen on one
        # thread that lives as long as the backend.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgserve-spawn")
        self._http = httpx.Client(timeout=2.0)

    @property
    def closed(self) -> bool:
        """Whether :meth:`mark_closed` ran."""
        return self._closed

    def mark_closed(self) -> None:
        """Refuse new slots from now on; a slot being started stops and raises."""
        self._closed = True

    def start_plane(
        self, host: str, port: int, options: dict[str, object], on_event: PlaneEvent
    ) -> DataPlaneClient:
        """Bind ``host:port`` and start the data-plane process serving it, logging to
        ``data-plane.log``. Raises BackendError if the address cannot be bound, and
        whatever :class:`DataPlaneClient` raises if the process does not start."""
        try:
            listener = bind(host, port)
        except OSError as exc:
            raise BackendError(
                f"cannot bind the data plane on {host}:{port}: {exc}; "
                "set BGSERVE_DATA_PORT to a free port"
            ) from exc
        log_path = self._log_dir / "data-plane.log"
        plane_log = self._plane_log = log_path.open("ab")
        try:
            return DataPlaneClient(
                listener,
                options=options,
                popen=lambda args, fds: self._spawner.submit(
                    self._popen, args, plane_log, fds
                ).result(),
                python=self._python,
                log_path=log_path,
                on_event=on_event,
            )
        except BaseException:
            listener.close()
            plane_log.close()
            raise

    def start(self, deployment: str, release: Release) -> Slot:
        """Spawn a slot process serving ``release.bundle_uri`` and wait until it is ready.

        Raises ReadinessTimeout if it is not ready within ``ready_timeout``, BackendError
        if it cannot start or exits while starting (with its log tail) or the launcher is
        closed; the process is stopped before either is raised.
        """
        slot = self._spawn(deployment, release)
        try:
            self._wait_ready(slot)
        except BaseException:
            self.stop(slot)
            raise
        return slot

    def probe(self, slot: Slot, timeout: float = 2.0) -> bool:
        """Whether the slot answers its readiness endpoint within ``timeout``. Never raises."""
        try:
            url = f"{slot.endpoint}/v2/health/ready"
            return self._http.get(url, timeout=timeout).status_code == 200
        except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed
            return False

    def stop(self, slot: Slot) -> None:
        """SIGTERM the slot's process group, SIGKILL it after ``stop_grace``; close its log.

        Idempotent; never raises for a process that is already gone.
        """
        self._signal(slot, signal.SIGTERM)
        try:
            slot.proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            self._signal(slot, signal.SIGKILL)
            slot.proc.wait()
        slot.log_file.close()

    def stop_all(self, slots: list[Slot]) -> None:
        """Stop every slot, signalling all first so they shut down in parallel."""
        for slot in slots:
            self._signal(slot, signal.SIGTERM)
        for slot in slots:
            self.stop(slot)

    def close(self) -> None:
        """Shut the spawner thread down and close the probe client and the plane's log.

        Call after the data plane and every slot are stopped. Idempotent.
        """
        self._closed = True
        self._spawner.shutdown(wait=True)
        self._http.close()
        if self._plane_log is not None:
            self._plane_log.close()

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
            "bgserve.slot.server",
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
        while not self.probe(slot, timeout=min(1.0, max(0.05, deadline - time.monotonic()))):
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

    def _signal(self, slot: Slot, sig: int) -> None:
        if slot.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.proc.pid, sig)
