"""Checks every cloud backend's tests share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bgserve.backends.base import Backend
from bgserve.domain.state import Route
from bgserve.errors import BackendError
from tests.support.kube import RELEASES


def assert_never_changes_an_unmanaged_endpoint(
    backend: Backend, left: Callable[[], object]
) -> None:
    """Staging, routing and retiring on ``chat``, whose endpoint bgserve did not create, are
    each refused naming the prefix setting (the way out), and ``left()`` (the stand-in's
    state) is as before."""
    before = left()
    for attempt in (
        lambda: backend.ensure_slot("chat", RELEASES[2]),
        lambda: backend.set_routes("chat", [Route("blue", 1, 100)]),
        lambda: backend.retire_slot("chat", 1),
    ):
        with pytest.raises(BackendError, match=r"not managed by bgserve.*NAME_PREFIX"):
            attempt()
    assert left() == before
