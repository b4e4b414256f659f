"""The figures of bench/sse.py from the client's raw stream timings (nanoseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from _common import percentile
from _tail import bootstrap, bootstrap_difference

Stream = dict[str, Any]  # sent_ns, received_ns (content chunks), upstream_sent_ns
RESAMPLES = 2000


def ttft_ms(streams: Sequence[Stream]) -> list[float]:
    """Time to first token of each stream: request sent to first content chunk received."""
    return [(s["received_ns"][0] - s["sent_ns"]) / 1e6 for s in streams if s["received_ns"]]


def proxy_ttft_ms(streams: Sequence[Stream]) -> list[float]:
    """Time to first token without the upstream's own time (request read to first chunk
    written): the two trips, request and first chunk, which is all a proxy can add to."""
    return [_trips_ns(s) / 1e6 for s in streams if s["upstream_sent_ns"]]


def _trips_ns(stream: Stream) -> int:
    upstream_own = stream["upstream_sent_ns"][0] - stream["upstream_request_ns"]
    return int(stream["received_ns"][0] - stream["sent_ns"] - upstream_own)


def relay_ms(streams: Sequence[Stream]) -> list[float]:
    """Every content chunk's trip: the upstream's stamp to the client's receipt."""
    return [
        (got - stamp) / 1e6
        for s in streams
        for got, stamp in zip(s["received_ns"], s["upstream_sent_ns"], strict=True)
    ]


def tokens_per_s(stream: Stream) -> float:
    """Content chunks (one token each from llama.cpp) per second of the whole request."""
    got = stream["received_ns"]
    return len(got) / ((got[-1] - stream["sent_ns"]) / 1e9) if got else float("nan")


def decode_tokens_per_s(stream: Stream) -> float:
    """Tokens per second after the first one (generation without the prompt's prefill)."""
    got = stream["received_ns"]
    return (len(got) - 1) / ((got[-1] - got[0]) / 1e9) if len(got) > 1 else float("nan")


def p50_with_ci(values: Sequence[float]) -> dict[str, Any]:
    """p50 and p90 of ``values`` and a 95% bootstrap interval of the p50."""
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p50_ci_ms": bootstrap(values, 50),
    }


def added(values: Sequence[float], direct: Sequence[float]) -> dict[str, Any]:
    """The p50 a path adds over direct and its 95% bootstrap interval."""
    return {
        "added_p50_ms": percentile(values, 50) - percentile(direct, 50),
        "added_ci_ms": bootstrap_difference(values, direct, 50),
    }


def paired_ratio(top: dict[int, float], bottom: dict[int, float], seed: int = 0) -> dict[str, Any]:
    """The median of the ratios ``top[r] / bottom[r]`` over the rounds both have (a pair
    ran back to back, so the machine's drifting load cancels out) and a 95% bootstrap
    interval of that median."""
    pairs = [(top[r], bottom[r]) for r in sorted(top.keys() & bottom.keys())]
    ratios = np.asarray([a / b for a, b in pairs if b > 0], float)
    if not ratios.size:
        return {"median": float("nan"), "ci": (float("nan"), float("nan")), "pairs": 0}
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(ratios, size=(RESAMPLES, ratios.size)), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    median = float(np.median(ratios))
    return {"median": median, "ci": (float(low), float(high)), "pairs": int(ratios.size)}


def relay_figures(streams: dict[str, list[Stream]]) -> dict[str, dict[str, Any]]:
    """Per path: TTFT as the client saw it; the trips in it (without the upstream's own
    time) and each chunk's relay, p50 with intervals, and what each adds over direct."""
    ttft = {name: proxy_ttft_ms(found) for name, found in streams.items()}
    raw = {name: ttft_ms(found) for name, found in streams.items()}
    relay = {name: relay_ms(found) for name, found in streams.items()}
    figures = {}
    for name in streams:
        figures[name] = {
            "streams": len(streams[name]),
            "ttft_raw": p50_with_ci(raw[name]),
            "ttft": {**p50_with_ci(ttft[name]), **added(ttft[name], ttft["direct"])},
            "relay": {**p50_with_ci(relay[name]), **added(relay[name], relay["direct"])},
        }
    return figures


def llm_figures(streams: dict[str, list[Stream]]) -> dict[str, Any]:
    """Per path: TTFT, tokens per stream, tokens/s (whole request and decode only); and
    the router's tokens/s over direct's, stream by stream."""
    paths = {}
    for name, found in streams.items():
        rates = [tokens_per_s(s) for s in found]
        decode = [decode_tokens_per_s(s) for s in found]
        paths[name] = {
            "streams": len(found),
            "tokens_p50": percentile([len(s["received_ns"]) for s in found], 50),
            "ttft": p50_with_ci(ttft_ms(found)),
            "tokens_per_s_p50": percentile(rates, 50),
            "decode_tokens_per_s_p50": percentile(decode, 50),
        }
    by_round = {
        name: {s["round"]: tokens_per_s(s) for s in found} for name, found in streams.items()
    }
    ratio = paired_ratio(by_round["bgserve"], by_round["direct"])
    return {"paths": paths, "router_over_direct": ratio}
