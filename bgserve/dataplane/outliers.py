"""Passive health of the slots behind the router, as Envoy's outlier detection does it.

The router reports every attempt's outcome. A refused connection ejects the slot at once
(nothing listens there: the process is gone); ``threshold`` consecutive local failures
(connect or first-byte timeouts, a connection lost mid-answer, the whole-response
timeout) eject it too, unless it is the last healthy weighted slot of a deployment
(like Envoy's ``max_ejection_percent``: ejecting every slot of an overloaded deployment
would turn slow answers into no answers). An ejected slot gets no traffic and is probed every
``probe_interval`` seconds; only a ready probe re-admits it. Answers with any status,
5xx included, count as successes: the slot is alive, the model said no.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bgserve.dataplane.health import probe_ready

Address = tuple[str, int]
EventCallback = Callable[[str, Address, str], None]
"""``on_event(kind, (host, port), reason)`` with kind ``"ejected"`` or ``"readmitted"``."""


class Outliers:
    """Counts consecutive failures per slot; ejects, probes and re-admits.

    Runs on the router's event loop only. ``mark_down`` returns True if the slot was up.
    """

    def __init__(
        self,
        *,
        threshold: int,
        probe_interval: float,
        mark_down: Callable[[str, int], bool],
        mark_up: Callable[[str, int], None],
        is_down: Callable[[str, int], bool],
        spare: Callable[[Address], bool] = lambda _: True,
        on_event: EventCallback | None = None,
    ) -> None:
        self.threshold = threshold
        self.probe_interval = probe_interval
        self._mark_down = mark_down
        self._mark_up = mark_up
        self._is_down = is_down
        self._spare = spare
        self._on_event = on_event
        self._failures: dict[Address, int] = {}
        self._probing: set[Address] = set()

    def succeeded(self, address: Address) -> None:
        """The slot answered: its run of failures is over."""
        if self._failures:
            self._failures.pop(address, None)

    def failed(self, address: Address, reason: str) -> None:
        """One more consecutive failure; the ``threshold``-th ejects the slot."""
        count = self._failures.get(address, 0) + 1
        self._failures[address] = count
        if self.threshold and count >= self.threshold and self._spare(address):
            self.eject(address, f"{count} consecutive failures, the last: {reason}")

    def eject(self, address: Address, reason: str) -> None:
        """Take the slot out of routing now and probe it until it answers ready."""
        self._failures.pop(address, None)
        if self._mark_down(*address) and self._on_event is not None:
            self._on_event("ejected", address, reason)
        self.probe(address)

    def probe(self, address: Address) -> None:
        """Probe a down slot until it is ready (then re-admit it) or no longer down."""
        if address not in self._probing:
            self._probing.add(address)
            asyncio.get_running_loop().create_task(self._probe_until_up(address))

    async def _probe_until_up(self, address: Address) -> None:
        try:
            while self._is_down(*address):
                await asyncio.sleep(self.probe_interval)
                if await probe_ready(*address, timeout=max(self.probe_interval, 0.5)):
                    self._mark_up(*address)
                    if self._on_event is not None:
                        self._on_event("readmitted", address, "answered ready")
        finally:
            self._probing.discard(address)
