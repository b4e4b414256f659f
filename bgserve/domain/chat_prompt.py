"""Chat prompts: a list of ``{role, content}`` messages in MLflow's ``{{variable}}`` syntax,
their variables, rendering, and the lint against a golden set. Pure.

MLflow 3 registers a chat prompt as ``template=[{"role": ..., "content": ...}, ...]``. The
rendered messages come first in every call; a golden case's own ``messages`` (the client's)
follow them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.domain.golden import GoldenCase, LintIssue, LintReport, lint_template
from bgserve.domain.template import render, variables
from bgserve.errors import InvalidInput

__all__ = [
    "MAX_MESSAGES",
    "PROMPT_ROLES",
    "chat_variables",
    "check_messages",
    "lint_chat",
    "render_messages",
]

PROMPT_ROLES = ("system", "developer", "user", "assistant")
"""Roles a chat prompt's messages may have (OpenAI's chat roles without tool calls)."""
MAX_MESSAGES = 100


def check_messages(raw: object, where: str = "messages") -> list[dict[str, str]]:
    """``raw`` as chat messages: a non-empty list of ``{role, content}`` with string content.

    Raises:
        InvalidInput: naming the first bad message (``messages[2].role``) and the fix.
    """
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(
            f"{where} must be a non-empty list of {{role, content}} messages", field=where
        )
    if len(raw) > MAX_MESSAGES:
        raise InvalidInput(
            f"{where} has {len(raw)} messages; the limit is {MAX_MESSAGES}", field=where
        )
    return [_message(item, f"{where}[{index}]") for index, item in enumerate(raw)]


def _message(item: object, where: str) -> dict[str, str]:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be a mapping with role and content", field=where)
    unknown = sorted(set(item) - {"role", "content"})
    if unknown:
        raise InvalidInput(
            f"{where} has unknown key {unknown[0]!r}: a message has only role and content",
            field=f"{where}.{unknown[0]}",
        )
    role, content = item.get("role"), item.get("content")
    if role not in PROMPT_ROLES:
        raise InvalidInput(
            f"{where}.role is {role!r}: use one of {', '.join(PROMPT_ROLES)}",
            field=f"{where}.role",
        )
    if not isinstance(content, str):
        raise InvalidInput(
            f"{where}.content must be text, got {type(content).__name__}",
            field=f"{where}.content",
        )
    return {"role": role, "content": content}


def chat_variables(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct variables of every message's content, in order of first use."""
    found: dict[str, None] = {}
    for message in messages:
        found.update(dict.fromkeys(variables(str(message.get("content", "")))))
    return list(found)


def render_messages(
    messages: Sequence[Mapping[str, Any]], values: Mapping[str, object]
) -> list[dict[str, str]]:
    """Each message with its content rendered; the roles unchanged.

    Raises:
        InvalidInput: naming the first variable ``values`` lacks.
    """
    return [
        {"role": str(m["role"]), "content": render(str(m["content"]), values)} for m in messages
    ]


def lint_chat(messages: Sequence[Mapping[str, Any]], cases: Sequence[GoldenCase]) -> LintReport:
    """The template lint of a chat prompt against ``cases``.

    Errors: a variable some case does not provide. Warnings: inputs no message uses, a
    system message that is not first, and cases whose conversation (the prompt's
    messages, then the case's) ends with an assistant message, leaving the model nothing
    to answer.
    """
    report = lint_template(chat_variables(messages), cases)
    warnings = [*report.warnings, *_role_warnings(messages, cases)]
    return report.model_copy(update={"warnings": warnings})


def _role_warnings(
    messages: Sequence[Mapping[str, Any]], cases: Sequence[GoldenCase]
) -> list[LintIssue]:
    issues: list[LintIssue] = []
    late = [i for i, m in enumerate(messages) if m.get("role") == "system" and i > 0]
    if late:
        issues.append(
            LintIssue(
                level="warning",
                variable="",
                case_ids=[],
                message=f"messages[{late[0]}] is a system message after other messages: "
                "most chat models expect the system message first",
            )
        )
    ending = [case.id for case in cases if _last_role(messages, case) == "assistant"]
    if ending:
        more = len(ending) - 10
        shown = ", ".join(ending[:10]) + (f" and {more} more" if more > 0 else "")
        issues.append(
            LintIssue(
                level="warning",
                variable="",
                case_ids=ending,
                message=f"the conversation ends with an assistant message in {len(ending)} of "
                f"{len(cases)} cases, leaving the model no turn to answer: {shown}",
            )
        )
    return issues


def _last_role(messages: Sequence[Mapping[str, Any]], case: GoldenCase) -> str | None:
    if case.messages:
        return case.messages[-1].role
    return str(messages[-1].get("role")) if messages else None
