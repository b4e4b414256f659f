"""Golden sets: the cases a comparison sends to both slots, and their assertions. Pure.

A golden set is JSON Lines (``prompts/<name>/golden.jsonl``), one case a line::

    {"id": "c1", "inputs": {"text": "..."}, "expected": "...",
     "assert": [{"type": "contains", "value": "..."}], "scorers": ["is_polite"]}

or the same objects inline as a list. Every problem is an :class:`InvalidInput` that
names where it is (line number or list index, and the case id) in its message, and the
path of the bad field in its ``field`` (e.g. ``cases[0].assert[1].value``); a size-limit
breach is a :class:`PayloadTooLarge`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bgserve.errors import InvalidInput, PayloadTooLarge
from bgserve.evaluation.assertions import KNOWN_ASSERTION_TYPES, VALUE_RULES, Assertion, invalid
from bgserve.evaluation.chat_message import ChatMessage

__all__ = [
    "KNOWN_ASSERTION_TYPES",
    "MAX_CASES",
    "MAX_CASE_BYTES",
    "MAX_ID_LENGTH",
    "Assertion",
    "GoldenCase",
    "LintIssue",
    "LintReport",
    "check_inputs",
    "lint_template",
    "parse_cases",
    "parse_golden_jsonl",
]

MAX_CASES = 10_000
MAX_CASE_BYTES = 65_536
MAX_ID_LENGTH = 128
_CASE_KEYS = ("id", "inputs", "messages", "expected", "assert", "scorers", "description")
_ASSERTION_KEYS = ("type", "value", "threshold")


class GoldenCase(BaseModel):
    """One golden case: the template inputs, the expected answer and the assertions.

    In JSON the assertions are under ``"assert"``; inputs are strings, because the
    data plane sends each variable as one BYTES element. ``messages`` (chat prompts only)
    are the client's messages, sent after the prompt's rendered ones.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str
    inputs: dict[str, str] = Field(default_factory=dict)
    messages: tuple[ChatMessage, ...] | None = None
    expected: str | None = None
    assertions: tuple[Assertion, ...] = Field(default=(), alias="assert")
    scorers: tuple[str, ...] = ()
    """Names of MLflow scorers run on both answers (from ``BGSERVE_COMPARE_SCORER_MODULES``)."""
    description: str | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not value.strip() or len(value) > MAX_ID_LENGTH:
            raise invalid(f"must be a non-empty string of at most {MAX_ID_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _targets_exist(self) -> GoldenCase:
        for index, item in enumerate(self.assertions):
            needs_target = VALUE_RULES[item.type] == "text_or_expected"
            if needs_target and item.value is None and self.expected is None:
                raise invalid(
                    f"assert[{index}]: {item.type} needs a 'value' or the case's 'expected'"
                )
        return self


def parse_golden_jsonl(
    text: str, *, max_cases: int = MAX_CASES, max_case_bytes: int = MAX_CASE_BYTES
) -> list[GoldenCase]:
    """Parse a golden set in JSON Lines; blank lines are skipped.

    Raises:
        PayloadTooLarge: more than ``max_cases`` cases, or a line over ``max_case_bytes``.
        InvalidInput: naming the line number and case id of the first bad case.
    """
    # Split on "\n" only: JSON strings may hold U+2028 and friends that splitlines() breaks on.
    lines = [
        (n, line)
        for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1)
        if line.strip()
    ]
    _check_count(len(lines), max_cases)
    entries = [(f"line {n}", _load_line(n, line, max_case_bytes)) for n, line in lines]
    return _build(entries)


def parse_cases(
    raw: Sequence[object], *, max_cases: int = MAX_CASES, max_case_bytes: int = MAX_CASE_BYTES
) -> list[GoldenCase]:
    """Parse inline cases (the ``"cases"`` of a request), with the same rules and limits."""
    _check_count(len(raw), max_cases)
    for index, item in enumerate(raw):
        size = len(json.dumps(item, ensure_ascii=False, default=str).encode())
        if size > max_case_bytes:
            raise PayloadTooLarge(
                f"cases[{index}]{_label(item)} is {size:,} bytes; the limit is "
                f"{max_case_bytes:,} bytes a case",
                field=f"cases[{index}]",
            )
    return _build([(f"cases[{index}]", item) for index, item in enumerate(raw)])


def refuse_client_messages(cases: Sequence[GoldenCase], why: str) -> None:
    """Refuse the first case carrying client messages, where only text templates are
    rendered; ``why`` says what to do instead.

    Raises:
        InvalidInput: naming ``cases[i].messages``.
    """
    for index, case in enumerate(cases):
        if case.messages:
            raise InvalidInput(
                f"case {case.id!r} carries messages: {why}", field=f"cases[{index}].messages"
            )


def _check_count(count: int, max_cases: int) -> None:
    if count == 0:
        raise InvalidInput("the golden set has no cases: add at least one", field="cases")
    if count > max_cases:
        raise PayloadTooLarge(
            f"the golden set has {count:,} cases; the limit is {max_cases:,}", field="cases"
        )


