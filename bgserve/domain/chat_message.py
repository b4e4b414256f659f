"""One chat message, as a golden case carries the client's messages. Pure."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ChatMessage", "Role"]

Role = Literal["system", "developer", "user", "assistant"]


class ChatMessage(BaseModel):
    """A message in OpenAI's chat shape: a role and text content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
