"""The dashboard's first load with many deployments, and what it costs the data plane.

On a real stack (MLflow on SQLite, `bgserve serve` with the local backend, one slot
process per deployment) with ``--deployments`` deployments (the stack's own, with blue
and green, plus blue-only ones), it times:

* the server: the first GET of /ui and of a deployment page, then ``--repeats`` more
  of each (median, p95), over one keep-alive connection on loopback;
* Debian's Chromium (headless, through Playwright, when installed): a fresh browser
  context a load (nothing cached: HTML, CSS and script), until the ``load`` event;
* the data plane: requests counted per slot before and after every page load above
  (the dashboard sends none; it reads the counters at most once a second).

    python bench/ui.py [--deployments 20] [--repeats 50]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from _common import goal, goal_rows, percentile, save, table
from _stack import DEPLOYMENT, Stack

CHROMIUM = Path("/usr/bin/chromium")
FIRST_LOAD_GOAL_MS = 200.0


def add_deployments(stack: Stack, count: int) -> list[str]:
    """Blue-only deployments of release A, up to ``count`` in all; every name."""
    names = [DEPLOYMENT]
    for i in range(1, count):
        name = f"svc-{i:02d}"
        stack.api.api("POST", "/deployments", {"name": name, "release_id": stack.releases["a"]})
        names.append(name)
    return names


def timed_get(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
    return elapsed


def served(base: str, paths: dict[str, str], repeats: int) -> dict[str, dict[str, float]]:
    """First and repeated load times of each page, as the server answers them."""
    out: dict[str, dict[str, float]] = {}
    with httpx.Client(timeout=30) as client:
        for label, path in paths.items():
            first = timed_get(client, base + path)
            rest = [timed_get(client, base + path) for _ in range(repeats)]
            out[label] = {
                "first_ms": first,
                "median_ms": statistics.median(rest),
                "p95_ms": percentile(rest, 95),
            }
    return out


def in_browser(base: str, paths: dict[str, str], loads: int) -> dict[str, dict[str, float]]:
    """Until the load event in headless Chromium, each load a first one: a fresh browser
    context (empty cache: HTML, CSS and script all fetched)."""
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, float]] = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        for label, path in paths.items():
            times = [_fresh_load(browser, base + path) for _ in range(loads + 1)]
            out[label] = {  # the very first also starts the browser's first renderer
                "first_ms": times[0],
                "median_ms": statistics.median(times[1:]),
                "p95_ms": percentile(times[1:], 95),
            }
        browser.close()
    return out


def _fresh_load(browser: Any, url: str) -> float:
    context = browser.new_context()
    page = context.new_page()
    page.goto(url, wait_until="load")
    took = float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
    context.close()
    return took


def data_plane_requests(base: str) -> int:
    """Requests the data plane has counted, all slots together (from /metrics)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return int(
        sum(float(v) for v in re.findall(r"^bgserve_requests_total\{[^}]*\} (\S+)$", text, re.M))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    with Stack() as stack:
        names = add_deployments(stack, args.deployments)
        base = stack.api.url
        paths = {"list (/ui)": "/ui", f"deployment (/ui/d/{DEPLOYMENT})": f"/ui/d/{DEPLOYMENT}"}
        before = data_plane_requests(base)
        server = served(base, paths, args.repeats)
        browser: dict[str, dict[str, float]] = {}
        if CHROMIUM.exists():
            browser = in_browser(base, paths, max(args.repeats // 2, 5))
        sent = data_plane_requests(base) - before
    rows: list[list[Any]] = []
    for where, found in (("server", server), ("chromium", browser)):
        for label, numbers in found.items():
            rows.append(
                [f"{where}: {label}", numbers["first_ms"], numbers["median_ms"], numbers["p95_ms"]]
            )
    print(f"{len(names)} deployments on the local backend")
    print(table(["page", "first ms", "median ms", "p95 ms"], rows))
    print(
        "(chromium: each load in a fresh context, nothing cached; "
        "median and p95 of those after the first)"
    )
    # A first load: Chromium with an empty cache (median of fresh contexts), else the server's.
    key = "median_ms" if browser else "first_ms"
    first = max(n[key] for n in (browser or server).values())
    goals = [
        goal("first load, slowest page (ms)", first, FIRST_LOAD_GOAL_MS),
        goal("requests the pages sent to the data plane", float(sent), 0.0),
    ]
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    if not browser:
        print(f"(no {CHROMIUM}: browser timings skipped)")
    path = save(
        "ui",
        {
            "deployments": len(names),
            "server": server,
            "browser": browser,
            "data_plane_requests": sent,
            "goals": goals,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
