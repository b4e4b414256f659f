"""Shadow traffic and sticky cohorts: what they add to the client's latency.

One local backend (its data-plane process) serves two deployments with a blue slot and a
green slot at weight 0 each, all four serving the same trivial bundle: ``on`` mirrors
100% of its requests to green, ``off`` mirrors nothing. A client in its own process
calls, one request at a time over one keep-alive connection per path, in blocks that
take turns (blocks, not request by request, so the green work a mirrored request leaves
behind lands on mirrored requests only):

- ``off``: deployment ``off``, no sticky key (the baseline);
- ``shadow``: deployment ``on``, every answer mirrored to green after it is sent;
- ``shadow-stub``: deployment ``stub``, blue the same slot as ``off``'s, every answer
  mirrored to a green that is a trivial HTTP stub: what the data plane itself adds,
  without a second model competing with blue for the machine's cores;
- ``sticky``: deployment ``off`` with an ``x-bgserve-key`` header (a sticky lookup).

Goals: shadow at 100% adds at most 0.1 ms to the client's p50; the sticky lookup adds
nothing measurable (reported against the same 0.1 ms).

    python bench/shadow.py [--requests 3000] [--block 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import goal, goal_rows, save, summary, table

BENCH = Path(__file__).parent
MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return [f"echo:{text}" for text in model_input["text"]]


mlflow.models.set_model(Echo())
"""
BODY = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}'
PATHS = ("off", "shadow", "shadow-stub", "sticky")
STUB_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 59\r\n\r\n"
    b'{"outputs": [{"name": "output", "data": ["echo:hello"]}]}  '
)


def build_bundle(root: Path) -> str:
    """A trivial echo pyfunc bundle saved under ``root``; its path."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = root / "echo.py"
    code.write_text(MODEL_CODE)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "text")]), outputs=Schema([ColSpec("string")])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(str(root / "bundle"), python_model=str(code), signature=signature)
    return str(root / "bundle")


def request(deployment: str, key: str | None = None) -> str:
    head = f"POST /v2/models/{deployment}/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    head += "content-type: application/json\r\n"
    if key is not None:
        head += f"x-bgserve-key: {key}\r\n"
    head += f"content-length: {len(BODY)}\r\n\r\n"
    return head + BODY.decode()


class Stub:
    """A keep-alive HTTP/1.1 server on its own thread answering every request at once."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    writer.write(STUB_ANSWER)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        def run() -> None:
            server = self._loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
            self.port = int(server.sockets[0].getsockname()[1])
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


# ----- the client process -----


