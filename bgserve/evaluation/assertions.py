"""Assertions: what each type takes, how it is validated, and how it is checked. Pure.

Validation runs when a golden set is parsed (:mod:`bgserve.evaluation.golden`); checking runs
on each slot's answer during a comparison (:mod:`bgserve.evaluation.comparison`).

``regex`` patterns come from whoever wrote the golden set, so they run on RE2, whose
matching time is linear in the pattern and the text: no pattern can stall bgserve the
way ``^(a+)+$`` stalls a backtracking engine. RE2 has no backreferences and no
lookaround; such a pattern, or one over :data:`MAX_REGEX_LENGTH` characters, is refused
when the golden set is parsed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import re2
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bgserve.evaluation.verdict import format_pair

if TYPE_CHECKING:
    from bgserve.evaluation.scorers import Scorer

__all__ = [
    "KNOWN_ASSERTION_TYPES",
    "MAX_REGEX_LENGTH",
    "VALUE_RULES",
    "Answer",
    "Assertion",
    "AssertionResult",
    "check_assertion",
    "clamp_score",
    "compile_regex",
    "invalid",
]

MAX_REGEX_LENGTH = 1_000
"""Longest ``regex`` pattern accepted, in characters."""

# What each assertion type takes: "text" needs a string value, "text_or_expected" a
# string value or the case's ``expected``, "number" a positive number, "none" nothing.
VALUE_RULES: dict[str, str] = {
    "contains": "text",
    "equals": "text_or_expected",
    "icontains": "text",
    "is_json": "none",
    "max_latency_ms": "number",
    "regex": "text",
    "similar": "text_or_expected",
}
KNOWN_ASSERTION_TYPES: tuple[str, ...] = tuple(VALUE_RULES)
_CASE_KEYS = ("id", "inputs", "expected", "assert", "scorers", "description")
_ASSERTION_KEYS = ("type", "value", "threshold")


def invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("bgserve", message)


class Assertion(BaseModel):
    """One check on a slot's answer to a case.

    ``equals`` compares the stripped output with ``value`` (or the case's ``expected``);
    ``contains``/``icontains`` look for ``value`` (case-insensitively for the latter);
    ``regex`` searches for the pattern ``value``; ``is_json`` parses the output;
    ``similar`` needs the scorer's similarity to ``value`` (or ``expected``) to reach
    ``threshold`` (0 to 1); ``max_latency_ms`` bounds the slot's latency by ``value``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    value: str | float | None = None
    threshold: float | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in VALUE_RULES:
            known = ", ".join(KNOWN_ASSERTION_TYPES)
            raise invalid(f"unknown assertion type {value!r}: use one of {known}")
        return value

    @field_validator("value", "threshold", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise invalid("must be a string or a number, not true/false")
        return value

    @field_validator("value")
    @classmethod
    def _regex_compiles(cls, value: str | float | None, info: ValidationInfo) -> object:
        if info.data.get("type") == "regex" and isinstance(value, str) and value:
            compile_regex(value)
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> Assertion:
        _check_value(self.type, self.value)
        _check_threshold(self.type, self.threshold)
        return self

    def target(self, expected: str | None) -> str:
        """The text this assertion compares with: ``value``, else the case's ``expected``."""
        if isinstance(self.value, str):
            return self.value
        return expected or ""


def _check_value(kind: str, value: str | float | None) -> None:
    rule = VALUE_RULES[kind]
    if rule == "none" and value is not None:
        raise invalid(f"{kind} takes no 'value'")
    if rule == "number" and (not isinstance(value, float) or value <= 0):
        raise invalid(f"{kind} needs a positive number of milliseconds as 'value'")
    if rule in ("text", "text_or_expected") and isinstance(value, float):
        raise invalid(f"{kind} needs a string 'value', got the number {value:g}")
    if rule == "text" and not value:
        raise invalid(f"{kind} needs a non-empty string 'value'")


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is reported to the caller, not logged by RE2
    return options


_RE2_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching).

    Raises:
        PydanticCustomError: over :data:`MAX_REGEX_LENGTH` characters, or not RE2 syntax
            (backreferences and lookaround are not), with a message saying which.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise invalid(f"regex is {len(pattern):,} characters; the limit is {MAX_REGEX_LENGTH:,}")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise invalid(
            f"regex {pattern!r} does not compile: {text} (patterns run on RE2, in linear "
            "time: no backreferences, no lookahead or lookbehind)"
        ) from None


def _check_threshold(kind: str, threshold: float | None) -> None:
    if kind != "similar":
        if threshold is not None:
            raise invalid(f"{kind} takes no 'threshold'")
        return
    if threshold is None or not 0.0 <= threshold <= 1.0:
        raise invalid("similar needs a 'threshold' between 0 and 1")


# --- checking --------------------------------------------------------------------------


class AssertionResult(BaseModel):
    """One assertion checked against one slot's answer."""

    type: str
    passed: bool
    message: str


@dataclass(frozen=True)
class Answer:
    """One slot's usable answer to a case, with what the checks need beside it."""

    output: str
    latency_ms: float
    expected: str | None
    scorer: Scorer


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _equals(a: Assertion, ans: Answer) -> tuple[bool, str]:
    target = a.target(ans.expected)
    if ans.output.strip() == target.strip():
        return True, f"output equals {_short(target)}"
    return False, f"output {_short(ans.output)} is not {_short(target)}"


def _contains(a: Assertion, ans: Answer) -> tuple[bool, str]:
    found = a.target(None) in ans.output
    return found, f"output {'contains' if found else 'does not contain'} {_short(a.target(None))}"


def _icontains(a: Assertion, ans: Answer) -> tuple[bool, str]:
    found = a.target(None).casefold() in ans.output.casefold()
    verb = "contains" if found else "does not contain"
    return found, f"output {verb} {_short(a.target(None))} (ignoring case)"


def _regex(a: Assertion, ans: Answer) -> tuple[bool, str]:
    found = compile_regex(a.target(None)).search(ans.output) is not None
    return found, f"output {'matches' if found else 'does not match'} /{a.target(None)}/"


def _is_json(a: Assertion, ans: Answer) -> tuple[bool, str]:
    try:
        json.loads(ans.output)
    except json.JSONDecodeError as exc:
        return False, f"output is not JSON: {exc.msg} at column {exc.colno}"
    return True, "output is valid JSON"


def _similar(a: Assertion, ans: Answer) -> tuple[bool, str]:
    target = a.target(ans.expected)
    score = clamp_score(ans.scorer.score(ans.output, target))
    limit = a.threshold or 0.0
    word = "reaches" if score >= limit else "is below"
    shown, shown_limit = format_pair(score, limit)
    return score >= limit, f"similarity {shown} to {_short(target)} {word} {shown_limit}"


def _max_latency(a: Assertion, ans: Answer) -> tuple[bool, str]:
    limit = float(a.value or 0)
    word = "within" if ans.latency_ms <= limit else "over"
    return ans.latency_ms <= limit, f"latency {ans.latency_ms:.1f} ms is {word} {limit:g} ms"


_CHECKS: dict[str, Callable[[Assertion, Answer], tuple[bool, str]]] = {
    "equals": _equals,
    "contains": _contains,
    "icontains": _icontains,
    "regex": _regex,
    "is_json": _is_json,
    "similar": _similar,
    "max_latency_ms": _max_latency,
}


def clamp_score(score: float) -> float:
    """``score`` as a float held to 0..1, whatever a scorer returned."""
    return min(1.0, max(0.0, float(score)))


def check_assertion(assertion: Assertion, answer: Answer) -> AssertionResult:
    """Check one assertion against one answer; the message says why it passed or failed."""
    passed, message = _CHECKS[assertion.type](assertion, answer)
    return AssertionResult(type=assertion.type, passed=passed, message=message)
