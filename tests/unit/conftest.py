"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bgserve.domain.release import ResolvedRelease
from bgserve.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite state store holding releases r1, r2 and r3 (ids 1 to 3)."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    for n in (1, 2, 3):
        resolved = ResolvedRelease("m", n, "p", n, "bundle", n)
        store.add_release(f"r{n}", resolved, f"models:/m/{n}", f"prompts:/p/{n}", datetime.now(UTC))
    yield store
    store.close()
