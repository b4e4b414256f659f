"""Golden cases answered by a base model with one prompt, as a release's bundle answers them.

A text template is rendered and sent through the base model's ``predict``. A chat prompt's
messages are rendered, the case's own messages follow, and an LLM base model is asked
with ``chat`` under the prompt's generation settings and response_format, by the
bundle's own rule (:func:`bgserve.registry.bundle_model.generation_params`); a base model
that is not an LLM gets the rendered contents joined, as the bundle gives them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bgserve.app.slot_calls import chat_answer
from bgserve.errors import BgserveError, InvalidInput, RegistryUnavailable
from bgserve.evaluation.case_report import SlotResult
from bgserve.evaluation.chat_prompt import render_messages
from bgserve.evaluation.golden import GoldenCase
from bgserve.evaluation.prompt_spec import PromptSpec
from bgserve.evaluation.template import render
from bgserve.registry.bundle_model import (
    as_strings,
    chat_model,
    generation_params,
    input_column,
    joined_contents,
)
from bgserve.registry.mlflow_registry import MlflowRegistry, translate_errors

__all__ = ["LoadedModel", "answer_case", "load_base_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A loaded base model: the pyfunc, its input column, and its LLM (None when it
    answers no chat calls)."""

    uri: str
    pyfunc: Any
    column: str
    llm: Any | None


def load_base_model(model_uri: str, registry: MlflowRegistry) -> LoadedModel:
    """Load ``model_uri`` from the registry; a GGUF model's llama.cpp build is checked first.

    Raises:
        RegistryUnavailable: the model cannot be loaded.
        UnsafeLlamaBuild: the installed llama.cpp crashes on this machine.
    """
    import mlflow.pyfunc

    try:
        with translate_errors(f"loading {model_uri}"), registry.uris():
            pyfunc = mlflow.pyfunc.load_model(model_uri)
    except BgserveError:
        raise
    except Exception as exc:
        raise RegistryUnavailable(f"cannot load {model_uri}: {exc}") from exc
    llm = chat_model(pyfunc)
    gguf = getattr(llm, "gguf_path", None)
    if gguf:
        from bgserve.llm.safety import ensure_llama_works

        ensure_llama_works(Path(gguf))  # an evaluation would crash this process otherwise
    return LoadedModel(model_uri, pyfunc, input_column(pyfunc), llm)


def answer_case(model: LoadedModel, spec: PromptSpec, case: GoldenCase) -> SlotResult:
    """``case`` rendered with ``spec`` and answered by ``model``; a rendering or model
    failure is the result's ``error``, never raised."""
    try:
        conversation = _conversation(spec, case)
    except InvalidInput as exc:
        return SlotResult(output=None, latency_ms=0.0, error=f"rendering failed: {exc.message}")
    started = time.perf_counter()
    try:
        output, tokens = _ask(model, spec, conversation)
    except Exception as exc:  # the model's own failure is a result, not a crash
        return SlotResult(output=None, latency_ms=_ms(started), error=f"model failed: {exc}")
    return SlotResult(output=output, latency_ms=_ms(started), output_tokens=tokens)


def _conversation(spec: PromptSpec, case: GoldenCase) -> list[dict[str, str]]:
    """A text prompt's one rendered text, or the chat prompt's rendered messages followed
    by the case's own. Raises InvalidInput naming a variable the case lacks."""
    if spec.messages is None:
        return [{"role": "user", "content": render(spec.template or "", case.inputs)}]
    client = [m.model_dump() for m in case.messages or ()]
    return render_messages(spec.messages, case.inputs) + client


def _ask(
    model: LoadedModel, spec: PromptSpec, conversation: list[dict[str, str]]
) -> tuple[str, int | None]:
    if spec.messages is not None and model.llm is not None:
        params = generation_params({}, spec.generation, spec.response_format)
        return chat_answer(model.llm.chat(conversation, params))
    # A text prompt's one rendered text; a chat prompt's contents joined for a model that
    # is not an LLM (its cases carry no messages: the validator refuses them).
    text = conversation[0]["content"] if spec.messages is None else joined_contents(conversation)
    return as_strings(model.pyfunc.predict(pd.DataFrame({model.column: [text]})))[0], None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
