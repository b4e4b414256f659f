"""Schema-valid rates: how many of each side's answers match its prompt's response_format
(see :mod:`bgserve.domain.response_schema`). Pure."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from bgserve.domain.confidence import Interval, wilson_interval

__all__ = ["SchemaSummary", "SideSchema", "summarize_schema"]


class SideSchema(BaseModel):
    """How many of one side's answers match its prompt's response_format."""

    checked: int
    valid: int
    rate: float | None
    interval: Interval | None
    invalid_cases: list[str]


class SchemaSummary(BaseModel):
    """Schema-valid rates per side; a side is None when its prompt has no schema."""

    blue: SideSchema | None = None
    green: SideSchema | None = None


def _side(checks: Sequence[tuple[str, bool | None]], confidence: float) -> SideSchema:
    done = [(case_id, valid) for case_id, valid in checks if valid is not None]
    valid = sum(ok for _, ok in done)
    return SideSchema(
        checked=len(done),
        valid=valid,
        rate=valid / len(done) if done else None,
        interval=wilson_interval(valid, len(done), confidence),
        invalid_cases=[case_id for case_id, ok in done if not ok],
    )


def summarize_schema(
    blue: Sequence[tuple[str, bool | None]] | None,
    green: Sequence[tuple[str, bool | None]] | None,
    confidence: float,
) -> SchemaSummary | None:
    """The rates from each side's ``(case id, valid, or None when unchecked)`` pairs; a
    side is None when its prompt has no schema, and the summary None when neither has."""
    if blue is None and green is None:
        return None
    return SchemaSummary(
        blue=None if blue is None else _side(blue, confidence),
        green=None if green is None else _side(green, confidence),
    )
