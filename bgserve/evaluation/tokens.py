"""Output tokens of an answer and what they cost. Pure.

A bundle that reports its model's usage (an ``output_tokens`` output tensor, or
``parameters.usage.completion_tokens`` / ``output_tokens`` in its answer) is taken at its
word. Otherwise the count is approximated as one token for every four characters, rounded
up: the rule of thumb OpenAI documents for English text with BPE tokenizers. Both sides are
counted the same way, so the ratio the gate compares is fair even where the approximation
is rough (code, other scripts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

__all__ = ["CHARS_PER_TOKEN", "TokenSummary", "approximate_tokens", "summarize_tokens"]

CHARS_PER_TOKEN = 4


def approximate_tokens(text: str) -> int:
    """The approximate token count of ``text``: ``ceil(characters / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class TokenSummary(BaseModel):
    """Mean output tokens an answer on each side, their ratio and, with a price, the cost."""

    blue_mean: float | None
    green_mean: float | None
    ratio: float | None
    approximate: bool
    """True when at least one count is the approximation, not the model's own."""
    price_per_1k: float | None = None
    blue_cost_per_request: float | None = None
    green_cost_per_request: float | None = None


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_tokens(
    blue: Sequence[int], green: Sequence[int], approximate: bool, price_per_1k: float | None
) -> TokenSummary:
    """The token summary of the answered cases' counts on each side."""
    blue_mean, green_mean = _mean(blue), _mean(green)
    ratio = None
    if blue_mean is not None and green_mean is not None:
        ratio = green_mean / blue_mean if blue_mean > 0 else None
    return TokenSummary(
        blue_mean=blue_mean,
        green_mean=green_mean,
        ratio=ratio,
        approximate=approximate,
        price_per_1k=price_per_1k,
        blue_cost_per_request=_cost(blue_mean, price_per_1k),
        green_cost_per_request=_cost(green_mean, price_per_1k),
    )


def _cost(mean: float | None, price_per_1k: float | None) -> float | None:
    if mean is None or price_per_1k is None:
        return None
    return mean * price_per_1k / 1000
