"""Analysis windows for the live-analysis tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bgserve.domain.window import SideWindow


def in_slices(pieces: Sequence[SideWindow]) -> SideWindow:
    """The window made of ``pieces`` in turn: their sum, cut into them as its slices (as
    the rollout engine cuts a step's window)."""
    whole = SideWindow()
    for piece in pieces:
        whole = whole.plus(piece)
    return replace(whole, slices=tuple(pieces))
