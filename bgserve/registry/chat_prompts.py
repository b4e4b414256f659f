"""Chat prompts in the MLflow registry: push a chat prompt version (messages, model_config,
response_format) and read any prompt version as a :class:`PromptSpec`.

MLflow 3 keeps a chat prompt's messages as its template and stores ``model_config`` and
``response_format`` beside it (``mlflow.genai.register_prompt``); failures are translated
as every registry call's are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.domain.prompt_spec import PromptSpec
from bgserve.errors import InvalidInput
from bgserve.registry.errors import translate_errors
from bgserve.registry.lookup import is_model, is_prompt, prompt_version, require_prompt
from bgserve.registry.mlflow_registry import MlflowRegistry

__all__ = ["PromptSpecReader", "push_chat_prompt", "read_prompt_spec"]


def push_chat_prompt(
    registry: MlflowRegistry,
    name: str,
    messages: Sequence[Mapping[str, str]],
    *,
    model_config: Mapping[str, Any] | None = None,
    response_format: Mapping[str, Any] | None = None,
    commit_message: str | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Register ``messages`` as a new version of chat prompt ``name`` unless the latest
    version has the same messages, model_config and response_format. Returns
    ``(version, created)``.

    Raises:
        InvalidInput: ``name`` is a registered model, or MLflow refuses the prompt.
        RegistryUnavailable: MLflow cannot be reached.
    """
    template = [dict(m) for m in messages]
    config = dict(model_config or {}) or None
    schema = dict(response_format) if response_format is not None else None
    client = registry.client
    with translate_errors(f"pushing prompt {name!r}"):
        if is_prompt(client, name):
            latest = client.get_prompt_version_by_alias(name, "latest")
            same = (latest.template, latest.model_config, latest.response_format)
            if same == (template, config, schema):
                return int(latest.version), False
        elif is_model(client, name):
            raise InvalidInput(
                f"{name!r} is a registered model, not a prompt: choose another prompt name",
                field="name",
            )
        created = client.register_prompt(
            name,
            template,
            commit_message=commit_message,
            tags=tags,
            model_config=config,
            response_format=schema,
        )
        return int(created.version), True


def read_prompt_spec(registry: MlflowRegistry, name: str, version: int) -> PromptSpec:
    """Prompt ``name`` at ``version``, text or chat.

    Raises:
        NotFound: no such prompt or version.
        RegistryUnavailable: MLflow cannot be reached.
    """
    with translate_errors(f"reading prompts:/{name}/{version}"):
        require_prompt(registry.client, name)
        prompt = prompt_version(registry.client, name, version)
    config = dict(prompt.model_config or {})
    schema = prompt.response_format
    if isinstance(prompt.template, str):
        return PromptSpec(template=prompt.template, model_config=config, response_format=schema)
    messages = tuple(
        {"role": str(m.get("role")), "content": str(m.get("content"))} for m in prompt.template
    )
    return PromptSpec(messages=messages, model_config=config, response_format=schema)


class PromptSpecReader:
    """The comparer's view of prompt versions, read from ``registry``."""

    def __init__(self, registry: MlflowRegistry) -> None:
        self.registry = registry

    def get_prompt_spec(self, name: str, version: int) -> PromptSpec:
        """See :func:`read_prompt_spec`."""
        return read_prompt_spec(self.registry, name, version)