def client(spec_path: str, out_path: str) -> None:
    """Blocks of requests per path, taking turns; latencies in ms per path."""
    sys.path.insert(0, str(BENCH))
    from _loadgen import SyncConn

    spec = json.loads(Path(spec_path).read_text())
    target = ("127.0.0.1", spec["port"])
    conns = {name: SyncConn(target, raw.encode()) for name, raw in spec["requests"].items()}
    for conn in conns.values():
        for _ in range(spec["warmup"]):
            conn.call()
    latencies: dict[str, list[float]] = {name: [] for name in conns}
    failures = dict.fromkeys(conns, 0)
    block, rounds = spec["block"], spec["count"] // spec["block"]
    names = list(conns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            conn = conns[name]
            for _ in range(block):
                started = time.perf_counter()
                answer = conn.call()
                latencies[name].append((time.perf_counter() - started) * 1000)
                failures[name] += answer.status != 200 or answer.slot != "blue"
    Path(out_path).write_text(json.dumps({"latencies_ms": latencies, "failures": failures}))


def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bgserve-shadow-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, __file__, "--client", str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the client failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result


# ----- the benchmark -----


def measure(requests: int, block: int) -> dict[str, Any]:
    from bgserve.backends.local.backend import LocalBackend
    from bgserve.backends.local.route_table import RouteTarget
    from bgserve.domain.release import Release
    from bgserve.domain.rollout import Route

    with tempfile.TemporaryDirectory(prefix="bgserve-bench-shadow-") as tmp:
        bundle = build_bundle(Path(tmp))
        backend = LocalBackend(data_port=0, log_dir=Path(tmp) / "logs", ready_timeout=180)
        stub = Stub()
        try:
            for deployment in ("on", "off"):
                for release_id in (1, 2):
                    backend.ensure_slot(deployment, _release(Release, release_id, bundle))
                routes = [Route("blue", 1, 100), Route("green", 2, 0)]
                backend.set_routes(deployment, routes)
            backend.set_shadow("on", 100)
            # The stub's green is no slot of the backend's: route it on the data plane itself.
            backend.ensure_slot("stub", _release(Release, 1, bundle))
            backend.set_routes("stub", [Route("blue", 1, 100)])
            green = RouteTarget("green", 3, "127.0.0.1", stub.port, 0)
            backend.router.set_routes("stub", [*backend.router.routes("stub"), green])
            backend.set_shadow("stub", 100)
            spec = {
                "port": backend.data_port,
                "requests": {
                    "off": request("off"),
                    "shadow": request("on"),
                    "shadow-stub": request("stub"),
                    "sticky": request("off", key="user-42"),
                },
                "count": requests,
                "block": block,
                "warmup": 50,
            }
            result = run_client(spec)
            time.sleep(1.0)  # let green finish the last copies
            batches = [backend.shadow_pairs(name) for name in ("on", "stub")]
        finally:
            backend.close()
            stub.stop()
    pairs = sum(len(b.pairs) for b in batches)
    return {"client": result, "pairs": pairs, "dropped": sum(b.dropped for b in batches)}


def _release(cls: Any, release_id: int, bundle: str) -> Any:
    """A release whose bundle URI is the local bundle directory."""
    from dataclasses import dataclass
    from datetime import UTC, datetime

    @dataclass(frozen=True)
    class LocalRelease(cls):
        local_uri: str = ""

        @property
        def bundle_uri(self) -> str:
            return self.local_uri

    return LocalRelease(
        id=release_id,
        name=f"r{release_id}",
        model_name="m",
        model_version=1,
        prompt_name="p",
        prompt_version=1,
        bundle_name="b",
        bundle_version=release_id,
        created_at=datetime.now(UTC),
        local_uri=bundle,
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per path")
    parser.add_argument("--block", type=int, default=100, help="requests per block")
    args = parser.parse_args()
    measured = measure(args.requests, min(args.block, args.requests))
    latencies = measured["client"]["latencies_ms"]
    stats = {name: summary(latencies[name]) for name in PATHS}
    rows = [
        [
            name,
            stats[name]["n"],
            stats[name]["p50_ms"],
            stats[name]["p90_ms"],
            stats[name]["p99_ms"],
        ]
        for name in PATHS
    ]
    print(table(["path", "requests", "p50 ms", "p90 ms", "p99 ms"], rows))
    shadow_added = stats["shadow"]["p50_ms"] - stats["off"]["p50_ms"]
    stub_added = stats["shadow-stub"]["p50_ms"] - stats["off"]["p50_ms"]
    sticky_added = stats["sticky"]["p50_ms"] - stats["off"]["p50_ms"]
    goals = [
        goal("shadow 100% added p50 (ms)", shadow_added, 0.1),
        goal("shadow 100% to a stub green added p50 (ms)", stub_added, 0.1),
        goal("sticky lookup added p50 (ms)", sticky_added, 0.1),
    ]
    failures = measured["client"]["failures"]
    print(
        f"\nmirrored pairs collected: {measured['pairs']}, dropped: {measured['dropped']} "
        "(the data plane keeps the newest 1,000 per deployment until drained), "
        f"client failures or non-blue answers: {failures}\n"
    )
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    save(
        "shadow",
        {
            "requests_per_path": args.requests,
            "block": args.block,
            "paths": stats,
            "goals": goals,
            "pairs": measured["pairs"],
            "dropped": measured["dropped"],
            "failures": failures,
        },
    )


if __name__ == "__main__":
    main()
