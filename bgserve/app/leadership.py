"""Leader election: only one replica advances plans, restores deployments and restarts slots.

Every replica answers reads and accepts writes (they go through the executor's version
check); the background work that must happen once runs only while this replica holds a
:class:`Lease`. The loop follows client-go's leader election: try to acquire or renew every
``retry_period``; a leader that cannot renew for ``renew_deadline`` (shorter than the lease's
duration) stops leading before any other replica may take the lease over, so two leaders
never act at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bgserve.errors import BgserveError, ElectionForbidden

log = logging.getLogger("bgserve.leader")


class Lease(Protocol):
    """One replica's claim on a lease shared by every replica."""

    identity: str
    """Who this replica is (in the lease, the log and /readyz)."""

    def try_acquire_or_renew(self) -> bool:
        """Take the lease if it is free or expired, renew it if this replica holds it.

        Returns True when this replica holds the lease after the call, False when another
        replica does. Raises ElectionForbidden when the store refuses this replica a
        permission the election needs, BgserveError when the store cannot be reached (the
        caller keeps leading until its renew deadline).
        """
        ...

    def holder(self) -> str | None:
        """The identity the lease names now, None when free or unknown. Never raises."""
        ...

    def release(self) -> None:
        """Give the lease up so another replica can take it at once. Idempotent; never raises."""
        ...


@dataclass(frozen=True)
class Timing:
    """How often to renew and when to give up (client-go's defaults: 15 s, 10 s, 2 s)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class SoleLeader:
    """The lease of a bgserve that runs as one process: always held."""

    identity = "sole"

    def try_acquire_or_renew(self) -> bool:
        return True

    def holder(self) -> str | None:
        return self.identity

    def release(self) -> None:
        return None


class Leadership:
    """Runs ``on_lead`` when this replica becomes leader and ``on_lose`` when it stops.

    ``on_lead`` runs on the caller's thread when the lease is taken at :meth:`start` (so a
    sole replica has restored its deployments before it reports ready), later on a thread
    of its own, so a long start of the leader's work (restoring slots) never delays a
    renewal. ``on_lose`` runs on the election thread once that start has finished.
    """

    def __init__(
        self,
        lease: Lease,
        timing: Timing,
        on_lead: Callable[[], None],
        on_lose: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.timing = timing
        self._on_lead = on_lead
        self._on_lose = on_lose
        self._clock = clock
        self._leading = False
        self._last_renewal = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting: threading.Thread | None = None
        self._forbidden: ElectionForbidden | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads now."""
        return self._leading

    @property
    def forbidden(self) -> ElectionForbidden | None:
        """Why this replica may not take part in the election, while that lasts."""
        return self._forbidden

    def check_electable(self) -> None:
        """Raises ElectionForbidden while this replica may not take part in the election:
        work that needs a leader (a plan) would never advance through it."""
        if self._forbidden is not None:
            raise self._forbidden

    def status(self) -> dict[str, object]:
        """What /readyz says: who this is, whether it leads, who holds the lease, and why
        it may not take part in the election when that is so."""
        status: dict[str, object] = {
            "identity": self.lease.identity,
            "leader": self._leading,
            "holder": self.lease.identity if self._leading else self.lease.holder(),
        }
        if self._forbidden is not None:
            status["forbidden"] = self._forbidden.message
        return status

    def start(self) -> None:
        """Try once now (so a sole replica leads before it reports ready), then keep trying
        in the background. Idempotent."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.step(background=False)
        self._thread = threading.Thread(target=self._loop, name="bgserve-leader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop trying, stop leading and release the lease. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.retry_period + 5)
            self._thread = None
        if self._leading:
            self._lose("shutting down", expected=True)
        self.lease.release()

    def step(self, background: bool = True) -> None:
        """One election round: acquire or renew, lead or stop leading. Never raises.
        ``background``: start the leader's work on a thread of its own."""
        try:
            held = self.lease.try_acquire_or_renew()
        except ElectionForbidden as exc:
            if self._forbidden is None:
                log.error("leader election: %s", exc.message)
            self._forbidden = exc
            self._renewal_failed(exc.message)
            return
        except BgserveError as exc:
            self._renewal_failed(exc.message)
            return
        if self._forbidden is not None:
            log.info("leader election: this replica may take part again")
            self._forbidden = None
        if held:
            self._last_renewal = self._clock()
            if not self._leading:
                self._lead(background)
        elif self._leading:
            self._lose(f"the lease is held by {self.lease.holder()}")

    def _renewal_failed(self, why: str) -> None:
        if not self._leading:
            log.debug("leader election: %s", why)
            return
        overdue = self._clock() - self._last_renewal
        if overdue >= self.timing.renew_deadline:
            self._lose(f"could not renew for {overdue:.1f} s: {why}")
        else:
            log.warning("leader election: renewal failed (%s), retrying", why)

    def _lead(self, background: bool) -> None:
        log.info("%s leads: starting the rollout engine and slot recovery", self.lease.identity)
        self._leading = True
        if not background:
            self._start_work()
            return
        self._starting = threading.Thread(
            target=self._start_work, name="bgserve-leader-start", daemon=True
        )
        self._starting.start()

    def _start_work(self) -> None:
        try:
            self._on_lead()
        except Exception:
            log.exception("starting the leader's work failed; giving the lease up")
            self._lose("the leader's work failed to start")
            self.lease.release()

    def _lose(self, why: str, *, expected: bool = False) -> None:
        # Stopping on shutdown is the normal end, not something an operator must look at.
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "%s stops leading: %s", self.lease.identity, why)
        self._leading = False
        starting, self._starting = self._starting, None
        if starting is not None and starting is not threading.current_thread():
            starting.join()
        try:
            self._on_lose()
        except Exception:
            log.exception("stopping the leader's work failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.timing.retry_period):
            self.step()
