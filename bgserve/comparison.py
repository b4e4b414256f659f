"""The I/O half of a comparison: send every golden case to two slots, directly.

Bounded concurrency and a per-request timeout; each answer becomes a
:class:`~bgserve.domain.compare.SlotResult` for the pure scorer. Nothing here goes
through the weighted router, so a comparison never moves or counts live traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from bgserve.domain.compare import SlotResult
from bgserve.domain.golden import GoldenCase


@dataclass(frozen=True)
class SlotTarget:
    """One slot to query: its infer URL and the template variables it takes."""

    infer_url: str
    variables: Sequence[str]


def oip_request(inputs: Mapping[str, str], variables: Sequence[str]) -> dict[str, object]:
    """An OIP v2 infer body with one BYTES input per variable."""
    return {
        "inputs": [
            {"name": v, "datatype": "BYTES", "shape": [1], "data": [inputs[v]]} for v in variables
        ]
    }


def output_text(body: object) -> str:
    """The text of the ``output`` tensor of an OIP v2 answer. Raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("answer is not a JSON object")
    for tensor in body.get("outputs") or []:
        if isinstance(tensor, dict) and tensor.get("name") == "output" and tensor.get("data"):
            return str(tensor["data"][0])
    raise ValueError("answer has no 'output' tensor")


async def _ask(
    client: httpx.AsyncClient, target: SlotTarget, case: GoldenCase, gate: asyncio.Semaphore
) -> SlotResult:
    async with gate:
        started = time.perf_counter()
        try:
            response = await client.post(
                target.infer_url, json=oip_request(case.inputs, target.variables)
            )
            latency = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                return SlotResult(
                    output=None,
                    latency_ms=latency,
                    error=f"HTTP {response.status_code}: {response.text[:300]}",
                )
            return SlotResult(output=output_text(response.json()), latency_ms=latency, error=None)
        except (httpx.HTTPError, ValueError) as exc:
            latency = (time.perf_counter() - started) * 1000
            return SlotResult(output=None, latency_ms=latency, error=f"{type(exc).__name__}: {exc}")


async def _ask_all(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], concurrency: int, timeout: float
) -> list[dict[str, SlotResult]]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * len(targets))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        per_target = [
            asyncio.gather(*(_ask(client, target, case, gate) for case in cases))
            for target in targets
        ]
        answers = await asyncio.gather(*per_target)
    return [
        {case.id: result for case, result in zip(cases, results, strict=True)}
        for results in answers
    ]


def query_slots(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], *, concurrency: int, timeout: float
) -> list[dict[str, SlotResult]]:
    """Each target's answer to every case, by case id (blocking; runs its own loop)."""
    return asyncio.run(_ask_all(targets, cases, concurrency, timeout))
