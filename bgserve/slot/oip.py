"""Open Inference Protocol v2 tensors and a bundle's string columns: BYTES inputs in, one
string a row out (the output named ``output``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kserve.protocol.infer_type import InferInput

__all__ = ["OUTPUT_NAME", "input_columns", "output_strings"]

OUTPUT_NAME = "output"


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _flatten(data: object) -> list[object]:
    if isinstance(data, list | tuple):
        return [item for part in data for item in _flatten(part)]
    if hasattr(data, "tolist"):
        return _flatten(data.tolist())
    return [data]


def input_columns(inputs: Sequence[InferInput], variables: Sequence[str]) -> dict[str, list[str]]:
    """Turn OIP v2 BYTES inputs into equally long string columns, one per variable.

    ``variables`` empty means the model declares none, so any input names are taken.

    Raises:
        kserve.errors.InvalidInput: naming the input that is missing, unknown, not
            BYTES or of a different length than the others.
    """
    from kserve.errors import InvalidInput

    columns: dict[str, list[str]] = {}
    for item in inputs:
        if variables and item.name not in variables:
            raise InvalidInput(f"unknown input {item.name!r}: this model takes {list(variables)}")
        if item.datatype != "BYTES":
            raise InvalidInput(
                f"input {item.name!r} has datatype {item.datatype}: send strings as BYTES"
            )
        columns[item.name] = [_decode(v) for v in _flatten(item.data)]
    for name in variables:
        if name not in columns:
            raise InvalidInput(f"missing input {name!r}: this model takes {list(variables)}")
    if not columns:
        raise InvalidInput("the request has no inputs: send one BYTES input per variable")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise InvalidInput(f"inputs differ in length: {lengths}; send one value per row each")
    return columns


def output_strings(prediction: object) -> list[str]:
    """Normalise a pyfunc prediction (list, array, Series or DataFrame) to one string a row."""
    import pandas as pd

    if isinstance(prediction, pd.DataFrame):
        column = OUTPUT_NAME if OUTPUT_NAME in prediction.columns else prediction.columns[0]
        prediction = prediction[column]
    if isinstance(prediction, str):
        return [prediction]
    return [_decode(v) for v in _flatten(prediction)]
