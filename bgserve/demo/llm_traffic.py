"""A live chat client for ``bgserve demo --llm``: streamed chat completions through the
router with the ``openai`` SDK, each timed to its first token and its last, per slot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import openai

from bgserve.evaluation.verdict import percentile

QUESTIONS = (
    "What is the capital of Italy?",
    "What do cows drink?",
    "What is the largest ocean?",
    "Name a primary color.",
    "What season comes after winter?",
    "What do you call a baby dog?",
    "What is the boiling point of water in Celsius?",
)
"""The live client's questions, in turn: seven, prime to the router's weight cycles."""


@dataclass
class SlotTimes:
    """One slot's streamed answers: time to first token and generation speed."""

    answers: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_s: float = 0.0
    decode_tokens: int = 0

    def add(self, ttft_ms: float, tokens: int, decode_s: float) -> None:
        self.answers += 1
        self.ttft_ms.append(ttft_ms)
        self.tokens += tokens
        if tokens > 1 and decode_s > 0:
            # Tokens after the first, over the time after it: the rate the model generates.
            self.decode_tokens += tokens - 1
            self.decode_s += decode_s

    def ttft_p(self, q: float) -> float | None:
        return percentile(self.ttft_ms, q)

    @property
    def tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else None


@dataclass
class ChatCounts:
    """What the chat client saw: timings per slot, answers per release, every failure."""

    per_slot: dict[str, SlotTimes] = field(default_factory=dict)
    per_release: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(times.answers for times in self.per_slot.values())

    @property
    def total(self) -> int:
        return self.answered + len(self.failures)


class ChatTraffic:
    """Sends streamed chat completions to ``deployment`` in a background thread until
    stopped, one at a time, and attributes each to the slot and release in its headers."""

    def __init__(self, base_url: str, deployment: str, timeout: float = 120.0) -> None:
        self.deployment = deployment
        # The SDK's own retries would hide a failed request from the count.
        self.client = openai.OpenAI(
            base_url=base_url, api_key="unused", timeout=timeout, max_retries=0
        )
        self.timeout = timeout
        self.counts = ChatCounts()
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-traffic", daemon=True)

    def __enter__(self) -> ChatTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> ChatCounts:
        """Stop after the answer in flight and return the counts."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 5)
        self.client.close()
        return self.snapshot()

    def snapshot(self) -> ChatCounts:
        """A copy of the counts so far."""
        with self._lock:
            return ChatCounts(
                {
                    slot: SlotTimes(
                        t.answers, list(t.ttft_ms), t.tokens, t.decode_s, t.decode_tokens
                    )
                    for slot, t in self.counts.per_slot.items()
                },
                Counter(self.counts.per_release),
                list(self.counts.failures),
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            question = QUESTIONS[self._sent % len(QUESTIONS)]
            self._sent += 1
            try:
                self._ask(question)
            except openai.OpenAIError as exc:
                with self._lock:
                    self.counts.failures.append(f"{type(exc).__name__}: {exc}")

    def _ask(self, question: str) -> None:
        started = time.perf_counter()
        raw = self.client.chat.completions.with_raw_response.create(
            model=self.deployment,
            messages=[],  # the prompt's rendered messages carry the question
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"variables": {"question": question}},
        )
        first: float | None = None
        pieces = 0
        usage_tokens: int | None = None
        for chunk in raw.parse():
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                first = first if first is not None else time.perf_counter()
        ended = time.perf_counter()
        if first is None:
            raise openai.APIError(
                "a streamed answer without any content", raw.http_request, body=None
            )
        tokens = usage_tokens if usage_tokens is not None else pieces
        slot = raw.headers.get("x-bgserve-slot", "?")
        with self._lock:
            times = self.counts.per_slot.setdefault(slot, SlotTimes())
            times.add((first - started) * 1000.0, tokens, ended - first)
            self.counts.per_release[raw.headers.get("x-bgserve-release", "?")] += 1
