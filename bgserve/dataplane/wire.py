"""The wire between bgserve (the control side) and its data-plane process, defined once.

Both sides speak it: the operations (:class:`Op`), the route row (:class:`RouteTarget`,
a JSON array ``[role, release_id, host, port, weight]`` on the channel), the stats
reply, a page of shadow pairs and the batch the control side makes of the pages, and
the body cap every pair respects. :class:`DataPlaneControl` is the one set of control
methods: the in-process :class:`~bgserve.dataplane.router.Router` implements it, and so
does the control side's client of the process
(:class:`~bgserve.backends.local.dataplane_client.DataPlaneClient`), whose calls
:mod:`bgserve.dataplane.main` dispatches back onto a router, one handler per operation.

Standard library only: the control side imports it without the data plane's runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, NotRequired, Protocol, TypedDict

from bgserve.gcpause import PauseStats

BODY_CAP = 64 * 1024
"""Bytes of a request or answer body a :class:`ShadowPair` keeps; longer ones are cut."""
SHADOW_MAX_BYTES = 64 * 1024 * 1024
"""The default bound on the bytes the data plane holds for shadow traffic."""

Address = tuple[str, int]


class Op(StrEnum):
    """The control operations, by their name in a message ``{"id", "op", ...args}``."""

    CONFIGURE = "configure"  # the first message only: options, routes, health, shadows
    SET_ROUTES = "set_routes"  # deployment, version, routes (rows; None removes them)
    MARK_DOWN = "mark_down"  # host, port
    MARK_UP = "mark_up"  # host, port
    IS_DOWN = "is_down"  # host, port
    STATS = "stats"
    SET_TIMEOUTS = "set_timeouts"  # deployment, first_byte_s, idle_s (None: the default)
    SET_SHADOW = "set_shadow"  # deployment, percent, max_queue
    SHADOW_PAIRS = "shadow_pairs"  # deployment, limit
    PING = "ping"


class RouteTarget(NamedTuple):
    """One slot behind a deployment and its share of the traffic (any non-negative int).

    A tuple, so it travels as the JSON row ``[role, release_id, host, port, weight]``;
    :meth:`from_row` reads one back.
    """

    role: str
    release_id: int
    host: str
    port: int
    weight: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RouteTarget:
        """The target a JSON row names. Raises ValueError or TypeError on a malformed row."""
        role, release_id, host, port, weight = row
        return cls(str(role), int(release_id), str(host), int(port), int(weight))


class SlotStats(TypedDict):
    """Counters of one (deployment, slot role, release) since the router started."""

    deployment: str
    role: str
    release_id: int
    requests: int
    errors: int
    retries: int
    latency_buckets: list[int]  # answered requests per bucket of domain.latency
    # Chat completions only (the same buckets): time to first token and per output token
    # in ms, output tokens per answer, and their sum.
    ttft_buckets: list[int]
    tpot_buckets: list[int]
    output_token_buckets: list[int]
    output_tokens: int


class ShadowUsage(TypedDict):
    """The bytes shadow traffic holds now across deployments (queued copies and pairs
    waiting to be drained), the most it held since the router started, and the bound."""

    bytes: int
    peak_bytes: int
    max_bytes: int


class RouterStats(TypedDict):
    """The ``stats`` reply; ``unrouted`` counts unknown deployments and paths, ``shadow``
    the bytes mirroring holds, ``gc`` the data-plane process's collector pauses (absent
    from an in-process router)."""

    slots: list[SlotStats]
    unrouted: int
    shadow: NotRequired[ShadowUsage]
    gc: NotRequired[PauseStats]


@dataclass(frozen=True)
class ShadowPair:
    """One mirrored request with blue's answer (what the client got) and green's.

    Bodies are UTF-8 text (undecodable bytes replaced), each cut at :data:`BODY_CAP`
    bytes; ``truncated`` says one was cut. ``green_body`` is None when green failed:
    ``green_error`` then says how (a refused connection, a timeout, an error status).
    ``blue_release`` and ``green_release`` are the releases the copy was taken for and
    sent to (None from a source that does not say).
    """

    request_id: str
    request_body: str
    blue_body: str
    green_body: str | None
    green_error: str | None
    blue_ms: float
    green_ms: float | None
    truncated: bool = False
    blue_release: int | None = None
    green_release: int | None = None


@dataclass(frozen=True)
class ShadowBatch:
    """What mirroring collected since the previous drain.

    ``dropped`` counts copies never sent (the queue in front of green was full, the
    shadow byte bound was reached, or green had no route) and pairs pushed out of the
    full buffer before a drain; ``over_bytes`` is the part of ``dropped`` the byte bound
    caused. ``green_errors`` counts copies green failed or did not answer in time.
    """

    pairs: list[ShadowPair]
    dropped: int
    green_errors: int
    over_bytes: int = 0


class ShadowPage(TypedDict):
    """The ``shadow_pairs`` reply: up to ``limit`` pairs (:class:`ShadowPair`'s fields by
    name), the counters since the previous page, and whether more pairs wait."""

    pairs: list[dict[str, Any]]
    dropped: int
    green_errors: int
    more: bool
    over_bytes: NotRequired[int]


def shadow_batch(pages: Iterable[ShadowPage]) -> ShadowBatch:
    """One batch of the pairs and summed counters of ``pages``. Raises TypeError on a pair
    whose fields are not :class:`ShadowPair`'s."""
    pairs: list[ShadowPair] = []
    dropped = green_errors = over_bytes = 0
    for page in pages:
        pairs.extend(ShadowPair(**pair) for pair in page["pairs"])
        dropped += int(page["dropped"])
        green_errors += int(page["green_errors"])
        over_bytes += int(page.get("over_bytes", 0))
    return ShadowBatch(pairs, dropped, green_errors, over_bytes)


