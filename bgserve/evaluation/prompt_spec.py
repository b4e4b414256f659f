"""What a release's prompt version is: a text template or chat messages, the model settings
and the response schema. Read by the registry (releases, bundles) and by comparisons. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bgserve.errors import InvalidInput
from bgserve.evaluation.chat_prompt import chat_variables
from bgserve.evaluation.model_config import MODEL_CONFIG_KEYS
from bgserve.evaluation.response_schema import ResponseSchema
from bgserve.evaluation.template import variables

__all__ = ["PromptSpec"]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt version: ``template`` for a text prompt, ``messages`` for a chat prompt
    (exactly one), plus its ``model_config`` and ``response_format``."""

    template: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    model_config: Mapping[str, Any] = field(default_factory=dict)
    response_format: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls,
        template: str | list[dict[str, Any]],
        model_config: Mapping[str, Any] | None,
        response_format: Mapping[str, Any] | None,
        where: str,
    ) -> PromptSpec:
        """Check the parts MLflow holds for one prompt version (``where`` names it).

        Raises:
            InvalidInput: a chat message without a string role and content.
        """
        config = dict(model_config or {})
        if isinstance(template, str):
            return cls(template=template, model_config=config, response_format=response_format)
        messages = tuple(_message(item, where) for item in template)
        return cls(messages=messages, model_config=config, response_format=response_format)

    @property
    def is_chat(self) -> bool:
        """True for a chat prompt."""
        return self.messages is not None

    @property
    def variables(self) -> list[str]:
        """The distinct ``{{variable}}`` names, in order of first use across the messages."""
        if self.messages is not None:
            return chat_variables(self.messages)
        return variables(self.template or "")

    @property
    def generation(self) -> dict[str, Any]:
        """The generation settings of its ``model_config`` a release applies to every
        call (``MODEL_CONFIG_KEYS``; other keys MLflow may hold are not bgserve's)."""
        return {k: v for k, v in self.model_config.items() if k in MODEL_CONFIG_KEYS}

    def response_schema(self, prompt_uri: str) -> ResponseSchema | None:
        """Its ``response_format`` ready to check answers on, None without one.

        Raises:
            InvalidInput: the schema is broken (a prompt registered outside bgserve,
                unchecked), naming ``prompt_uri``.
        """
        if self.response_format is None:
            return None
        try:
            return ResponseSchema(self.response_format)
        except InvalidInput as exc:
            raise InvalidInput(f"{prompt_uri}: {exc.message}", field="response_format") from exc

    def bundle_config(self) -> dict[str, Any]:
        """The bundle's model_config entries for this prompt (see ``bundle_model.py``):
        the messages or template, the generation settings, the response schema."""
        config: dict[str, Any] = (
            {"messages": [dict(m) for m in self.messages]}
            if self.messages is not None
            else {"template": self.template}
        )
        if self.generation:
            config["model_config"] = self.generation
        if self.response_format:
            config["response_format"] = dict(self.response_format)
        return config


def _message(item: object, where: str) -> dict[str, str]:
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("role"), str)
        or not isinstance(item.get("content"), str)
    ):
        raise InvalidInput(
            f"{where} has a chat message that is not {{'role': str, 'content': str}}: {item!r}",
            field="prompt_uri",
        )
    return {"role": item["role"], "content": item["content"]}
