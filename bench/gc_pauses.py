"""Garbage-collector pauses in a slot: the same bundle served with and without gc.freeze().

Two slot processes are started directly from release A's bundle, identical but for
``--no-gc-freeze`` on one. The load generator drives both at concurrency 32 over keep-alive
connections, in alternating segments; each slot's own /metrics gives its collections and
pauses over the run.

    python bench/gc_pauses.py [--requests 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import _gc
from _common import goal, goal_rows, run_client, save, summary, table
from _stack import DEPLOYMENT, INFER_BODY, Stack, answers_200, free_port, serve_env, wait_until

VARIANTS = {"gc.freeze": [], "no freeze": ["--no-gc-freeze"]}


@contextmanager
def direct_slot(stack: Stack, flags: list[str]) -> Iterator[str]:
    """A slot serving release A's bundle, started by hand; its base URL."""
    release = stack.api.api("GET", f"/releases/{stack.releases['a']}")
    port = free_port()
    args = [sys.executable, "-m", "bgserve.slot.server"]
    args += ["--model-uri", release["bundle_uri"], "--deployment", DEPLOYMENT]
    args += ["--release-id", "0", "--port", str(port), *flags]
    env = serve_env(stack.tmp / "home", stack.mlflow_uri)
    log = (stack.tmp / f"direct-slot-{port}.log").open("wb")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(proc, url), 180, "a direct slot ready", pause=0.2)
        for _ in range(20):
            answers_200(f"{url}/v2/models/{DEPLOYMENT}/infer", INFER_BODY)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _up(proc: subprocess.Popen[bytes], url: str) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"a direct slot exited with {proc.returncode}")
    return answers_200(f"{url}/v2/health/ready")


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def run(stack: Stack, requests: int, concurrency: int) -> dict[str, Any]:
    """Both variants at ``concurrency``, ``requests`` each, interleaved in 8 rounds."""
    with ExitStack() as slots:
        urls = {name: slots.enter_context(direct_slot(stack, f)) for name, f in VARIANTS.items()}
        spec = {
            "mode": "throughput",
            "concurrency": concurrency,
            "rounds": 8,
            "requests": requests,
            "path": f"/v2/models/{DEPLOYMENT}/infer",
            "body": INFER_BODY.decode(),
            "paths": [{"name": name, "targets": [_address(url)]} for name, url in urls.items()],
        }
        before = _gc.snapshot(None, urls)
        result = run_client(spec)
        pauses = _gc.delta(before, _gc.snapshot(None, urls))
    rows = []
    for name, latencies in result["latencies_ms"].items():
        rows.append(
            {
                "variant": name,
                **summary(latencies),
                "throughput_rps": len(latencies) / result["seconds"][name],
                "failures": result["failures"][name],
                "gc": pauses[name],
            }
        )
    by = {r["variant"]: r for r in rows}
    frozen = by["gc.freeze"]
    out = {
        "concurrency": concurrency,
        "requests_per_variant": requests,
        "rows": rows,
        "goals": [
            goal("requests over 150 ms per 10,000 (gc.freeze)", frozen["over_150ms_per_10k"], 0),
            goal("slot GC pauses over 20 ms (gc.freeze)", frozen["gc"]["over_20ms"], 0),
            goal(
                "throughput gc.freeze / no freeze",
                frozen["throughput_rps"] / by["no freeze"]["throughput_rps"],
                1.0,
                at_least=True,
            ),
        ],
    }
    save("gc_pauses", out)
    return out


def render(result: dict[str, Any]) -> str:
    headers = ["slot", "n", "p50 ms", "p99 ms", "p99.9 ms", "max ms", ">150 ms /10k", "req/s"]
    headers += ["gen2 GCs", "GC >20 ms", "longest GC ms", "frozen"]
    rows = [
        [
            r["variant"],
            r["n"],
            r["p50_ms"],
            r["p99_ms"],
            r["p999_ms"],
            r["max_ms"],
            r["over_150ms_per_10k"],
            round(r["throughput_rps"]),
            r["gc"]["gen2"],
            r["gc"]["over_20ms"],
            r["gc"]["longest_ms_since_start"],
            r["gc"]["frozen"],
        ]
        for r in result["rows"]
    ]
    title = (
        f"GC pauses in a slot: the same bundle with and without gc.freeze(), direct, "
        f"concurrency {result['concurrency']}, {result['requests_per_variant']} requests each"
    )
    return "\n".join(
        [
            title,
            table(headers, rows),
            "",
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with Stack() as stack:
        result = run(stack, args.requests, args.concurrency)
    print(render(result))


if __name__ == "__main__":
    main()
