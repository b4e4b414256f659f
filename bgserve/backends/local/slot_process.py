"""One slot process of the local backend, and the helpers that spawn and diagnose it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_TAIL_BYTES = 4000
LOOPBACK = "127.0.0.1"


def death_signal_preexec(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: die with SIGTERM when the spawning thread's process goes away."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


def tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


@dataclass
class Slot:
    """One running slot process."""

    deployment: str
    release_id: int
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    lost: bool = False  # its process exited on its own (reported once)
    ready: bool = False  # the last readiness probe, kept fresh by the backend's prober
    ejected: bool = False  # the data plane took it out of routing; back after a ready probe
    ejection_reported: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def serving(self) -> bool:
        """Alive, not ejected, and ready at the last probe."""
        return self.alive() and self.ready and not self.ejected

    def newly_lost(self) -> bool:
        """Whether the process exited or the data plane ejected it since the last call.

        Each loss counts once: the slot is marked lost (or its ejection reported)."""
        if not self.lost and not self.alive():
            self.lost, self.ready = True, False
            return True
        if self.ejected and not self.ejection_reported and not self.lost:
            self.ejection_reported = True
            return True
        return False

    def note_plane_event(self, kind: str) -> None:
        """Apply the data plane's ``"ejected"`` or ``"readmitted"`` to the slot's flags."""
        if kind == "ejected":
            self.ejected, self.ready = True, False
        else:
            self.ejected = self.ejection_reported = False
            self.ready = True
