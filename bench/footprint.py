"""Footprint: resident memory of bgserve and of each slot at rest and under load; cold start.

RSS is read with psutil from the `bgserve serve` process and its slot children, at rest
and (sampled, the peak kept) while the load generator drives the router at concurrency
32. Cold start is timed on a fresh state directory: spawn `bgserve serve` until /readyz
answers 200 with no deployment, then with one deployment after a restart (ready once
its slot is up) and until the data plane answers the first inference.

    python bench/footprint.py [--load-requests 4000]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import psutil
from _common import goal_rows, run_client, save, table
from _stack import DEPLOYMENT, INFER_BODY, Serve, Stack, answers_200, spawn_serve, wait_ready
from _stack import wait_until as poll

MB = 1024 * 1024


def processes(serve_pid: int) -> dict[str, psutil.Process]:
    """bgserve and its slots, labelled by role."""
    root = psutil.Process(serve_pid)
    found = {"bgserve serve": root}
    for child in root.children(recursive=True):
        args = child.cmdline()
        if "--release-id" in args:
            found[f"slot (release {args[args.index('--release-id') + 1]})"] = child
        elif "bgserve.dataplane.main" in args:
            found["data plane"] = child
    return found


def rss(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: proc.memory_info().rss / MB for name, proc in procs.items()}


def rss_under_load(
    stack: Stack, procs: dict[str, psutil.Process], requests: int
) -> dict[str, float]:
    """Peak RSS of each process while the client sends ``requests`` at concurrency 32."""
    peak = rss(procs)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for name, value in rss(procs).items():
                peak[name] = max(peak[name], value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    spec = {
        "mode": "throughput",
        "concurrency": 32,
        "rounds": 1,
        "requests": requests,
        "path": f"/v2/models/{DEPLOYMENT}/infer",
        "body": INFER_BODY.decode(),
        "paths": [{"name": "bgserve", "targets": [("127.0.0.1", stack.api.data_port)]}],
    }
    try:
        result = run_client(spec)
    finally:
        done.set()
        sampler.join()
    peak["_throughput_rps"] = requests / result["seconds"]["bgserve"]
    return peak


def cold_start(stack: Stack) -> dict[str, float]:
    """Seconds to ready: empty state, then one deployment after a restart."""
    home = stack.tmp / "cold"
    started = time.monotonic()
    serve = spawn_serve(home, stack.mlflow_uri)
    try:
        wait_ready(serve, 120)
        empty = time.monotonic() - started
        body = {
            "name": "cold",
            "model_uri": "models:/summarizer/1",
            "prompt_uri": "prompts:/summarize/1",
        }
        release = serve.api("POST", "/releases", body)["id"]
        serve.api("POST", "/deployments", {"name": DEPLOYMENT, "release_id": release})
    finally:
        serve.stop()
    started = time.monotonic()
    serve = spawn_serve(home, stack.mlflow_uri)
    try:
        wait_ready(serve, 180)
        with_slot = time.monotonic() - started
        first_answer(serve)
        answered = time.monotonic() - started
    finally:
        serve.stop()
    return {
        "empty_ready_s": empty,
        "one_deployment_ready_s": with_slot,
        "one_deployment_first_answer_s": answered,
    }


def first_answer(serve: Serve) -> None:
    poll(lambda: answers_200(serve.infer_url(), INFER_BODY), 60, "first inference")


def run(stack: Stack, load_requests: int) -> dict[str, Any]:
    stack.set_green_weight(0)
    procs = processes(stack.api.proc.pid)
    at_rest = rss(procs)
    loaded = rss_under_load(stack, procs, load_requests)
    throughput = loaded.pop("_throughput_rps")
    result = {
        "rss_mb": [
            {"process": name, "at_rest": at_rest[name], "under_load": loaded[name]}
            for name in procs
        ],
        "load": {"requests": load_requests, "concurrency": 32, "throughput_rps": throughput},
        "cold_start": cold_start(stack),
        "goals": [],
    }
    save("footprint", result)
    return result


def render(result: dict[str, Any]) -> str:
    load = result["load"]
    rows = [[r["process"], r["at_rest"], r["under_load"]] for r in result["rss_mb"]]
    cold = result["cold_start"]
    starts = [
        ["bgserve serve to /readyz, no deployment", cold["empty_ready_s"]],
        ["bgserve serve to /readyz, one deployment (slot up)", cold["one_deployment_ready_s"]],
        ["bgserve serve to first inference answered", cold["one_deployment_first_answer_s"]],
    ]
    title = (
        f"Footprint: RSS at rest and peak under load ({load['requests']} requests at "
        f"concurrency {load['concurrency']}, {load['throughput_rps']:.0f} requests/s)"
    )
    parts = [
        title,
        table(["process", "RSS at rest MB", "RSS under load MB"], rows),
        "",
        table(["cold start", "seconds"], starts),
    ]
    if result["goals"]:
        parts += ["", table(["goal", "measured", "limit", "met"], goal_rows(result["goals"]))]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-requests", type=int, default=4000)
    args = parser.parse_args()
    with Stack() as stack:
        result = run(stack, args.load_requests)
    print(render(result))


if __name__ == "__main__":
    main()
