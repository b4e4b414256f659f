"""The demo "summarizer": a small, deterministic, pure-Python text model.

Logged as an MLflow "model from code", so this file is copied into the model and must
stay self-contained (MLflow, pandas and the standard library only).

It summarizes extractively: it takes the text after the prompt's last ``Text:`` marker
(or the whole prompt when there is none), keeps its first sentence and cuts that to
``max_words`` words (model config). Version 1 keeps 12 words, version 2 keeps 8, so the
two agree on short sentences and differ on long ones.
"""

from __future__ import annotations

import re
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

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        """One summary per prompt; a missing ``prompt`` column is a KeyError."""
        return [summarize(str(prompt), self._max_words) for prompt in model_input["prompt"]]


mlflow.models.set_model(Summarizer())
