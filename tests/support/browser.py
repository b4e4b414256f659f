"""A real headless Chromium for the dashboard and cross-site tests (Playwright drives it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.missing import missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path(os.environ.get("BGSERVE_CHROMIUM", "/usr/bin/chromium"))
WAIT_MS = 30_000


@contextmanager
def chromium(*args: str) -> Iterator[Browser]:
    """Chromium launched headless with ``args``; fails under CI (skips elsewhere) when
    Playwright or the browser is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        missing("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} (apt-get install chromium chromium-driver; tools/test-servers.sh)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(args)
        )
        yield launched
        launched.close()
