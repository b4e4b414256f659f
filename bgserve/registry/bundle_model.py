"""The release bundle: render the prompt template, then call the base model.

Logged as an MLflow "model from code", so this file is copied into every bundle and
loaded wherever the bundle is served. It must stay self-contained: it imports only
MLflow, pandas and the standard library, never bgserve.

Model config (``model_config``): ``template`` (the prompt text) and ``variables``
(the input columns, in order). Artifact ``base_model``: the base model, copied in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel, PythonModelContext

# Must equal bgserve.domain.template.VARIABLE; a test holds the two in step.
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_INPUT_COLUMN = "prompt"


def render(template: str, values: Mapping[str, Any]) -> str:
    """Substitute each ``{{ name }}`` of ``template`` with ``str(values[name])``.

    Pure substitution: nothing in the template or the values is evaluated.

    Raises:
        MlflowException: INVALID_PARAMETER_VALUE naming the first variable without a value.
    """
    for name in VARIABLE.findall(template):
        if name not in values:
            raise MlflowException.invalid_parameter_value(
                f"template variable {name!r} has no value: provide an input column {name!r}"
            )
    return VARIABLE.sub(lambda m: _text(values[m.group(1)]), template)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def input_column(model: Any) -> str:
    """The base model's single input column name, or ``prompt`` when it has none or several."""
    schema = model.metadata.get_input_schema() if model.metadata else None
    if schema is None or schema.is_tensor_spec() or len(schema.inputs) != 1:
        return DEFAULT_INPUT_COLUMN
    name = schema.inputs[0].name
    return name if isinstance(name, str) and name else DEFAULT_INPUT_COLUMN


def as_strings(output: Any) -> list[str]:
    """Flatten a base model's answer (list, array, Series or DataFrame) to one string a row."""
    if isinstance(output, pd.DataFrame):
        column = "output" if "output" in output.columns else output.columns[0]
        output = output[column]
    if isinstance(output, str | bytes):
        output = [output]
    return [item.decode() if isinstance(item, bytes) else _text(item) for item in list(output)]


class BundleModel(PythonModel):
    """Renders each input row with the release's template and asks the base model."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        self._template: str = config["template"]
        self._base = mlflow.pyfunc.load_model(context.artifacts["base_model"])
        self._column = input_column(self._base)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        """Answer one string per input row.

        Raises:
            MlflowException: INVALID_PARAMETER_VALUE when a template variable has no column.
        """
        prompts = [render(self._template, row) for row in model_input.to_dict(orient="records")]
        answer = self._base.predict(pd.DataFrame({self._column: prompts}))
        return as_strings(answer)


mlflow.models.set_model(BundleModel())
