"""Leader election's loop: who leads, when a leader stops, and that it never overlaps.

The lease here is scripted (each round says held / taken by another / unreachable) so the
timing rules can be checked exactly; the real leases (PostgreSQL advisory lock, Kubernetes
Lease) have their own tests against real servers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from bgserve.app.leadership import Leadership, SoleLeader, Timing
from bgserve.errors import BackendError
from bgserve.settings import Settings

HELD, OTHER, DOWN = "held", "other", "down"


class ScriptedLease:
    """Answers each round from a script; counts releases."""

    identity = "me"

    def __init__(self, rounds: list[str]) -> None:
        self.rounds: Iterator[str] = iter(rounds)
        self.released = 0
        self.current: str | None = None

    def try_acquire_or_renew(self) -> bool:
        answer = next(self.rounds)
        if answer == DOWN:
            raise BackendError("the API server cannot be reached")
        self.current = "me" if answer == HELD else "them"
        return answer == HELD

    def holder(self) -> str | None:
        return self.current

    def release(self) -> None:
        self.released += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def election(rounds: list[str]) -> tuple[Leadership, list[str], Clock, ScriptedLease]:
    events: list[str] = []
    clock = Clock()
    lease = ScriptedLease(rounds)
    leadership = Leadership(
        lease,
        Timing(lease_duration=15, renew_deadline=10, retry_period=2),
        on_lead=lambda: events.append("lead"),
        on_lose=lambda: events.append("lose"),
        clock=clock,
    )
    return leadership, events, clock, lease


def test_a_replica_leads_once_it_holds_the_lease_and_stops_when_another_takes_it() -> None:
    leadership, events, _, _ = election([OTHER, HELD, HELD, OTHER])
    leadership.step(background=False)
    assert not leadership.is_leader and events == []
    leadership.step(background=False)
    leadership.step(background=False)
    assert leadership.is_leader and events == ["lead"]  # renewing does not lead again
    leadership.step(background=False)
    assert not leadership.is_leader and events == ["lead", "lose"]
    assert leadership.status() == {"identity": "me", "leader": False, "holder": "them"}


def test_a_leader_that_cannot_renew_keeps_leading_until_its_renew_deadline_only() -> None:
    leadership, events, clock, _ = election([HELD, DOWN, DOWN, DOWN])
    leadership.step(background=False)
    clock.now += 4
    leadership.step(background=False)
    clock.now += 5.9
    leadership.step(background=False)
    assert leadership.is_leader, "9.9 s without renewal is inside the 10 s deadline"
    clock.now += 0.1
    leadership.step(background=False)
    assert not leadership.is_leader and events == ["lead", "lose"]


def test_closing_stops_the_leaders_work_and_releases_the_lease() -> None:
    leadership, events, _, lease = election([HELD, HELD])
    leadership.start()
    assert leadership.is_leader
    leadership.close()
    assert events == ["lead", "lose"] and lease.released == 1
    assert not leadership.is_leader


def test_stopping_on_shutdown_is_no_warning_but_losing_the_lease_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bgserve.leader")
    leadership, _, _, _ = election([HELD, HELD])
    leadership.start()
    leadership.close()
    closed = [r for r in caplog.records if "stops leading" in r.getMessage()]
    assert [r.levelno for r in closed] == [logging.INFO], caplog.text
    caplog.clear()
    taken, _, _, _ = election([HELD, OTHER])
    taken.step(background=False)
    taken.step(background=False)
    lost = [r for r in caplog.records if "stops leading" in r.getMessage()]
    assert [r.levelno for r in lost] == [logging.WARNING], caplog.text


def test_a_leader_whose_work_fails_to_start_gives_the_lease_up() -> None:
    lease = ScriptedLease([HELD])

    def broken() -> None:
        raise RuntimeError("cannot reach the backend")

    leadership = Leadership(lease, Timing(), on_lead=broken, on_lose=lambda: None)
    leadership.step(background=False)
    assert not leadership.is_leader and lease.released == 1


def test_a_slow_start_of_the_leaders_work_does_not_hold_up_renewals() -> None:
    release = threading.Event()
    events: list[str] = []
    lease = ScriptedLease([HELD, HELD, HELD, OTHER])

    def slow_start() -> None:
        events.append(f"lead on {threading.current_thread().name}")
        release.wait(10)
        events.append("started")

    leadership = Leadership(lease, Timing(), slow_start, lambda: events.append("lose"))
    leadership.step()  # becomes leader; the work starts on a thread of its own
    leadership.step()
    leadership.step()  # renewals go on meanwhile
    assert leadership.is_leader and events == ["lead on bgserve-leader-start"]
    stopper = threading.Thread(target=leadership.step)  # the lease is lost ...
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "... but the work is stopped only once its start has finished"
    release.set()
    stopper.join(10)
    assert events == ["lead on bgserve-leader-start", "started", "lose"]


def test_a_sole_process_always_leads() -> None:
    events: list[str] = []
    leadership = Leadership(
        SoleLeader(), Timing(), lambda: events.append("lead"), lambda: events.append("lose")
    )
    leadership.start()
    try:
        assert leadership.is_leader and events == ["lead"]
    finally:
        leadership.close()
    assert events == ["lead", "lose"]


@pytest.mark.parametrize(
    ("retry", "renew", "duration"), [(2, 10, 10), (10, 10, 15), (3, 2, 15), (2, 16, 15)]
)
def test_timings_out_of_order_are_refused_naming_the_settings(
    retry: float, renew: float, duration: float
) -> None:
    with pytest.raises(ValueError, match="BGSERVE_LEADER_RENEW_DEADLINE_SECONDS"):
        Settings(
            leader_retry_period_seconds=retry,
            leader_renew_deadline_seconds=renew,
            leader_lease_duration_seconds=duration,
        )
