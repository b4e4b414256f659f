"""What a release's prompt version is, as comparisons need it: a text template or chat
messages, the model settings and the response schema. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bgserve.domain.chat_prompt import chat_variables
from bgserve.domain.template import variables

__all__ = ["PromptSpec"]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt version: ``template`` for a text prompt, ``messages`` for a chat prompt."""

    template: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    model_config: Mapping[str, Any] = field(default_factory=dict)
    response_format: Mapping[str, Any] | None = None

    @property
    def is_chat(self) -> bool:
        """True for a chat prompt."""
        return self.messages is not None

    @property
    def variables(self) -> list[str]:
        """The template variables, in order of first use."""
        if self.messages is not None:
            return chat_variables(self.messages)
        return variables(self.template or "")
