"""The pairwise LLM judge: an OpenAI-compatible chat-completions endpoint asked, case by
case, which of blue's and green's answers better fulfils a rubric.

Any OpenAI-compatible API works, a bgserve deployment included: its base URL is the
router's ``/openai/v1`` and its model the deployment's name (its prompt's messages then
come before the judge's; ``variables`` fills that prompt's template variables, if any).

Temperature 0, the order drawn per case (:func:`bgserve.domain.judging.green_first`) and,
with ``both_orders``, asked both ways. A failed call or an unreadable reply makes that
case's outcome ``error``; it never fails the comparison by itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from bgserve.domain.comparison import SlotResult
from bgserve.domain.golden import GoldenCase
from bgserve.domain.judging import (
    DEFAULT_RUBRIC,
    Choice,
    Judgement,
    combine,
    green_first,
    judge_messages,
    parse_choice,
)

__all__ = ["JudgeSettings", "PairwiseJudge"]


@dataclass(frozen=True)
class JudgeSettings:
    """Where the judge is and how it is asked."""

    url: str
    """Base URL of the API; ``/chat/completions`` is appended (e.g. ``.../v1``)."""
    model: str
    api_key_env: str = "BGSERVE_JUDGE_API_KEY"
    rubric: str = DEFAULT_RUBRIC
    both_orders: bool = False
    seed: str = "bgserve"
    timeout_seconds: float = 60.0
    variables: Mapping[str, str] | None = None
    """Sent as the top-level ``variables`` of each request (a bgserve deployment's prompt
    variables); omitted when None, as other APIs may refuse unknown fields."""


class PairwiseJudge:
    """Asks the judge about every case both slots answered."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings

    @property
    def endpoint(self) -> str:
        """The chat-completions URL."""
        return self.settings.url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.settings.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def judge_all(
        self,
        cases: Sequence[GoldenCase],
        blue: Mapping[str, SlotResult],
        green: Mapping[str, SlotResult],
        concurrency: int,
        rubric: str | None = None,
    ) -> dict[str, Judgement]:
        """A judgement for every case both sides answered, by case id."""
        gate = asyncio.Semaphore(concurrency)
        answered = [
            c for c in cases if blue[c.id].output is not None and green[c.id].output is not None
        ]
        async with httpx.AsyncClient(
            timeout=self.settings.timeout_seconds, headers=self._headers()
        ) as client:
            found = await asyncio.gather(
                *(
                    self._judge(client, gate, case, blue[case.id], green[case.id], rubric)
                    for case in answered
                )
            )
        return {case.id: judgement for case, judgement in zip(answered, found, strict=True)}

    async def _judge(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        case: GoldenCase,
        blue: SlotResult,
        green: SlotResult,
        rubric: str | None,
    ) -> Judgement:
        first = green_first(case.id, self.settings.seed)
        orders = [first, not first] if self.settings.both_orders else [first]
        answers: list[tuple[bool, Choice]] = []
        try:
            for green_is_a in orders:
                a, b = (green, blue) if green_is_a else (blue, green)
                async with gate:
                    choice = await self._ask(client, case, a.output or "", b.output or "", rubric)
                answers.append((green_is_a, choice))
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            return Judgement(outcome="error", orders=[], error=f"{type(exc).__name__}: {exc}")
        return combine(answers)

    async def _ask(
        self, client: httpx.AsyncClient, case: GoldenCase, a: str, b: str, rubric: str | None
    ) -> Choice:
        conversation = [(m.role, m.content) for m in case.messages or ()]
        messages = judge_messages(rubric or self.settings.rubric, case.inputs, a, b, conversation)
        body: dict[str, object] = {
            "model": self.settings.model,
            "temperature": 0,
            "messages": messages,
        }
        if self.settings.variables is not None:
            body["variables"] = dict(self.settings.variables)
        response = await client.post(self.endpoint, json=body)
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code} from the judge: {response.text[:200]}")
        content = response.json()["choices"][0]["message"]["content"]
        return parse_choice(str(content))
