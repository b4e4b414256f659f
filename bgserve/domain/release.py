"""Releases and the URIs that name their parts. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bgserve.domain.template import variables
from bgserve.errors import InvalidInput

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REF_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
_URI = re.compile(
    rf"^(?P<scheme>models|prompts):/(?P<name>{_REF_NAME})"
    rf"(?:/(?P<version>[1-9][0-9]{{0,9}})|@(?P<alias>[A-Za-z0-9_-]{{1,255}}))$"
)

Kind = Literal["models", "prompts"]


def validate_name(value: str, field: str = "name", max_length: int = 63) -> str:
    """Check a deployment or release name is a DNS-1123 label; return it unchanged.

    Raises:
        InvalidInput: naming ``field`` and the rule it breaks.
    """
    if not value or len(value) > max_length or not DNS1123_LABEL.match(value):
        raise InvalidInput(
            f"{field} {value!r} is not a DNS-1123 label: use at most {max_length} lowercase "
            "letters, digits and '-', starting and ending with a letter or digit",
            field=field,
        )
    return value


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` or ``prompts:/`` URI: a fixed version or an alias, not both."""

    kind: Kind
    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        suffix = f"/{self.version}" if self.version is not None else f"@{self.alias}"
        return f"{self.kind}:/{self.name}{suffix}"

    def pinned(self, version: int) -> RegistryRef:
        """The same name at a fixed version."""
        return RegistryRef(self.kind, self.name, version=version)


def parse_uri(uri: str, kind: Kind, field: str) -> RegistryRef:
    """Parse ``models:/name/3``, ``models:/name@alias`` (or the ``prompts:/`` forms).

    Raises:
        InvalidInput: naming ``field``, with the accepted forms.
    """
    match = _URI.match(uri or "")
    if not match or match["scheme"] != kind:
        raise InvalidInput(
            f"{field} {uri!r} is not a valid {kind} URI: use {kind}:/<name>/<version> "
            f"or {kind}:/<name>@<alias>",
            field=field,
        )
    version = int(match["version"]) if match["version"] else None
    return RegistryRef(kind, match["name"], version=version, alias=match["alias"])


@dataclass(frozen=True)
class Release:
    """One model version packaged with one prompt version, as one servable bundle.

    Every version is fixed at registration: a release never changes afterwards.
    """

    id: int
    name: str
    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int
    bundle_name: str
    bundle_version: int
    created_at: datetime
    model_ref: str = ""
    prompt_ref: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"

    @property
    def prompt_uri(self) -> str:
        return f"prompts:/{self.prompt_name}/{self.prompt_version}"

    @property
    def bundle_uri(self) -> str:
        return f"models:/{self.bundle_name}/{self.bundle_version}"


@dataclass(frozen=True)
class ResolvedRelease:
    """What the registry hands back when it registers a release (no id yet)."""

    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int
    bundle_name: str
    bundle_version: int


# The generation settings of a prompt's ``model_config`` that a release applies to every call.
GENERATION_KEYS = ("temperature", "max_tokens", "top_p", "stop", "seed")


@dataclass(frozen=True)
class PromptContent:
    """What a prompt version contributes to a release: a text ``template`` or chat
    ``messages`` (exactly one), plus its ``model_config`` and ``response_format``."""

    template: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None

    @classmethod
    def of(
        cls,
        template: str | list[dict[str, Any]],
        model_config: dict[str, Any] | None,
        response_format: dict[str, Any] | None,
        where: str,
    ) -> PromptContent:
        """Check the parts MLflow holds for one prompt version (``where`` names it).

        Raises:
            InvalidInput: a chat message without a string role and content.
        """
        config = {k: v for k, v in (model_config or {}).items() if k in GENERATION_KEYS}
        if isinstance(template, str):
            return cls(template=template, model_config=config, response_format=response_format)
        messages = tuple(_message(item, where) for item in template)
        return cls(messages=messages, model_config=config, response_format=response_format)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def variables(self) -> list[str]:
        """The distinct ``{{variable}}`` names, in order of first use across the messages."""
        texts = [m["content"] for m in self.messages] if self.messages else [self.template or ""]
        return list(dict.fromkeys(name for text in texts for name in variables(text)))

    def bundle_config(self) -> dict[str, Any]:
        """The bundle's model_config entries for this prompt (see ``bundle_model.py``)."""
        config: dict[str, Any] = (
            {"messages": [dict(m) for m in self.messages]}
            if self.messages is not None
            else {"template": self.template}
        )
        if self.model_config:
            config["model_config"] = dict(self.model_config)
        if self.response_format:
            config["response_format"] = self.response_format
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
