"""The two prompts of a prompt validation: the live one (blue's prompt version) and the
candidate, given as a ``prompts:/`` URI, a raw text template, or chat messages with their
``model_config`` and ``response_format`` (what a ``prompt.yaml`` folder holds), each
checked as ``bgserve prompts push`` checks a folder.

A text prompt and a chat prompt may face each other: each side is asked as its release
would ask the model, which is how a prompt moves from a text template to chat messages.
Golden cases that carry the client's ``messages`` need a chat prompt on both sides, as in a
comparison of releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bgserve.domain.release import RegistryRef, parse_uri
from bgserve.errors import InvalidInput
from bgserve.evaluation.chat_prompt import check_messages, lint_chat
from bgserve.evaluation.golden import GoldenCase, LintReport, lint_template, refuse_client_messages
from bgserve.evaluation.model_config import check_model_config
from bgserve.evaluation.prompt_spec import PromptSpec
from bgserve.evaluation.response_schema import ResponseSchema, check_response_schema
from bgserve.evaluation.template import variables

__all__ = ["Candidate", "PromptKind", "PromptReader", "PromptSide"]

PromptKind = Literal["text", "chat"]

_FORMS = ("prompt_uri", "template", "messages")


class PromptReader(Protocol):
    """Prompt versions in the registry
    (:class:`bgserve.registry.mlflow_registry.MlflowRegistry`)."""

    def resolve_prompt(self, ref: RegistryRef) -> int:
        """The version ``ref`` names. Raises NotFound, RegistryUnavailable."""
        ...

    def get_prompt_spec(self, name: str, version: int) -> PromptSpec:
        """One prompt version, text or chat. Raises NotFound, RegistryUnavailable."""
        ...


@dataclass(frozen=True)
class PromptSide:
    """One side of a validation: a prompt version (or an inline prompt) and its label."""

    spec: PromptSpec
    label: str

    @property
    def kind(self) -> PromptKind:
        """``chat`` for chat messages, ``text`` for a template."""
        return "chat" if self.spec.is_chat else "text"

    def refuse_client_messages(self, cases: Sequence[GoldenCase]) -> None:
        """Refuse cases with the client's messages when this side is a text template.

        Raises:
            InvalidInput: naming ``cases[i].messages`` and this side's prompt.
        """
        if not self.spec.is_chat:
            refuse_client_messages(
                cases,
                f"{self.label} is a text template, and messages need a chat prompt on both "
                "sides: remove them, or validate a chat prompt on a deployment whose live "
                "prompt is chat",
            )

    def schema(self) -> ResponseSchema | None:
        """Its response_format, ready to check answers; None without one.

        Raises:
            InvalidInput: the stored schema is broken, naming this side's prompt.
        """
        return self.spec.response_schema(self.label)

    def lint(self, cases: Sequence[GoldenCase]) -> LintReport:
        """The template lint (the chat lint for messages) against ``cases``."""
        if self.spec.messages is not None:
            return lint_chat(self.spec.messages, cases)
        return lint_template(variables(self.spec.template or ""), cases)


@dataclass(frozen=True)
class Candidate:
    """The candidate as a request gives it, unchecked: exactly one of ``prompt_uri``,
    ``template`` or ``messages``; ``model_config`` and ``response_format`` go with
    ``messages`` only (a ``prompts:/`` version brings its own)."""

    prompt_uri: str | None = None
    template: str | None = None
    messages: object = None
    model_config: object = None
    response_format: object = None

    def inline(self) -> PromptSide | None:
        """The candidate given inline, checked; None when it is a ``prompt_uri``. Reads
        nothing, so a bad request is refused before anything runs.

        Raises:
            InvalidInput: none or several of the three forms, model_config or
                response_format without messages, a template without variables, bad
                messages, an unknown or out-of-range model_config key, a
                response_format that is not a JSON schema; each naming the field.
        """
        self._check_forms()
        if self.template is not None:
            return PromptSide(
                PromptSpec(template=_checked_template(self.template)), "inline template"
            )
        if self.messages is None:
            return None
        spec = PromptSpec(
            messages=tuple(check_messages(self.messages, "messages")),
            model_config=check_model_config(self.model_config, "model_config"),
            response_format=(
                None
                if self.response_format is None
                else check_response_schema(self.response_format, "response_format")
            ),
        )
        return PromptSide(spec, "inline chat prompt")

    def read(self, prompts: PromptReader) -> PromptSide:
        """The candidate: the inline one, or the prompt version ``prompt_uri`` names.

        Raises:
            InvalidInput: as :meth:`inline`, or a bad URI.
            NotFound: no such prompt or version.
            RegistryUnavailable: MLflow cannot be reached.
        """
        inline = self.inline()
        if inline is not None:
            return inline
        ref = parse_uri(self.prompt_uri or "", "prompts", "prompt_uri")
        version = ref.version or prompts.resolve_prompt(ref)
        return PromptSide(prompts.get_prompt_spec(ref.name, version), ref.pinned(version).uri)

    def _check_forms(self) -> None:
        given = [name for name in _FORMS if getattr(self, name) is not None]
        if len(given) != 1:
            extra = f": got {' and '.join(given)}" if given else ""
            raise InvalidInput(
                f"give exactly one of prompt_uri, template or messages{extra}",
                field=given[1] if len(given) > 1 else "prompt_uri",
            )
        for name in ("model_config", "response_format"):
            if getattr(self, name) is not None and self.messages is None:
                raise InvalidInput(
                    f"{name} goes with messages (a chat prompt given inline); a text template "
                    "has none, and a prompts:/ version brings its own",
                    field=name,
                )


def _checked_template(template: str) -> str:
    if not variables(template):
        raise InvalidInput(
            "template has no {{variable}}: it cannot use the golden set's inputs",
            field="template",
        )
    return template
