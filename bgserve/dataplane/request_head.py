"""What the router reads from a request's head besides its path: the sticky key that
pins a client to a slot, and the bearer token that guards the data plane."""

from __future__ import annotations

import hmac

from bgserve.dataplane.http1 import Request
from bgserve.dataplane.route_table import Table


class SlotPicker:
    """Picks a request's slot: its sticky key's if it carries ``sticky_header`` (None turns
    stickiness off), else the next one of the table's weighted round-robin."""

    __slots__ = ("_needle",)

    def __init__(self, sticky_header: str | None) -> None:
        self._needle = b"\r\n%s:" % sticky_header.lower().encode() if sticky_header else None

    @property
    def sticky(self) -> bool:
        """Whether sticky keys are on."""
        return self._needle is not None

    def pick(self, request: Request, table: Table, fallback: bytes | None = None) -> int | None:
        """The sticky key's slot if the request carries the sticky header (else the
        ``fallback`` key's, if given), else the next one in the weighted round-robin."""
        needle = self._needle
        if needle is not None:
            head = request.upstream_head
            at = head.lower().find(needle)
            if at >= 0:
                start = at + len(needle)
                key = head[start : head.find(b"\r\n", start)].strip()
                if key:
                    return table.pick_sticky(key)
        if fallback is not None:
            return table.pick_sticky(fallback)
        return table.pick()


def bearer_matches(head: bytes, token: bytes) -> bool:
    """Whether the head carries exactly one ``Authorization: Bearer <token>`` (compared in
    constant time)."""
    found = [
        value
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if name.strip().lower() == b"authorization"
    ]
    if len(found) != 1:
        return False
    scheme, _, credential = found[0].strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), token)
