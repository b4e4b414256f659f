"""A deployment's route table: targets, their weights, and the order the router picks them.

A table is immutable except for its round-robin cursor. Targets the router knows to be
down keep their configured weight (what :meth:`Router.routes` reports) but get no share
of the schedule: the remaining healthy weights are renormalised, so a dead slot stops
receiving traffic without any change to the stored weights.

Sticky keys use a second, precomputed map: 100 buckets, green's share first
(:func:`sticky_slots`), so a key's slot depends only on its stable hash and the weights.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from hashlib import blake2b
from math import gcd

from bgserve.dataplane.wire import RouteTarget
from bgserve.domain.latency import BUCKETS


class SlotCounters:
    """What the router counted for one (deployment, role, release) since it started.

    Shared by every table of the deployment that routes to the release, and incremented
    in place on the router's loop only: ``latency_buckets`` holds the answered requests
    per bucket of :mod:`bgserve.domain.latency`.
    """

    __slots__ = ("errors", "latency_buckets", "requests", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.retries = 0
        self.latency_buckets = [0] * BUCKETS


def weighted_schedule(weights: list[int]) -> tuple[int, ...]:
    """The smooth weighted round-robin order of target indexes over one full cycle.

    Each index appears exactly ``weight / gcd`` times per cycle, spread evenly.
    """
    divisor = 0
    for weight in weights:
        divisor = gcd(divisor, weight)
    if divisor == 0:
        return ()
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    order: list[int] = []
    for _ in range(total):
        for i, weight in enumerate(reduced):
            current[i] += weight
        best = max(range(len(current)), key=current.__getitem__)
        current[best] -= total
        order.append(best)
    return tuple(order)


def sticky_slots(targets: tuple[RouteTarget, ...], effective: list[int]) -> tuple[int, ...]:
    """The slot of each sticky bucket 0..99: green's share first, then the others'.

    Bucket ``u`` goes to green iff ``u`` is below green's share of the healthy weights
    (its weight when all are up), so raising green's weight only moves buckets from
    blue to green, and green at 0 (or down) leaves every bucket elsewhere.
    """
    total = sum(effective)
    if not total:
        return ()
    green = [i for i, t in enumerate(targets) if t.role == "green" and effective[i]]
    order = green + [i for i, w in enumerate(effective) if w and i not in green]
    slots: list[int] = []
    cumulative = 0
    for index in order:
        cumulative += effective[index]
        slots.extend([index] * (round(100 * cumulative / total) - len(slots)))
    return tuple(slots)


def sticky_bucket(key: bytes) -> int:
    """A stable bucket 0..99 for a sticky key (the same on every process and run)."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % 100


@dataclass(frozen=True)
class Timeouts:
    """How long the router waits for a deployment's slots: for an answer to begin
    (``first_byte``) and, once it has, between two pieces of its body (``idle``).
    None means no limit."""

    first_byte: float | None = 10.0
    idle: float | None = None


class Table:
    """A deployment's routes; only ``_next`` changes, and only on the router's loop.

    ``counters`` and ``streams`` hold one list per target (requests, errors, retries and
    latency; the streaming checks of :mod:`~bgserve.dataplane.stream_meter`), shared with
    the tables that replace this one.
    """

    __slots__ = (
        "_next",
        "all_down",
        "counters",
        "deployment",
        "effective",
        "extra_headers",
        "primary",
        "schedule",
        "sticky",
        "streams",
        "targets",
        "timeouts",
    )

    def __init__(
        self,
        deployment: str,
        targets: tuple[RouteTarget, ...],
        counters: list[SlotCounters],
        down: Collection[tuple[str, int]] = (),
        *,
        streams: list[list[int]] | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.deployment = deployment
        self.targets = targets
        self.counters = counters
        self.streams = streams if streams is not None else [[] for _ in targets]
        self.timeouts = timeouts
        self.effective = [0 if t.address in down else t.weight for t in targets]
        self.all_down = any(t.weight for t in targets) and not any(self.effective)
        self.schedule = weighted_schedule(self.effective)
        weighted = [i for i, w in enumerate(self.effective) if w > 0]
        self.primary = max(weighted, key=self.effective.__getitem__) if weighted else None
        self.sticky = sticky_slots(targets, self.effective)
        self.extra_headers = [
            b"x-bgserve-slot: %s\r\nx-bgserve-release: %d\r\n" % (t.role.encode(), t.release_id)
            for t in targets
        ]
        self._next = 0

    def pick(self) -> int | None:
        if not self.schedule:
            return None
        index = self.schedule[self._next]
        self._next = (self._next + 1) % len(self.schedule)
        return index

    def pick_sticky(self, key: bytes) -> int | None:
        """The slot of ``key``'s bucket: the same one for as long as the weights stand."""
        if not self.sticky:
            return None
        return self.sticky[sticky_bucket(key)]

    def alternative(self, failed: int) -> int | None:
        """The heaviest other healthy weighted slot, for one retry after a connect failure."""
        others = [i for i, w in enumerate(self.effective) if w > 0 and i != failed]
        return max(others, key=self.effective.__getitem__) if others else None

    def with_down(self, down: Collection[tuple[str, int]]) -> Table:
        """The same routes and counters, with the health of ``down`` applied."""
        return Table(
            self.deployment,
            self.targets,
            self.counters,
            down,
            streams=self.streams,
            timeouts=self.timeouts,
        )

    def with_timeouts(self, timeouts: Timeouts, down: Collection[tuple[str, int]]) -> Table:
        """The same routes and counters with other timeouts."""
        return Table(
            self.deployment,
            self.targets,
            self.counters,
            down,
            streams=self.streams,
            timeouts=timeouts,
        )

    def addresses(self) -> set[tuple[str, int]]:
        return {t.address for t in self.targets}
