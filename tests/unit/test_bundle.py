"""The self-contained bundle code, the demo model and the demo prompt files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from bgserve.demo.models import demo_templates, prompt_dir
from bgserve.demo.text_model import first_sentence, summarize, text_part
from bgserve.evaluation import template as domain
from bgserve.evaluation.golden import GoldenCase, parse_golden_jsonl
from bgserve.registry import bundle_model

REPO = Path(__file__).resolve().parents[2]
PROMPT_FILES = ("template.txt", "prompt.yaml", "golden.jsonl")

TRICKY = [
    ("plain {{x}}", {"x": "1"}),
    ("{{ x }}{{x}}{{  x  }}", {"x": "ab"}),
    ("{{{x}}}", {"x": "v"}),
    ("{x} {{ x } {{x y}} {{1x}} {{_x1}}", {"x": "v", "_x1": "u"}),
    ("{{x}} {{y}}", {"x": "{{y}}", "y": r"\1 \g<0> $HOME %s {0}"}),
    ("multi\nline {{\nx\n}}", {"x": "é ✓"}),
    ("no variables at all", {}),
    ("{{x}}.{{x.y}}.{{x[0]}}", {"x": "__class__"}),
]


def test_bundle_regex_is_the_domain_regex() -> None:
    assert bundle_model.VARIABLE.pattern == domain.VARIABLE.pattern
    assert bundle_model.VARIABLE.flags == domain.VARIABLE.flags


@pytest.mark.parametrize(("template", "values"), TRICKY)
def test_bundle_renders_like_the_domain(template: str, values: dict[str, str]) -> None:
    assert bundle_model.render(template, values) == domain.render(template, values)


def test_bundle_render_names_a_missing_variable() -> None:
    with pytest.raises(MlflowException, match="'topic'"):
        bundle_model.render("{{text}} about {{topic}}", {"text": "t"})


def test_bundle_render_writes_missing_values_as_empty_text() -> None:
    assert bundle_model.render("[{{a}}|{{b}}]", {"a": None, "b": float("nan")}) == "[|]"


def _model(schema: Schema | None) -> Any:
    signature = ModelSignature(inputs=schema) if schema is not None else None
    metadata = SimpleNamespace(get_input_schema=lambda: signature.inputs if signature else None)
    return SimpleNamespace(metadata=metadata)


@pytest.mark.parametrize(
    ("schema", "column"),
    [
        (Schema([ColSpec(DataType.string, "question")]), "question"),
        (Schema([ColSpec(DataType.string, "a"), ColSpec(DataType.string, "b")]), "prompt"),
        (Schema([ColSpec(DataType.string)]), "prompt"),
        (Schema([TensorSpec(np.dtype("float32"), (-1, 2))]), "prompt"),
        (None, "prompt"),
    ],
)
def test_input_column_follows_the_base_signature(schema: Schema | None, column: str) -> None:
    assert bundle_model.input_column(_model(schema)) == column


@pytest.mark.parametrize(
    "output",
    [
        ["a", "b"],
        np.array(["a", "b"]),
        pd.Series(["a", "b"]),
        pd.DataFrame({"output": ["a", "b"], "score": [1, 2]}),
        pd.DataFrame({"anything": ["a", "b"]}),
        [b"a", b"b"],
    ],
)
def test_as_strings_flattens_base_answers(output: Any) -> None:
    assert bundle_model.as_strings(output) == ["a", "b"]


def test_bundle_code_imports_no_bgserve() -> None:
    source = Path(bundle_model.__file__).read_text()
    assert "bgserve" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )


# --- demo model --------------------------------------------------------------


def test_summarizer_takes_the_text_after_the_marker() -> None:
    assert text_part("Summarize.\n\nText: Hello there. Bye.") == "Hello there. Bye."
    assert text_part("no marker here") == "no marker here"
    assert first_sentence("Is it done? Yes.") == "Is it done?"
    assert first_sentence("v1.2 is out. Upgrade.") == "v1.2 is out."


def test_summarizer_versions_agree_on_short_texts_and_differ_on_long() -> None:
    short = "Text: The build is green. Ship it."
    long = "Text: " + " ".join(f"w{i}" for i in range(15)) + ". Tail."
    assert summarize(short, 12) == summarize(short, 8) == "The build is green."
    assert summarize(long, 12) == " ".join(f"w{i}" for i in range(12)) + " ..."
    assert summarize(long, 8) == " ".join(f"w{i}" for i in range(8)) + " ..."


# --- demo prompt files -------------------------------------------------------


@pytest.mark.parametrize("name", PROMPT_FILES)
def test_repo_prompt_files_equal_the_packaged_ones(name: str) -> None:
    packaged = prompt_dir().joinpath(name).read_bytes()
    assert (REPO / "prompts" / "summarize" / name).read_bytes() == packaged


def test_demo_prompt_versions_differ_only_in_wording() -> None:
    v1, v2 = demo_templates()
    assert v1 != v2
    assert domain.variables(v1) == domain.variables(v2) == ["text"]


def _golden() -> list[GoldenCase]:
    return parse_golden_jsonl(prompt_dir().joinpath("golden.jsonl").read_text(encoding="utf-8"))


def _passes(case: GoldenCase, output: str) -> bool:
    checks = {
        "contains": lambda value: str(value) in output,
        "icontains": lambda value: str(value).lower() in output.lower(),
        "equals": lambda value: output.strip() == (value if value is not None else case.expected),
        "max_latency_ms": lambda value: True,
    }
    return all(checks[item.type](item.value) for item in case.assertions)


def test_golden_set_is_what_v1_answers() -> None:
    template = demo_templates()[0]
    cases = _golden()
    assert 6 <= len(cases) <= 12
    for case in cases:
        output = summarize(domain.render(template, case.inputs), 12)
        assert output == case.expected, case.id
        assert _passes(case, output), case.id


def test_golden_set_tells_v1_from_v2() -> None:
    template = demo_templates()[0]
    outputs = [(c, summarize(domain.render(template, c.inputs), 8)) for c in _golden()]
    differing = [c.id for c, out in outputs if out != c.expected]
    assert 0 < len(differing) < len(outputs)
