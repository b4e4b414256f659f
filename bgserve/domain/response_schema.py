"""A chat prompt's ``response_format``: a JSON schema its answers must match. Checking the
schema, checking an answer, the schema-valid rate of each side, and the gate. Pure.

An answer is schema-valid when its text, surrounding whitespace aside, is one JSON value
that the schema accepts. Only answered cases are checked (a failed call counts in the
error rate, not here). jsonschema resolves no remote ``$ref`` here: nothing is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema
from jsonschema.exceptions import SchemaError, best_match

from bgserve.domain.schema_rates import SchemaSummary, summarize_schema
from bgserve.domain.verdict_quality import INCONCLUSIVE
from bgserve.errors import InvalidInput

Check = tuple[str, bool | None]
"""A case id and whether its answer is schema-valid (None: not checked)."""

__all__ = [
    "ResponseSchema",
    "SchemaSides",
    "check_response_schema",
    "check_schemas",
    "schema_problems",
    "schema_reason",
]


def check_response_schema(raw: object, where: str = "response_format") -> dict[str, Any]:
    """``raw`` as a JSON schema its validator's meta-schema accepts.

    Raises:
        InvalidInput: not a mapping, or not a valid schema (naming where in it).
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"{where} must be a JSON schema (a mapping such as {{type: object, "
            "properties: ...}})",
            field=where,
        )
    schema = dict(raw)
    if schema.get("type") == "json_schema":
        raise InvalidInput(
            f"{where} is OpenAI's wrapper: give the schema itself (its json_schema.schema)",
            field=where,
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in exc.path)
        raise InvalidInput(
            f"{where} is not a valid JSON schema: at {where}{path}: {exc.message}",
            field=where,
        ) from exc
    return schema


class ResponseSchema:
    """A checked schema, ready to check answers against."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """Raises InvalidInput when ``schema`` is not a valid JSON schema."""
        self.schema = check_response_schema(schema)
        self._validator = jsonschema.validators.validator_for(self.schema)(self.schema)

    def problem(self, answer: str) -> str | None:
        """Why ``answer`` does not match the schema, or None when it does."""
        try:
            value = json.loads(answer)
        except json.JSONDecodeError as exc:
            return f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        error = best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = error.json_path if error.path else "the answer"
        return f"at {where}: {error.message[:200]}"


@dataclass(frozen=True)
class SchemaSides:
    """Each side's prompt schema; None for a side whose prompt has none."""

    blue: ResponseSchema | None
    green: ResponseSchema | None


def schema_problems(blue: str | None, green: str | None) -> list[str]:
    """The case's problems from each side's schema problem."""
    return [
        f"{role}'s answer does not match its response_format: {problem}"
        for role, problem in (("blue", blue), ("green", green))
        if problem is not None
    ]


def schema_reason(summary: SchemaSummary | None, min_rate: float, confidence: float) -> str | None:
    """Why green fails the schema gate (or cannot be shown to pass it), or None."""
    green = summary.green if summary is not None else None
    if green is None or green.rate is None or green.interval is None:
        return None
    record = f"{green.valid} of {green.checked} of green's answers match its response_format"
    if green.rate < min_rate:
        shown = ", ".join(green.invalid_cases[:10])
        more = len(green.invalid_cases) - 10
        shown += f" and {more} more" if more > 0 else ""
        return (
            f"{record} (schema-valid rate {green.rate:.2f}), below the minimum "
            f"{min_rate:.2f}: {shown}"
        )
    if confidence and green.interval.low < min_rate:
        return (
            f"{INCONCLUSIVE}{record} ({green.interval.shown()}); the lower bound is below "
            f"the minimum schema-valid rate {min_rate:.2f}"
        )
    return None


class _Side(Protocol):
    """One side of a case report (:class:`bgserve.domain.comparison.SlotReport`)."""

    output: str | None
    schema_checked: bool
    schema_problem: str | None

    @property
    def answered(self) -> bool: ...


class _Case(Protocol):
    """One case report (:class:`bgserve.domain.comparison.CaseReport`)."""

    id: str
    problems: list[str]

    @property
    def blue(self) -> _Side: ...

    @property
    def green(self) -> _Side: ...


def _check_side(reports: Sequence[_Case], role: str, schema: ResponseSchema) -> list[Check]:
    checks: list[Check] = []
    for case in reports:
        slot: _Side = getattr(case, role)
        if slot.answered:
            slot.schema_checked = True
            slot.schema_problem = schema.problem(slot.output or "")
        checks.append((case.id, slot.schema_problem is None if slot.schema_checked else None))
    return checks


def check_schemas(
    reports: Sequence[_Case], sides: SchemaSides, confidence: float
) -> SchemaSummary | None:
    """Check each answered case against its side's schema, set ``schema_checked`` and
    ``schema_problem`` on the side, add the problems to the case, and summarize."""
    blue = None if sides.blue is None else _check_side(reports, "blue", sides.blue)
    green = None if sides.green is None else _check_side(reports, "green", sides.green)
    for case in reports:
        case.problems += schema_problems(case.blue.schema_problem, case.green.schema_problem)
    return summarize_schema(blue, green, confidence)
