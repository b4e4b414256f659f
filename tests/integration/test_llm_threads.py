"""How many threads llama.cpp gets in a slot, and a chat slot's OpenAI types made ready
before it says it is ready (both measured as first-call or load costs on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgserve.compose.backends import LLM_THREADS_ENV, slot_env
from bgserve.llm import llm_model
from bgserve.llm.smollm2 import smollm2_path
from tests.support.flow import make_settings

pytestmark = [pytest.mark.integration]


def engine_threads(monkeypatch: pytest.MonkeyPatch, env: str | None, registered: int) -> int:
    """The threads a SmolLM2 engine got, for generation; asserts prompt reading got as many."""
    if env is None:
        monkeypatch.delenv(llm_model.THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(llm_model.THREADS_ENV, env)
    engine = llm_model._Gguf(str(smollm2_path()), 256, registered)
    try:
        assert engine.llm.n_threads_batch == engine.llm.n_threads
        return int(engine.llm.n_threads)
    finally:
        engine.llm.close()


def test_by_default_a_slot_takes_half_the_cpus_for_prompt_and_generation_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # llama.cpp's own default reads the prompt on every core: two slots then fight.
    assert engine_threads(monkeypatch, None, 0) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_the_registered_count_holds_unless_the_serving_place_sets_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert engine_threads(monkeypatch, None, 3) == 3
    assert engine_threads(monkeypatch, "2", 3) == 2
    assert engine_threads(monkeypatch, "0", 3) == 3  # 0 means "not set here"


@pytest.mark.parametrize("value", ["two", "-1"])
def test_a_bad_thread_count_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(llm_model.THREADS_ENV, value)
    with pytest.raises(llm_model.LlmLoadError, match=llm_model.THREADS_ENV):
        llm_model._Gguf(str(smollm2_path()), 256, 0)


def test_the_llm_threads_setting_reaches_local_slots(tmp_path: Path, mlflow_store: str) -> None:
    assert LLM_THREADS_ENV == llm_model.THREADS_ENV
    settings = make_settings(tmp_path, mlflow_store)
    assert LLM_THREADS_ENV not in slot_env(settings, {})
    chosen = settings.model_copy(update={"llm_threads": 3})
    assert slot_env(chosen, {})[LLM_THREADS_ENV] == "3"


def test_a_chat_slot_has_its_openai_types_ready_before_its_first_call() -> None:
    # Imported and built on the first call, they cost that call over a second here.
    probe = (
        "import sys\n"
        "from fastapi import FastAPI\n"
        "from bgserve.slot.openai_api import attach_openai\n"
        "attach_openai(FastAPI(), object(), 'chat')\n"
        "from openai.types.chat import ChatCompletion, ChatCompletionChunk\n"
        "from bgserve.slot import openai_request\n"
        "print(ChatCompletion.__pydantic_complete__, ChatCompletionChunk.__pydantic_complete__,"
        " openai_request._adapters.cache_info().currsize,"
        " openai_request._tools_adapter.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "True", "1", "1"]
