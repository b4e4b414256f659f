"""A traffic source read at most once every few seconds per deployment.

The rollout engine reads live traffic at every tick (0.25 s by default). bgserve's own
data plane answers that from memory, but Prometheus changes only when it scrapes (every
15 s or so) and CloudWatch once a minute, and each of their readings costs queries (three
PromQL queries; a DescribeEndpoint and a billed GetMetricData). Between two readings the
last one stands: to the engine that is the same as counts that did not move, which is
what those sources would have said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from bgserve.app.ports import TrafficSource
from bgserve.domain.window import SideWindow


class ReadEvery:
    """:class:`~bgserve.app.ports.TrafficSource` reading ``source`` at most once per
    ``seconds`` (``clock`` seconds) and deployment; 0 reads it every time.

    A failed reading raises as the source does and is not kept: the next call tries again.
    """

    def __init__(
        self,
        source: TrafficSource,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.seconds = seconds
        self.clock = clock
        self._last: dict[str, tuple[float, Mapping[int, SideWindow]]] = {}

    def windows(self, deployment: str) -> Mapping[int, SideWindow]:
        """The source's reading of ``deployment``, or its last one if younger than
        ``seconds``. Raises Unavailable as the source does."""
        now = self.clock()
        last = self._last.get(deployment)
        if last is not None and now - last[0] < self.seconds:
            return last[1]
        counts = self.source.windows(deployment)
        self._last[deployment] = (now, counts)
        return counts
