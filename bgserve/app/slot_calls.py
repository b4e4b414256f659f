"""Calls of golden cases to slots, directly: OIP v2 bodies, answers, tokens, and the
measured rounds (warm-up, one call a case, repeated calls for the latency probe).

A slot whose release has a chat prompt is asked on its OpenAI route
(``/openai/v1/chat/completions``, ``model`` = the deployment): the case's ``messages``
follow the prompt's rendered ones in the slot, its variables go in ``variables``, and the
answer is ``choices[0].message.content``. Other slots get OIP v2 infer bodies.

Concurrency bounds the requests in flight; blue's and green's calls of a case are queued
side by side, so both slots see the same load while they are measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bgserve.evaluation.comparison import SlotResult
from bgserve.evaluation.golden import GoldenCase

__all__ = [
    "QueryPlan",
    "SlotTarget",
    "chat_answer",
    "chat_request",
    "oip_request",
    "output_text",
    "query_slots",
    "reported_tokens",
    "warm_slot",
]


@dataclass(frozen=True)
class SlotTarget:
    """One slot to query: its infer URL and the template variables it takes; with
    ``chat_url`` (a chat release) its OpenAI chat route, asked as ``model``; with
    ``headers`` each call's body is sent with the headers it gives for that body (a
    platform's signature, see :class:`bgserve.backends.base.SlotCall`)."""

    infer_url: str
    variables: Sequence[str]
    chat_url: str | None = None
    model: str = ""
    headers: Callable[[bytes], Mapping[str, str]] | None = None


def chat_request(model: str, case: GoldenCase, variables: Sequence[str]) -> dict[str, object]:
    """An OpenAI chat completion body: the case's messages (the slot puts the prompt's
    first) and the template variables in ``variables``."""
    messages = [m.model_dump() for m in case.messages or ()]
    return {
        "model": model,
        "messages": messages,
        "variables": {v: case.inputs[v] for v in variables},
    }


