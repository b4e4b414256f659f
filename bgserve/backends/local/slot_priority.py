"""A green slot that only answers mirrored copies runs at a background CPU priority.

Mirrored copies must never slow the answers clients wait for. On Kubernetes green has
pods of its own; here it shares the machine's cores with blue and the data plane, and a
green busy with copies takes CPU time from blue: on 2 cores, shadowing 100% of the
requests added 0.78 ms to the client's p50 with green at the same priority as blue, and
about what a green that answers at once costs with green at nice 19.

So while a deployment mirrors and its green takes no traffic, every thread of green's
process gets the background nice value (19 by default); before green takes a share of
the traffic, or when the mirroring stops, it gets back the priority it started with.
Green's latencies in a shadow report are therefore upper bounds on a busy machine.

Raising a nice value back needs CAP_SYS_NICE or an RLIMIT_NICE that allows it. A backend
that could not give green its priority back never lowers it: a green promoted while
still in the background would serve every user at that priority.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bgserve.dataplane.wire import RouteTarget
from bgserve.errors import BackendError

log = logging.getLogger("bgserve.backends.local")
CAP_SYS_NICE = 23
SlotKey = tuple[str, int]  # (deployment, release id)
T = TypeVar("T")
PASSES = 3


def restorable(normal: int, rlimit_nice: int, cap_sys_nice: bool) -> bool:
    """Whether a process may lower a nice value back to ``normal``: with CAP_SYS_NICE,
    or when RLIMIT_NICE reaches ``20 - normal`` (the kernel's rule)."""
    return cap_sys_nice or rlimit_nice == resource.RLIM_INFINITY or 20 - normal <= rlimit_nice


def _has_cap_sys_nice() -> bool:
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    return False


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def set_nice(pid: int, nice: int) -> None:
    """Give every thread of process ``pid`` this nice value.

    Idempotent; threads (or the whole process) that exit meanwhile are skipped. A thread
    started meanwhile inherits its creator's value, so the threads are walked again
    until a pass changes nothing. Raises OSError when the OS refuses.
    """
    for _ in range(PASSES):
        changed = False
        for tid in _threads(pid):
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                    changed = True
            except ProcessLookupError:
                continue
        if not changed:
            return


class SlotPriority:
    """The slots now in the background, by key, and the moves in and out of it.

    ``background`` is the nice value of a green that only answers copies; a value at or
    below this process's own (0 turns it off), a system without per-thread nice values
    in ``/proc``, or no right to give the priority back disables it: then :meth:`lower`
    does nothing (for want of the right, it logs why once). Thread-safe.
    """

    def __init__(self, background: int) -> None:
        self.normal = os.getpriority(os.PRIO_PROCESS, 0)
        self.background = background
        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
        wanted = background > self.normal and Path("/proc/self/task").is_dir()
        self.enabled = wanted and restorable(self.normal, soft, _has_cap_sys_nice())
        self._unexplained = wanted and not self.enabled  # said once, at the first lower()
        self._lowered: dict[SlotKey, int] = {}
        self._lock = threading.Lock()

    def lower(self, key: SlotKey, pid: int) -> None:
        """Put the slot ``key`` (process ``pid``) in the background. Idempotent; a
        refusal from the OS is logged and leaves the slot as it was, never raised. When
        disabled for want of the right to restore, says so once."""
        if not self.enabled:
            self._explain()
            return
        with self._lock:
            if self._lowered.get(key) == pid:
                return
            try:
                set_nice(pid, self.background)
            except OSError as exc:
                log.warning("could not lower the CPU priority of slot pid %d: %s", pid, exc)
                return
            self._lowered[key] = pid

    def _explain(self) -> None:
        if self._unexplained:
            self._unexplained = False
            log.warning(
                "a green slot answering mirrored copies keeps its CPU priority: lowering it "
                "needs the right to raise it back (CAP_SYS_NICE, or RLIMIT_NICE of at least "
                "%d); without it copies may slow live answers on a busy machine. Set "
                "BGSERVE_SHADOW_GREEN_NICE=0 to silence this.",
                20 - self.normal,
            )

    def restore(self, key: SlotKey) -> None:
        """Give the slot ``key`` its own priority back, if it was lowered. Idempotent.

        Raises OSError if the OS refuses (the slot stays recorded as lowered).
        """
        with self._lock:
            pid = self._lowered.get(key)
            if pid is None:
                return
            set_nice(pid, self.normal)
            del self._lowered[key]

    def forget(self, key: SlotKey) -> None:
        """The slot's process is gone or being replaced: stop tracking it (its pid may be
        reused by another process, which must never be touched)."""
        with self._lock:
            self._lowered.pop(key, None)

    def lowered(self) -> set[SlotKey]:
        """The (deployment, release id) of every slot in the background now."""
        with self._lock:
            return set(self._lowered)


def shadow_only_green(targets: Sequence[RouteTarget]) -> int | None:
    """The release of the green route that takes no traffic, if there is one: the slot a
    mirroring deployment puts in the background."""
    return next((t.release_id for t in targets if t.role == "green" and t.weight == 0), None)


class ShadowGreenPriority:
    """The CPU priority of each mirroring deployment's shadow-only green (its green slot
    that takes no traffic): background while it only answers copies, its own before it
    takes traffic; kept in step with the route and mirroring changes that decide it.

    ``pid_of(key)`` is the live process of slot ``key`` (None if there is none). Each
    change runs under one lock with the priority moves around it: a slot gets its
    priority back before routes that give it traffic apply, and goes to the background
    only after routes that leave it none. Thread-safe.
    """

    def __init__(self, background: int, pid_of: Callable[[SlotKey], int | None]) -> None:
        self.priority = SlotPriority(background)
        self._pid_of = pid_of
        self._mirroring: set[str] = set()
        self._lock = threading.Lock()

    def route(
        self, deployment: str, targets: Sequence[RouteTarget], apply: Callable[[], None]
    ) -> None:
        """Run ``apply`` (which routes ``deployment`` to ``targets``) with the priority
        moves around it. Raises BackendError (nothing applied) if a slot cannot get its
        priority back."""
        with self._lock:
            self._restore(deployment, but=self._shadow_only_green(deployment, targets))
            apply()
            self._lower(deployment, targets)

    def mirror(
        self,
        deployment: str,
        mirroring: bool,
        apply: Callable[[], Sequence[RouteTarget]],
    ) -> None:
        """Run ``apply`` (which starts or stops mirroring and returns the deployment's
        routes), then move green's priority. Raises what ``apply`` raises, BackendError if
        green cannot get its priority back (mirroring stopped)."""
        with self._lock:
            routes = apply()
            if mirroring:
                self._mirroring.add(deployment)
                self._lower(deployment, routes)
            else:
                self._mirroring.discard(deployment)
                self._restore(deployment, but=None)

    def retire(self, key: SlotKey, apply: Callable[[], T]) -> T:
        """Run ``apply`` (which takes slot ``key`` out of routing and of ``pid_of``), and
        forget the slot's priority, with no move of its priority in between; what
        ``apply`` returned."""
        with self._lock:
            result = apply()
            self.priority.forget(key)
            return result

    def _shadow_only_green(self, deployment: str, targets: Sequence[RouteTarget]) -> int | None:
        return shadow_only_green(targets) if deployment in self._mirroring else None

    def _lower(self, deployment: str, targets: Sequence[RouteTarget]) -> None:
        release_id = self._shadow_only_green(deployment, targets)
        if release_id is None:
            return
        pid = self._pid_of((deployment, release_id))
        if pid is not None:
            self.priority.lower((deployment, release_id), pid)

    def _restore(self, deployment: str, but: int | None) -> None:
        for key in self.priority.lowered():
            if key[0] == deployment and key[1] != but:
                try:
                    self.priority.restore(key)
                except OSError as exc:
                    raise BackendError(
                        f"could not give the slot of release {key[1]} for {deployment} "
                        f"its CPU priority back: {exc}"
                    ) from exc
