"""Find and read golden sets by name: ``<prompts_dir>/<name>/golden.jsonl``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bgserve.errors import InvalidInput, NotFound
from bgserve.evaluation.golden import GoldenCase, parse_cases, parse_golden_jsonl

PACKAGED = Path(__file__).parent.parent / "demo" / "prompts"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def golden_path(name: str, prompts_dir: Path) -> Path:
    """The golden set file for ``name``: the project's own first, then the demo's.

    Raises:
        InvalidInput: ``name`` is not a plain directory name (no paths).
        NotFound: neither place has it.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"golden_set {name!r} is not a prompt directory name: use letters, digits, '.', "
            "'_' and '-' only",
            field="golden_set",
        )
    for root in (prompts_dir, PACKAGED):
        path = root / name / "golden.jsonl"
        if path.is_file():
            return path
    raise NotFound(f"golden set {name!r} not found: expected {prompts_dir / name / 'golden.jsonl'}")


def load_golden_set(name: str, prompts_dir: Path) -> list[GoldenCase]:
    """Parse the golden set called ``name``. Raises InvalidInput, PayloadTooLarge, NotFound."""
    return parse_golden_jsonl(golden_path(name, prompts_dir).read_text(encoding="utf-8"))


def golden_cases(
    golden_set: str | None, cases: list[dict[str, Any]] | None, prompts_dir: Path
) -> list[GoldenCase]:
    """The cases given inline, else those of the golden set called ``golden_set``.

    Raises InvalidInput (no or empty cases, a bad case or name), PayloadTooLarge, NotFound.
    """
    if cases is not None:
        if not cases:
            raise InvalidInput("cases is empty: give at least one golden case", field="cases")
        return parse_cases(cases)
    if golden_set is None:
        raise InvalidInput("give golden_set (a name) or cases (a list)", field="golden_set")
    return load_golden_set(golden_set, prompts_dir)