def chat_answer(body: object) -> tuple[str, int | None]:
    """``choices[0].message.content`` of an OpenAI chat completion and the reported
    ``usage.completion_tokens`` (None when absent). Raises ValueError."""
    choices = body.get("choices") if isinstance(body, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError("answer has no choices[0].message.content")
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = _count(usage.get("completion_tokens")) if isinstance(usage, dict) else None
    return content, tokens


def _call(target: SlotTarget, case: GoldenCase) -> tuple[str, dict[str, object]]:
    if target.chat_url is not None:
        return target.chat_url, chat_request(target.model, case, target.variables)
    return target.infer_url, oip_request(case.inputs, target.variables)


def _answer(target: SlotTarget, body: object) -> tuple[str, int | None]:
    if target.chat_url is not None:
        return chat_answer(body)
    return output_text(body), reported_tokens(body)


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


def reported_tokens(body: object) -> int | None:
    """The output tokens the model reported: an ``output_tokens`` tensor, or
    ``parameters.usage.completion_tokens`` / ``output_tokens``; None when absent."""
    if not isinstance(body, dict):
        return None
    for tensor in body.get("outputs") or []:
        if (
            isinstance(tensor, dict)
            and tensor.get("name") == "output_tokens"
            and tensor.get("data")
        ):
            return _count(tensor["data"][0])
    parameters = body.get("parameters")
    usage = parameters.get("usage") if isinstance(parameters, dict) else None
    if isinstance(usage, dict):
        return _count(usage.get("completion_tokens", usage.get("output_tokens")))
    return None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _post(
    session: aiohttp.ClientSession, target: SlotTarget, url: str, request: dict[str, object]
) -> Any:
    if target.headers is None:
        return session.post(url, json=request)
    body = json.dumps(request).encode()
    return session.post(url, data=body, headers=dict(target.headers(body)))


async def _ask(
    session: aiohttp.ClientSession,
    target: SlotTarget,
    case: GoldenCase,
    gate: asyncio.Semaphore,
) -> SlotResult:
    async with gate:
        started = time.perf_counter()
        url, request = _call(target, case)
        try:
            async with _post(session, target, url, request) as response:
                text = await response.text()
            latency = (time.perf_counter() - started) * 1000
            if response.status != 200:
                return SlotResult(
                    output=None, latency_ms=latency, error=f"HTTP {response.status}: {text[:300]}"
                )
            output, tokens = _answer(target, json.loads(text))
            return SlotResult(output=output, latency_ms=latency, output_tokens=tokens)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            latency = (time.perf_counter() - started) * 1000
            return SlotResult(output=None, latency_ms=latency, error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class QueryPlan:
    """How the slots are called: requests in flight, warm-up calls a slot before any
    measurement, and how many times each of the first ``probe_cases`` cases is called."""

    concurrency: int
    timeout: float
    warmup: int = 2
    repeats: int = 3
    probe_cases: int = 20


async def _round(
    client: aiohttp.ClientSession,
    targets: Sequence[SlotTarget],
    cases: Sequence[GoldenCase],
    gate: asyncio.Semaphore,
) -> list[list[SlotResult]]:
    """Every case on every target, the targets' calls of one case queued side by side."""
    calls = [_ask(client, target, case, gate) for case in cases for target in targets]
    flat = await asyncio.gather(*calls)
    return [list(flat[t :: len(targets)]) for t in range(len(targets))]


def _with_probe(first: SlotResult, again: Sequence[SlotResult]) -> SlotResult:
    if first.error is not None:
        return first
    samples = (first.latency_ms, *(r.latency_ms for r in again if r.error is None))
    return first.model_copy(update={"probe_ms": samples})


async def _ask_all(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], plan: QueryPlan
) -> list[dict[str, SlotResult]]:
    gate = asyncio.Semaphore(plan.concurrency)
    # aiohttp rather than httpx here: at hundreds of calls a second, httpx's connection
    # pool costs more CPU than the slots' answers (bench/compare.py).
    connector = aiohttp.TCPConnector(limit=plan.concurrency * len(targets))
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        # A slot's first calls pay for connections, caches and lazy loading: not measured.
        await _round(client, targets, list(cases[:1]) * plan.warmup, gate)
        probed = list(cases[: plan.probe_cases]) if plan.repeats > 1 else []
        # One round, the repeated calls queued after the first ones: no pause between them.
        answers = await _round(client, targets, [*cases, *probed * (plan.repeats - 1)], gate)
    results = []
    for side in answers:
        first, again = side[: len(cases)], side[len(cases) :]
        repeats = [again[i :: len(probed)] for i in range(len(probed))]
        results.append(
            {
                case.id: _with_probe(first[i], repeats[i]) if i < len(probed) else first[i]
                for i, case in enumerate(cases)
            }
        )
    return results


def query_slots(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], plan: QueryPlan
) -> list[dict[str, SlotResult]]:
    """Each target's answer to every case, by case id (blocking; runs its own loop)."""
    return asyncio.run(_ask_all(targets, cases, plan))


@dataclass(frozen=True)
class WarmupResult:
    """What a warm-up did to one slot: calls answered (failed ones included), failed,
    how long it took, and whether it ran out of time first."""

    answered: int
    failed: int
    seconds: float
    timed_out: bool


async def _warm(
    target: SlotTarget,
    cases: Sequence[GoldenCase],
    requests: int,
    concurrency: int,
    answers: list[SlotResult],
) -> None:
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one(case: GoldenCase) -> None:
            answers.append(await _ask(client, target, case, gate))

        await asyncio.gather(*(one(cases[i % len(cases)]) for i in range(requests)))


def warm_slot(
    target: SlotTarget,
    cases: Sequence[GoldenCase],
    requests: int,
    *,
    concurrency: int,
    timeout: float,
) -> WarmupResult:
    """Send ``requests`` calls of ``cases`` (round robin) to one slot, ``concurrency`` at
    a time, for at most ``timeout`` seconds in all (blocking). Never raises for the slot's
    answers: they are only counted."""
    started = time.perf_counter()
    answers: list[SlotResult] = []
    timed_out = False
    if requests > 0 and cases:
        work = _warm(target, cases, requests, concurrency, answers)
        try:
            asyncio.run(asyncio.wait_for(work, timeout))
        except TimeoutError:
            timed_out = True
    failed = sum(1 for r in answers if r.error is not None)
    return WarmupResult(len(answers), failed, round(time.perf_counter() - started, 3), timed_out)
