"""The demo "summarizer": a small, deterministic, pure-Python text model.

Logged as an MLflow "model from code", so this file is copied into the model and must
stay self-contained (MLflow, pandas and the standard library only).

It summarizes extractively: it takes the text after the prompt's last ``Text:`` marker
(or the whole prompt when there is none), keeps its first sentence and cuts that to
``max_words`` words (model config). Version 1 keeps 12 words, version 2 keeps 8, so the
two agree on short sentences and differ on long ones. With ``max_chars`` set (the flaky
version), a text longer than that raises, as a model with too small a context would;
with ``delay_ms`` each answer takes that much longer, as a heavier model would.
"""

from __future__ import annotations

import re
import time
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

MARKER = "Text:"
DEFAULT_MAX_WORDS = 12
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def text_part(prompt: str) -> str:
    """The text after the last ``Text:`` marker, or the whole prompt."""
    _, marker, after = prompt.rpartition(MARKER)
    return (after if marker else prompt).strip()


def first_sentence(text: str) -> str:
    """The text up to and including the first ``.``, ``!`` or ``?`` followed by a space."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()


def summarize(prompt: str, max_words: int = DEFAULT_MAX_WORDS) -> str:
    """First sentence of the prompt's text, cut to ``max_words`` words (``...`` marks a cut)."""
    words = first_sentence(text_part(prompt)).split()
    if len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words]).rstrip(",;:") + " ..."


class Summarizer(PythonModel):
    """Answers one summary per row of the ``prompt`` column."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        self._max_words = int(config.get("max_words", DEFAULT_MAX_WORDS))
        self._max_chars = int(config.get("max_chars", 0))
        self._delay_s = int(config.get("delay_ms", 0)) / 1000

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        """One summary per prompt; a missing ``prompt`` column is a KeyError, a text over
        ``max_chars`` (when set) a ValueError."""
        return [self._answer(str(prompt)) for prompt in model_input["prompt"]]

    def _answer(self, prompt: str) -> str:
        if self._delay_s:
            time.sleep(self._delay_s)
        text = text_part(prompt)
        if self._max_chars and len(text) > self._max_chars:
            raise ValueError(f"text of {len(text)} characters is over {self._max_chars}")
        return summarize(prompt, self._max_words)


mlflow.models.set_model(Summarizer())
