"""Pairing a gateway's mirrored copies with the live answers, from the slots' records.

A gateway's mirror (Gateway API ``RequestMirror``, Istio ``mirror``) discards green's
answer. Each slot keeps a record of its exchanges (:mod:`bgserve.slot.exchanges`); a
backend drains blue's and green's and this pairs them: blue's exchange and green's with
the same request id *and* the same request digest (a client that reuses a request id for
another input is not paired). Pure: records in, pairs out.

A live request is answered by one slot only, so when blue answered request id R, green's
exchange R is the copy. That holds whether or not the gateway marks copies (Istio's
Envoy appends ``-shadow`` to a copy's host; Envoy Gateway turns that off), so the mark is
used only to leave out copies blue was sent. Two exchanges of one side with one request id
(green answering R live at a weight above 0 *and* as a copy, or a client sending an id
twice) are not paired.

Most live requests are not mirrored, and at a weight above 0 green answers live requests
of its own, so a record that finds no other half within ``wait`` seconds is forgotten
without a count. What the slots pushed out before bgserve drained them is counted as
dropped: each may have been one half of a pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgserve.dataplane.wire import ShadowBatch, ShadowPair

PAIR_WAIT = 30.0
"""Seconds a record waits for its other half."""
PENDING_CAPACITY = 20_000
"""Records each side may hold while waiting; the oldest go first."""
PENDING_BYTES = 64 * 1024 * 1024
"""Bytes of bodies each side may hold while waiting; the oldest go first."""

Record = Mapping[str, Any]


def _size(record: Record) -> int:
    return len(str(record["request_body"])) + len(str(record["answer_body"])) + 256


@dataclass
class _Side:
    """One side's records waiting for their other half, by request id, oldest first."""

    waiting: dict[str, tuple[Record, float]] = field(default_factory=dict)
    held: int = 0  # bytes of the waiting records' bodies

    def put(self, record: Record, now: float) -> None:
        """Keep ``record``; when one with its id already waits, keep neither."""
        request_id = str(record["request_id"])
        if self.take(request_id) is None:
            self.waiting[request_id] = (record, now)
            self.held += _size(record)

    def take(self, request_id: str) -> Record | None:
        """The record waiting under ``request_id``, no longer waiting; None if none."""
        found = self.waiting.pop(request_id, None)
        if found is None:
            return None
        self.held -= _size(found[0])
        return found[0]

    def expire(self, now: float, wait: float, capacity: int, max_bytes: int) -> None:
        """Forget the records older than ``wait`` and the oldest beyond ``capacity`` records
        or ``max_bytes``."""
        for request_id, (_record, at) in list(self.waiting.items()):
            if now - at < wait and len(self.waiting) <= capacity and self.held <= max_bytes:
                break
            self.take(request_id)


class ExchangePairer:
    """Pairs of one deployment, across drains: records wait up to ``wait`` seconds for
    their other half (a drain of blue and one of green never see exactly the same
    moment). A new blue/green pair of releases starts afresh."""

    def __init__(
        self,
        wait: float = PAIR_WAIT,
        capacity: int = PENDING_CAPACITY,
        max_bytes: int = PENDING_BYTES,
    ) -> None:
        self.wait, self.capacity, self.max_bytes = wait, capacity, max_bytes
        self.releases: tuple[int, int] | None = None
        self.live = _Side()
        self.copies = _Side()

    def pair(
        self,
        releases: tuple[int, int],
        blue: Iterable[Record],
        green: Iterable[Record],
        now: float,
        unread: int = 0,
    ) -> ShadowBatch:
        """The pairs the records of ``releases`` (blue's id, green's id) complete, with
        ``unread`` (records the slots pushed out before they were drained) and the
        request ids paired across different inputs counted as dropped. Records of other
        releases, and copies blue was sent, are ignored."""
        if releases != self.releases:
            self.releases, self.live, self.copies = releases, _Side(), _Side()
        blue_id, green_id = releases
        for side in (self.live, self.copies):  # before the new records: they wait from now
            side.expire(now, self.wait, self.capacity, self.max_bytes)
        for record in blue:
            if record["release_id"] == blue_id and not record["mirrored"]:
                self.live.put(record, now)
        for record in green:
            if record["release_id"] == green_id:
                self.copies.put(record, now)
        pairs, mismatched = self._match(releases)
        for side in (self.live, self.copies):
            side.expire(now, self.wait, self.capacity, self.max_bytes)
        errors = sum(p.green_error is not None for p in pairs)
        return ShadowBatch(pairs, unread + mismatched, errors)

    def _match(self, releases: tuple[int, int]) -> tuple[list[ShadowPair], int]:
        pairs, mismatched = [], 0
        for request_id in [r for r in self.copies.waiting if r in self.live.waiting]:
            live, copy = self.live.take(request_id), self.copies.take(request_id)
            if live is None or copy is None:  # not reached: both were waiting
                continue
            if live["digest"] == copy["digest"]:
                pairs.append(shadow_pair(live, copy, releases))
            else:
                mismatched += 1
        return pairs, mismatched


def shadow_pair(live: Record, copy: Record, releases: tuple[int, int]) -> ShadowPair:
    """The pair of blue's live exchange ``live`` and green's mirrored ``copy``; an error
    status of green's is its error (its body then kept out of the comparison)."""
    failed = int(copy["status"]) >= 400
    return ShadowPair(
        request_id=str(live["request_id"]),
        request_body=str(live["request_body"]),
        blue_body=str(live["answer_body"]),
        green_body=None if failed else str(copy["answer_body"]),
        green_error=f"green answered HTTP {copy['status']}" if failed else None,
        blue_ms=float(live["ms"]),
        green_ms=None if failed else float(copy["ms"]),
        truncated=bool(live["truncated"] or copy["truncated"]),
        blue_release=releases[0],
        green_release=releases[1],
    )
