"""Shadow traffic and sticky cohorts: what they add to the client's latency.

One local backend (its data-plane process) serves one deployment ``demo``: one blue slot,
one green slot serving the same trivial bundle, and a trivial HTTP stub. A client in its
own process calls, one request at a time over one keep-alive connection, in blocks of
requests; before each block it asks this process to switch the deployment to the block's
path, and this process waits until green has answered every copy of the previous block
before it says go. So every path goes through the same blue process and differs from the
others in its mirroring only (two blue processes differ by more than is measured here),
and the green work a block leaves behind lands on no other block. The paths take turns:

- ``off``: no mirroring, no sticky key (the baseline);
- ``shadow``: every request mirrored to green beside blue's call; the backend runs green at
  a background CPU priority while it only answers copies (``shadow_green_nice``);
- ``shadow-stub``: every answer mirrored to the stub instead: what the data plane itself
  adds, without a second model competing with blue for the machine's cores;
- ``sticky``: no mirroring, with an ``x-bgserve-key`` header (a sticky lookup).

Goals: shadow at 100% adds at most 0.1 ms to the client's p50; the sticky lookup adds
nothing measurable (reported against the same 0.1 ms).

    python bench/shadow.py [--requests 3000] [--block 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import goal, goal_rows, save, spread, summary, table
from _tail import bootstrap_difference, by_round

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
    """Blocks of requests per path, taking turns, each after the path is switched on;
    latencies in ms per path."""
    sys.path.insert(0, str(BENCH))
    from _loadgen import SyncConn

    spec = json.loads(Path(spec_path).read_text())
    target = ("127.0.0.1", spec["port"])
    conns = {name: SyncConn(target, raw.encode()) for name, raw in spec["requests"].items()}
    latencies: dict[str, list[float]] = {name: [] for name in conns}
    failures = dict.fromkeys(conns, 0)

    def run_block(name: str, count: int, keep: bool) -> None:
        print(name, count, flush=True)  # switch to this path ...
        sys.stdin.readline()  # ... and wait until it is switched
        conn = conns[name]
        for _ in range(count):
            started = time.perf_counter()
            answer = conn.call()
            if keep:
                latencies[name].append((time.perf_counter() - started) * 1000)
                failures[name] += answer.status != 200 or answer.slot != "blue"

    names = list(conns)
    for name in names:
        run_block(name, spec["warmup"], keep=False)
    block, rounds = spec["block"], spec["count"] // spec["block"]
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run_block(name, block, keep=True)
    Path(out_path).write_text(json.dumps({"latencies_ms": latencies, "failures": failures}))


def run_client(spec: dict[str, Any], switch: Callable[[str, int], None]) -> dict[str, Any]:
    """Run the client process, switching the deployment to each path it asks for."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bgserve-shadow-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        with subprocess.Popen(
            [sys.executable, __file__, "--client", str(spec_path), str(out_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdin is not None and child.stdout is not None
            for line in child.stdout:
                path, count = line.split()
                switch(path, int(count))
                child.stdin.write("go\n")
                child.stdin.flush()
            stderr = child.stderr.read() if child.stderr else ""
        if child.returncode != 0:
            raise RuntimeError(f"the client failed:\n{stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result


# ----- the benchmark -----


class Switch:
    """Puts deployment ``demo`` on one path at a time: its green route and mirroring."""

    def __init__(self, backend: Any, blue: Any, green: Any, stub: Any) -> None:
        self.backend, self.blue, self.green, self.stub = backend, blue, green, stub
        self.pairs = self.dropped = 0
        self.green_nice: int | None = None
        self._copies = 0  # sent in the block that just ended

    def __call__(self, path: str, count: int) -> None:
        """Wait for the copies of the last block, then switch to ``path`` for ``count``
        requests."""
        self._settle()
        mirrored = path in ("shadow", "shadow-stub")
        self._copies = count if mirrored else 0
        green = self.stub if path == "shadow-stub" else self.green
        self.backend.router.set_routes("demo", [self.blue, green])
        self.backend.set_shadow("demo", 100 if mirrored else 0)
        if path == "shadow":
            pid = self.backend.slot_pid("demo", self.green.release_id)
            self.green_nice = os.getpriority(os.PRIO_PROCESS, pid)

    def _settle(self, timeout: float = 30.0) -> None:
        """Wait until green has answered (or dropped) every copy of the last block."""
        deadline = time.monotonic() + timeout
        while self._copies > 0 and time.monotonic() < deadline:
            batch = self.backend.shadow_pairs("demo")
            self.pairs += len(batch.pairs)
            self.dropped += batch.dropped
            self._copies -= len(batch.pairs) + batch.dropped
            time.sleep(0.005)
        if self._copies > 0:
            raise RuntimeError(f"green left {self._copies} copies unanswered for {timeout} s")


def measure(requests: int, block: int) -> dict[str, Any]:
    from bgserve.backends.local.backend import LocalBackend
    from bgserve.dataplane.wire import RouteTarget
    from bgserve.domain.release import Release
    from bgserve.domain.rollout import Route

    with tempfile.TemporaryDirectory(prefix="bgserve-bench-shadow-") as tmp:
        bundle = build_bundle(Path(tmp))
        backend = LocalBackend(data_port=0, log_dir=Path(tmp) / "logs", ready_timeout=180)
        stub = Stub()
        try:
            for release_id in (1, 2):
                backend.ensure_slot("demo", _release(Release, release_id, bundle))
            backend.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
            blue, green = backend.router.routes("demo")
            stubbed = RouteTarget("green", 3, "127.0.0.1", stub.port, 0)
            switch = Switch(backend, blue, green, stubbed)
            spec = {
                "port": backend.data_port,
                "requests": {
                    "off": request("demo"),
                    "shadow": request("demo"),
                    "shadow-stub": request("demo"),
                    "sticky": request("demo", key="user-42"),
                },
                "count": requests,
                "block": block,
                "warmup": 50,
            }
            result = run_client(spec, switch)
            switch("off", 0)
        finally:
            backend.close()
            stub.stop()
    return {
        "client": result,
        "pairs": switch.pairs,
        "dropped": switch.dropped,
        "green_nice": switch.green_nice,
    }


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
    parts = args.requests // min(args.block, args.requests)
    added = {
        name: {
            "p50_ms": stats[name]["p50_ms"] - stats["off"]["p50_ms"],
            "ci_ms": bootstrap_difference(latencies[name], latencies["off"], 50),
            "by_round_ms": spread(
                [
                    a - b
                    for a, b in zip(
                        by_round(latencies[name], parts, 50),
                        by_round(latencies["off"], parts, 50),
                        strict=True,
                    )
                ]
            ),
        }
        for name in PATHS[1:]
    }
    print(
        "\np50 added over off: its 95% bootstrap interval (each path resampled) and its "
        "spread over the rounds (block against block; what drifts between blocks widens it):"
    )
    print(
        table(
            ["path", "added ms", "95% CI ms", "by round: min / median / max ms"],
            [
                [
                    name,
                    round(a["p50_ms"], 3),
                    "{:.3f} to {:.3f}".format(*a["ci_ms"]),
                    "{min:.2f} / {median:.2f} / {max:.2f}".format(**a["by_round_ms"]),
                ]
                for name, a in added.items()
            ],
        )
    )
    shadow_added = added["shadow"]["p50_ms"]
    stub_added = added["shadow-stub"]["p50_ms"]
    sticky_added = added["sticky"]["p50_ms"]
    goals = [
        goal("shadow 100% added p50 (ms)", shadow_added, 0.1),
        goal("shadow 100% to a stub green added p50 (ms)", stub_added, 0.1),
        goal("sticky lookup added p50 (ms)", sticky_added, 0.1),
    ]
    failures = measured["client"]["failures"]
    print(
        f"\nmirrored pairs collected: {measured['pairs']}, dropped: {measured['dropped']} "
        "(the data plane keeps the newest 1,000 per deployment until drained), "
        f"client failures or non-blue answers: {failures}; green's nice value while "
        f"mirroring: {measured['green_nice']}\n"
    )
    print(table(["goal", "measured", "limit", "met"], goal_rows(goals)))
    save(
        "shadow",
        {
            "requests_per_path": args.requests,
            "block": args.block,
            "paths": stats,
            "added_p50": added,
            "goals": goals,
            "pairs": measured["pairs"],
            "dropped": measured["dropped"],
            "failures": failures,
            "green_nice": measured["green_nice"],
        },
    )


if __name__ == "__main__":
    main()
