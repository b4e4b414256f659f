"""One rule for a test whose real dependency is missing: it fails under ``CI=true`` (CI
installs everything) and skips elsewhere, saying what to install."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``)."""
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Fail (under CI) or skip (elsewhere) the current test because ``reason``."""
    if in_ci():
        pytest.fail(f"CI needs this dependency: {reason}")
    pytest.skip(reason)