def _load_line(number: int, line: str, max_case_bytes: int) -> object:
    size = len(line.encode())
    if size > max_case_bytes:
        raise PayloadTooLarge(
            f"golden set line {number} is {size:,} bytes; the limit is "
            f"{max_case_bytes:,} bytes a case",
            field=f"line {number}",
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"golden set line {number} is not valid JSON: {exc.msg} (column {exc.colno})",
            field=f"line {number}",
        ) from exc


def _build(entries: list[tuple[str, object]]) -> list[GoldenCase]:
    cases: list[GoldenCase] = []
    first_seen: dict[str, str] = {}
    for where, item in entries:
        case = _validate(where, item)
        if case.id in first_seen:
            raise InvalidInput(
                f"golden set {where} (case {case.id!r}): duplicate case id {case.id!r}, "
                f"first used at {first_seen[case.id]}",
                field=where,
            )
        first_seen[case.id] = where
        cases.append(case)
    return cases


def _validate(where: str, item: object) -> GoldenCase:
    if not isinstance(item, dict):
        raise InvalidInput(
            f"golden set {where} must be a JSON object, got {type(item).__name__}", field=where
        )
    try:
        return GoldenCase.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors()[:3])
        path = _loc(exc.errors()[0]["loc"])
        field = f"{where}.{path}" if path else where
        raise InvalidInput(f"golden set {where}{_label(item)}: {problems}", field=field) from exc


def _label(item: object) -> str:
    case_id = item.get("id") if isinstance(item, dict) else None
    return f" (case {case_id!r})" if isinstance(case_id, str) else ""


def _loc(loc: Sequence[int | str]) -> str:
    """A pydantic location as a path: ``("assert", 0, "value")`` is ``assert[0].value``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _describe(err: Mapping[str, Any]) -> str:
    loc = _loc(err["loc"])
    if err["type"] == "missing":
        return f"{loc!r} is required"
    if err["type"] == "extra_forbidden":
        known: tuple[str, ...] = _ASSERTION_KEYS if len(err["loc"]) > 1 else _CASE_KEYS
        known = ("role", "content") if err["loc"][0] == "messages" else known
        return f"unknown field {loc!r}: use {', '.join(known)}"
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


class LintIssue(BaseModel):
    """One finding of the template lint, about one variable."""

    level: Literal["error", "warning"]
    variable: str
    case_ids: list[str]
    message: str


class LintReport(BaseModel):
    """Template variables checked against a golden set's inputs."""

    variables: list[str]
    errors: list[LintIssue]
    warnings: list[LintIssue]

    @property
    def ok(self) -> bool:
        """True when every case can render the template."""
        return not self.errors


def lint_template(template_variables: Sequence[str], cases: Sequence[GoldenCase]) -> LintReport:
    """Errors for variables some case does not provide (such a case cannot render);
    warnings for inputs that no template variable uses."""
    errors = [_missing_issue(name, cases) for name in template_variables]
    used = set(template_variables)
    unused = sorted({key for case in cases for key in case.inputs} - used)
    return LintReport(
        variables=list(template_variables),
        errors=[issue for issue in errors if issue is not None],
        warnings=[_unused_issue(name, cases) for name in unused],
    )


def _missing_issue(name: str, cases: Sequence[GoldenCase]) -> LintIssue | None:
    lacking = [case.id for case in cases if name not in case.inputs]
    if not lacking:
        return None
    return LintIssue(
        level="error",
        variable=name,
        case_ids=lacking,
        message=f"template variable {name!r} is not provided by {len(lacking)} of "
        f"{len(cases)} cases, which cannot render: {_ids(lacking)}",
    )


def _unused_issue(name: str, cases: Sequence[GoldenCase]) -> LintIssue:
    providing = [case.id for case in cases if name in case.inputs]
    return LintIssue(
        level="warning",
        variable=name,
        case_ids=providing,
        message=f"input {name!r} is provided by {len(providing)} of {len(cases)} cases "
        "but the template does not use it",
    )


def check_inputs(cases: Sequence[GoldenCase], variables: Iterable[str]) -> None:
    """Check every case provides every template variable.

    Raises:
        InvalidInput: naming each case that lacks a variable, and the variable.
    """
    report = lint_template(list(variables), cases)
    if report.ok:
        return
    lacking: dict[str, list[str]] = {}
    for issue in report.errors:
        for case_id in issue.case_ids:
            lacking.setdefault(case_id, []).append(issue.variable)
    parts = [
        f"case {cid!r} lacks input {', '.join(map(repr, names))}" for cid, names in lacking.items()
    ]
    raise InvalidInput(
        "golden set does not provide every template variable: " + _ids(parts, sep="; "),
        field="inputs",
        details={"missing": lacking},
    )


def _ids(items: Sequence[str], *, limit: int = 10, sep: str = ", ") -> str:
    """``items`` joined, at most ``limit`` of them, then how many more."""
    shown = sep.join(items[:limit])
    more = len(items) - limit
    return f"{shown}{sep}and {more} more" if more > 0 else shown
