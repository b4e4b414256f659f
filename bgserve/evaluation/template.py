"""Prompt templates in MLflow's ``{{variable}}`` syntax. Pure substitution, never evaluation.

Rendering replaces each ``{{ name }}`` with the text given for ``name``; nothing in a
template or a value is executed, looked up as an attribute or read from a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bgserve.errors import InvalidInput

# Keep in step with bgserve/registry/bundle_model.py, which must stay self-contained.
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def variables(template: str) -> list[str]:
    """The distinct variable names of ``template``, in order of first use."""
    return list(dict.fromkeys(VARIABLE.findall(template)))


def render(template: str, values: Mapping[str, object]) -> str:
    """Substitute every variable of ``template`` with ``str(values[name])``.

    Raises:
        InvalidInput: naming the first variable that ``values`` lacks.
    """
    missing = [name for name in variables(template) if name not in values]
    if missing:
        raise InvalidInput(
            f"template variable {missing[0]!r} has no value: provide it in the inputs",
            field=missing[0],
        )
    return VARIABLE.sub(lambda m: str(values[m.group(1)]), template)