class DataPlaneControl(Protocol):
    """The data plane's control methods, safe from any thread: routes, slot health,
    counters and mirroring."""

    def set_routes(self, deployment: str, routes: Sequence[RouteTarget]) -> None:
        """Replace the deployment's routes atomically. Raises ValueError on a negative
        weight (the client: BackendError if the data plane is down)."""
        ...

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment`` (its requests get 404). Idempotent."""
        ...

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The deployment's routes (empty if it is not routed)."""
        ...

    def mark_down(self, host: str, port: int) -> bool:
        """Stop routing to the slot at ``host:port`` until :meth:`mark_up`; True if it was
        up. Idempotent; stored weights are kept."""
        ...

    def mark_up(self, host: str, port: int) -> None:
        """Route to the slot at ``host:port`` by its weights again. Idempotent."""
        ...

    def is_down(self, host: str, port: int) -> bool:
        """Whether the slot at ``host:port`` is excluded from routing now."""
        ...

    def stats(self) -> RouterStats:
        """Requests, errors, retries and latencies per (deployment, role, release)."""
        ...

    def set_timeouts(
        self, deployment: str, first_byte_s: float | None, idle_s: float | None
    ) -> None:
        """Give the deployment its own first-byte and between-chunks timeouts (None: the
        data plane's default). Idempotent. Raises ValueError (the client: BackendError)
        for a value not above 0."""
        ...

    def set_shadow(self, deployment: str, percent: int, max_queue: int) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of blue's infer requests to green through a
        queue of at most ``max_queue`` copies, for the blue and green releases routed now.
        Stopping, or the routed pair changing, discards the copies queued and the pairs
        not drained yet. Idempotent. Raises ValueError (the client: BackendError) for a
        bad percent or queue, or no green route to mirror to."""
        ...

    def shadow_pairs(self, deployment: str, limit: int) -> ShadowPage:
        """Take up to ``limit`` collected pairs and the counters since the previous call."""
        ...
