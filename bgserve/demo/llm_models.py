"""Register what ``bgserve demo --llm`` deploys: SmolLM2 as an LLM model version (a GGUF
file run by llama.cpp) and the two versions of the ``chat`` prompt, from the packaged
prompt folders ``prompts/chat`` (a terse assistant) and ``prompts/chat-pirate`` (the
system prompt reworded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from bgserve.compose import registry_at
from bgserve.demo.models import prompt_dir
from bgserve.errors import InvalidInput
from bgserve.evaluation.golden import GoldenCase, parse_golden_jsonl
from bgserve.llm.smollm2 import smollm2_path
from bgserve.registry.llm_models import LlmSpec, RegisteredLlm, register_llm
from bgserve.registry.mlflow_registry import translate_errors

LLM_NAME = "smollm2"
CHAT_FOLDERS = ("chat", "chat-pirate")
"""The chat prompt's versions in order: version 1, then version 2."""


@dataclass(frozen=True)
class ChatPrompt:
    """One packaged chat prompt version: its messages and its generation settings."""

    name: str
    messages: list[dict[str, str]]
    model_config: dict[str, Any]
    commit_message: str | None
    tags: dict[str, str]

    @property
    def system(self) -> str:
        """The system message, which is all the two versions differ by."""
        return next((m["content"] for m in self.messages if m["role"] == "system"), "")


def read_chat_prompt(folder: str) -> ChatPrompt:
    """The chat prompt of packaged folder ``prompts/<folder>/prompt.yaml``.

    Raises InvalidInput naming the file when it is not a mapping with ``messages``.
    """
    where = f"prompts/{folder}/prompt.yaml"
    meta = yaml.safe_load(prompt_dir(folder).joinpath("prompt.yaml").read_text("utf-8"))
    if not isinstance(meta, dict) or not isinstance(meta.get("messages"), list):
        raise InvalidInput(f"{where} must be a mapping with a list of messages", field=where)
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in meta["messages"]]
    return ChatPrompt(
        name=str(meta.get("name", folder)),
        messages=messages,
        model_config=dict(meta.get("model_config") or {}),
        commit_message=meta.get("commit_message"),
        tags={str(k): str(v) for k, v in (meta.get("tags") or {}).items()},
    )


def chat_golden_set() -> list[GoldenCase]:
    """The golden cases of ``prompts/chat/golden.jsonl``."""
    text = prompt_dir(CHAT_FOLDERS[0]).joinpath("golden.jsonl").read_text("utf-8")
    return parse_golden_jsonl(text)


def register_smollm2(tracking_uri: str, registry_uri: str | None = None) -> RegisteredLlm:
    """Register the packaged SmolLM2 GGUF file as a new version of model ``smollm2``.

    Not idempotent (the demo registers into a fresh store). Raises InvalidInput or
    RegistryUnavailable.
    """
    registry = registry_at(tracking_uri, registry_uri)
    return register_llm(registry, LlmSpec(LLM_NAME, gguf=smollm2_path()))


def push_chat_prompts(tracking_uri: str, registry_uri: str | None = None) -> list[int]:
    """Register the chat prompt's two versions as MLflow chat prompts (messages and
    model_config); return their versions. Raises InvalidInput or RegistryUnavailable."""
    registry = registry_at(tracking_uri, registry_uri)
    versions: list[int] = []
    for folder in CHAT_FOLDERS:
        prompt = read_chat_prompt(folder)
        with translate_errors(f"pushing the demo chat prompt {prompt.name!r}"):
            created = registry.client.register_prompt(
                prompt.name,
                prompt.messages,
                commit_message=prompt.commit_message,
                tags=prompt.tags,
                model_config=prompt.model_config,
            )
        versions.append(int(created.version))
    return versions
