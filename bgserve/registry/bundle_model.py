"""The release bundle: render the prompt, then call the base model.

Logged as an MLflow "model from code", so this file is copied into every bundle and
loaded wherever the bundle is served. It must stay self-contained: it imports only
MLflow, pandas and the standard library, never bgserve.

Model config (``model_config``): ``template`` (a text prompt) or ``messages`` (a chat
prompt: ``[{"role", "content"}, ...]``), ``variables`` (the input columns, in order),
and when the prompt has them ``model_config`` (temperature, max_tokens, top_p, stop,
seed) and ``response_format`` (a JSON schema). Artifact ``base_model``: the base model,
copied in.

When the base model is an LLM (its python model has ``chat``), :meth:`BundleModel.chat`
answers OpenAI chat calls: the prompt's rendered messages (a text prompt is one user
message), then the client's. The prompt's ``model_config`` is applied to every call and
wins over the request's values for the keys it sets: what was compared on the golden set
is what takes traffic; the request fills only the keys the prompt leaves open. The
prompt's ``response_format`` is requested as OpenAI's ``json_schema`` (the LLM model
turns it into what its engine takes). ``predict`` goes through the same path for an LLM,
so the OIP v2 answer is the assistant's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel, PythonModelContext

# Must equal bgserve.evaluation.template.VARIABLE; a test holds the two in step.
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
                f"template variable {name!r} has no value: provide an input {name!r} "
                "(an OIP input, or a key of the OpenAI request's 'variables')"
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


def chat_model(base: Any) -> Any:
    """The base model's python model when it answers chat calls (an LLM), else None."""
    try:
        python_model = base.unwrap_python_model()
    except MlflowException:
        return None
    return python_model if callable(getattr(python_model, "chat", None)) else None


def schema_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema as OpenAI's ``response_format``."""
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": dict(schema)}}


def generation_params(
    request_params: Mapping[str, Any],
    generation: Mapping[str, Any],
    response_format: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A call's generation params: the request's, under the prompt's ``generation``
    settings (its model_config; the prompt wins) and its ``response_format`` (a JSON
    schema, requested as OpenAI's ``json_schema``). The one rule for slots and prompt
    validations."""
    params = {**request_params, **generation}
    if response_format:
        params["response_format"] = schema_format(response_format)
    return params


def joined_contents(messages: list[dict[str, str]]) -> str:
    """A chat prompt's rendered messages as the one string a base model that is not an
    LLM takes: their contents, joined by blank lines."""
    return "\n\n".join(m["content"] for m in messages)


class BundleModel(PythonModel):
    """Renders each input row with the release's prompt and asks the base model."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        self._template: str | None = config.get("template")
        self._messages: list[dict[str, str]] | None = config.get("messages")
        self._generation: dict[str, Any] = dict(config.get("model_config") or {})
        self._response_format: dict[str, Any] | None = config.get("response_format")
        self._base = mlflow.pyfunc.load_model(context.artifacts["base_model"])
        self._column = input_column(self._base)
        self.llm = chat_model(self._base)

    def prompt_messages(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The prompt's messages rendered with ``variables`` (a text prompt: one user message).

        Raises:
            MlflowException: INVALID_PARAMETER_VALUE naming a variable without a value.
        """
        if self._messages is None:
            return [{"role": "user", "content": render(self._template or "", variables)}]
        return [
            {"role": m["role"], "content": render(m["content"], variables)} for m in self._messages
        ]

    def generation_params(self, request_params: Mapping[str, Any]) -> dict[str, Any]:
        """The request's params under the prompt's model_config and response_format."""
        return generation_params(request_params, self._generation, self._response_format)

    def chat(
        self,
        variables: Mapping[str, Any],
        messages: list[dict[str, Any]],
        request_params: Mapping[str, Any],
        stream: bool = False,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """An OpenAI chat.completion dict (or chunk dicts when ``stream``) from the LLM.

        Raises:
            MlflowException: INVALID_PARAMETER_VALUE: a variable has no value, or the base
                model is not an LLM.
        """
        if self.llm is None:
            raise MlflowException.invalid_parameter_value(
                "this release's base model is not an LLM: it answers OIP v2 infer only"
            )
        rendered = self.prompt_messages(variables) + list(messages)
        result: dict[str, Any] | Iterator[dict[str, Any]] = self.llm.chat(
            rendered, self.generation_params(request_params), stream
        )
        return result

    def _prompt_text(self, row: Mapping[str, Any]) -> str:
        # A base model that is not an LLM takes one string: a chat prompt's contents, joined.
        return joined_contents(self.prompt_messages(row))

    def _llm_answer(self, row: Mapping[str, Any]) -> str:
        completion = self.chat(row, [], {})
        assert isinstance(completion, dict)
        choices = completion.get("choices") or [{}]
        return _text((choices[0].get("message") or {}).get("content"))

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
        rows = model_input.to_dict(orient="records")
        if self.llm is not None:
            return [self._llm_answer(row) for row in rows]
        prompts = [self._prompt_text(row) for row in rows]
        answer = self._base.predict(pd.DataFrame({self._column: prompts}))
        return as_strings(answer)


mlflow.models.set_model(BundleModel())
