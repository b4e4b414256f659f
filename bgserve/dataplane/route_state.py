"""The router's route state: one table per deployment, the slots marked down, the counters.

Any thread may change it. One lock serialises the writers; each change builds new
tables and swaps the whole mapping, so the event loop reads :attr:`RouteState.tables`
without a lock and a request keeps the table it picked even if it is replaced meanwhile.
A table's counters are lists shared with the tables that replace it, incremented in
place on the router's loop only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from bgserve.dataplane.route_table import SlotCounters, Table, Timeouts
from bgserve.dataplane.stream_meter import (
    STREAM_COUNTERS,
    TOKEN_SUM_AT,
    TOKENS_AT,
    TPOT_AT,
    TTFT_AT,
)
from bgserve.dataplane.wire import Address, RouterStats, RouteTarget, SlotStats


class RouteState:
    """Route tables by encoded deployment name, the down set and the per-slot counters.

    Every method is safe from any thread. ``unrouted`` is a one-element list the router's
    loop increments in place for requests it cannot route.
    """

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.tables: dict[bytes, Table] = {}
        self.unrouted = [0]
        self.default_timeouts = timeouts or Timeouts()
        self._timeouts: dict[str, Timeouts] = {}
        self._counters: dict[tuple[str, str, int], SlotCounters] = {}
        self._streams: dict[tuple[str, str, int], list[int]] = {}
        self._down: set[Address] = set()
        self._lock = threading.Lock()

    def set_routes(self, deployment: str, routes: Sequence[RouteTarget]) -> None:
        """Replace the deployment's routes atomically. Raises ValueError on a negative weight."""
        if any(r.weight < 0 for r in routes):
            raise ValueError(f"negative weight in routes of {deployment}: {routes}")
        with self._lock:
            counters = [self._counter(deployment, r) for r in routes]
            streams = [self._stream_counter(deployment, r) for r in routes]
            timeouts = self._timeouts.get(deployment, self.default_timeouts)
            table = Table(
                deployment, tuple(routes), counters, self._down, streams=streams, timeouts=timeouts
            )
            self.tables = {**self.tables, deployment.encode(): table}

    def set_timeouts(
        self, deployment: str, first_byte: float | None, idle: float | None
    ) -> Timeouts:
        """Wait at most ``first_byte`` seconds for an answer of the deployment's slots to
        begin and ``idle`` seconds between two pieces of its body (None: the router's
        default); kept for later routes too. Idempotent. Raises ValueError for a value
        that is not above 0."""
        for name, value in (("first_byte_s", first_byte), ("idle_s", idle)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} of {deployment} must be above 0, got {value!r}")
        default = self.default_timeouts
        timeouts = Timeouts(
            default.first_byte if first_byte is None else float(first_byte),
            default.idle if idle is None else float(idle),
        )
        with self._lock:
            self._timeouts[deployment] = timeouts
            key = deployment.encode()
            table = self.tables.get(key)
            if table is not None:
                self.tables = {**self.tables, key: table.with_timeouts(timeouts, self._down)}
        return timeouts

    def timeouts(self, deployment: str) -> Timeouts:
        """The deployment's timeouts (the default unless :meth:`set_timeouts` changed them)."""
        return self._timeouts.get(deployment, self.default_timeouts)

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment``. Idempotent."""
        with self._lock:
            tables = dict(self.tables)
            tables.pop(deployment.encode(), None)
            self.tables = tables

    def mark_down(self, host: str, port: int) -> bool:
        """Exclude the slot at ``host:port`` from every schedule; True if it was up.

        Idempotent. Stored weights are not touched: the schedule of every deployment
        using the slot is rebuilt from the healthy targets' weights.
        """
        with self._lock:
            if (host, port) in self._down:
                return False
            self._down.add((host, port))
            self._rebuild_locked((host, port))
        return True

    def mark_up(self, host: str, port: int) -> None:
        """Schedule the slot at ``host:port`` by its weights again. Idempotent."""
        with self._lock:
            if (host, port) in self._down:
                self._down.discard((host, port))
                self._rebuild_locked((host, port))

    def is_down(self, host: str, port: int) -> bool:
        """Whether the slot at ``host:port`` is excluded from routing now."""
        return (host, port) in self._down

    def others_healthy(self, address: Address) -> bool:
        """Whether every deployment routed to ``address`` has another healthy weighted slot."""
        for table in self.tables.values():
            for index, target in enumerate(table.targets):
                if target.address == address and table.alternative(index) is None:
                    return False
        return True

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The deployment's current routes (empty if it is not routed)."""
        table = self.tables.get(deployment.encode())
        return list(table.targets) if table else []

    def addresses(self) -> set[Address]:
        """The address of every slot some table routes to."""
        return {t.address for table in self.tables.values() for t in table.targets}

    def forget_down(self, keep: set[Address]) -> None:
        """Drop from the down set every address not in ``keep`` (slots no longer routed)."""
        with self._lock:
            self._down &= keep

    def stats(self) -> RouterStats:
        """Request, error and retry counts per (deployment, role, release) since start."""
        with self._lock:
            items = [(key, c, self._streams[key]) for key, c in self._counters.items()]
        slots: list[SlotStats] = [
            SlotStats(
                deployment=d,
                role=r,
                release_id=rel,
                requests=c.requests,
                errors=c.errors,
                retries=c.retries,
                latency_buckets=list(c.latency_buckets),
                ttft_buckets=s[TTFT_AT:TPOT_AT],
                tpot_buckets=s[TPOT_AT:TOKENS_AT],
                output_token_buckets=s[TOKENS_AT:TOKEN_SUM_AT],
                output_tokens=s[TOKEN_SUM_AT],
            )
            for (d, r, rel), c, s in items
        ]
        return RouterStats(slots=slots, unrouted=self.unrouted[0])

    def _counter(self, deployment: str, route: RouteTarget) -> SlotCounters:
        key = (deployment, route.role, route.release_id)
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = SlotCounters()
        return counters

    def _stream_counter(self, deployment: str, route: RouteTarget) -> list[int]:
        key = (deployment, route.role, route.release_id)
        return self._streams.setdefault(key, [0] * STREAM_COUNTERS)

    def _rebuild_locked(self, address: Address) -> None:
        self.tables = {
            key: table.with_down(self._down) if address in table.addresses() else table
            for key, table in self.tables.items()
        }
