"""The slot process: a real MLflow bundle served over OIP v2 by a real child process."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bgserve.slot.oip import input_columns, output_strings
from tests.support.models import SlotProcess, build_bundle, infer_body

# The echo bundle has no type hints on predict; MLflow warns about it every time.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_bundle(tmp_path_factory.mktemp("bundles"), "v1")


@pytest.fixture(scope="module")
def slot(bundle: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlotProcess]:
    proc = SlotProcess(bundle, "demo", 1, tmp_path_factory.mktemp("logs") / "slot.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_infer_answers_one_bytes_output_per_row(slot: SlotProcess) -> None:
    url = f"{slot.url}/v2/models/demo/infer"
    one = httpx.post(url, json=infer_body("hello"))
    batch = httpx.post(url, json=infer_body("a", "b", "c"))

    assert one.status_code == 200
    assert one.json()["outputs"] == [
        {
            "name": "output",
            "shape": [1],
            "datatype": "BYTES",
            "parameters": None,
            "data": ["v1:HELLO"],
        }
    ]
    assert batch.json()["outputs"][0]["data"] == ["v1:A", "v1:B", "v1:C"]
    assert batch.json()["outputs"][0]["shape"] == [3]


def test_ready_endpoints(slot: SlotProcess) -> None:
    assert httpx.get(f"{slot.url}/v2/health/ready").status_code == 200
    model = httpx.get(f"{slot.url}/v2/models/demo/ready")
    assert model.status_code == 200
    assert model.json()["ready"] is True
    assert httpx.get(f"{slot.url}/v2/models/other/ready").status_code == 404


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ([{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["x"]}], "txt"),
        ([], "text"),
        ([{"name": "text", "datatype": "INT32", "shape": [1], "data": [1]}], "text"),
    ],
    ids=["unknown", "missing", "wrong-datatype"],
)
def test_bad_input_is_a_4xx_naming_the_input(
    slot: SlotProcess, inputs: list[dict[str, object]], named: str
) -> None:
    response = httpx.post(f"{slot.url}/v2/models/demo/infer", json={"inputs": inputs})

    assert 400 <= response.status_code < 500
    assert repr(named) in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "found"),
    [
        (b"text=hello", "application/x-www-form-urlencoded", "not valid JSON"),
        (b"hello", "text/plain", "not valid JSON"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"", "application/json", "empty"),
        (b'[{"name": "text"}]', "application/json", "a JSON array"),
        (b'"hello"', "application/json", "a JSON string"),
        (b"42", None, "a JSON number"),
    ],
    ids=["form", "text", "broken-json", "empty", "array", "string", "number"],
)
def test_a_body_that_is_not_a_json_object_gets_a_400_showing_the_expected_body(
    slot: SlotProcess, body: bytes, content_type: str | None, found: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{slot.url}/v2/models/demo/infer", content=body, headers=headers)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(f"the request body is {found}: send a JSON object like ")
    assert (
        '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["..."]}]}'
        in error
    )
    assert "inference-header-content-length" not in error


def test_a_json_object_is_read_as_json_whatever_its_content_type(slot: SlotProcess) -> None:
    body = json.dumps(infer_body("curl")).encode()
    url = f"{slot.url}/v2/models/demo/infer"
    form = httpx.post(
        url, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    bare = httpx.post(url, content=body)

    assert form.status_code == bare.status_code == 200
    assert form.json()["outputs"][0]["data"] == bare.json()["outputs"][0]["data"] == ["v1:CURL"]


def _slot_gc(slot: SlotProcess) -> dict[str, float]:
    """The slot's own GC figures from its /metrics: frozen objects, gen-2 count, longest."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{slot.url}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("process") != "slot":
                continue
            if sample.name == "bgserve_gc_frozen_objects":
                found["frozen"] = sample.value
            elif sample.labels.get("generation") == "2":
                found[sample.name] = sample.value
    return found


def test_the_loaded_model_is_frozen_and_full_collections_stay_short_under_load(
    slot: SlotProcess,
) -> None:
    url = f"{slot.url}/v2/models/demo/infer"

    def client_sends(n: int) -> None:
        with httpx.Client() as http:
            for _ in range(n):
                assert http.post(url, json=infer_body("x")).status_code == 200

    # Unfrozen, each full collection walks ~300k objects (MLflow, pandas, kserve): 150+ ms.
    # Concurrent requests keep objects alive across young collections, which is what
    # eventually triggers full ones.
    with ThreadPoolExecutor(16) as pool:
        for _ in range(20):  # until the load has caused full collections to time
            list(pool.map(client_sends, [25] * 16))
            found = _slot_gc(slot)
            if found["bgserve_gc_collections_total"] >= 2:
                break

    assert found["frozen"] > 100_000
    assert found["bgserve_gc_collections_total"] >= 2
    assert found["bgserve_gc_longest_pause_seconds"] < 0.075


def test_sigterm_exits_cleanly(bundle: str, tmp_path: Path) -> None:
    proc = SlotProcess(bundle, "demo", 2, tmp_path / "slot.log")
    try:
        proc.wait_ready()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
    finally:
        proc.stop()


class _Input:
    def __init__(self, name: str, datatype: str, data: list[object]) -> None:
        self.name, self.datatype, self.data = name, datatype, data


def test_input_columns_decode_bytes_and_check_lengths() -> None:
    from kserve.errors import InvalidInput

    columns = input_columns(
        [_Input("a", "BYTES", [b"x", "y"]), _Input("b", "BYTES", [["1"], ["2"]])], []
    )
    assert columns == {"a": ["x", "y"], "b": ["1", "2"]}
    with pytest.raises(InvalidInput, match="differ in length"):
        input_columns([_Input("a", "BYTES", ["x"]), _Input("b", "BYTES", ["1", "2"])], [])


def test_output_strings_accepts_frames_series_and_lists() -> None:
    import pandas as pd

    assert output_strings(["a", b"b"]) == ["a", "b"]
    assert output_strings(pd.Series(["x"])) == ["x"]
    assert output_strings(pd.DataFrame({"other": [1], "output": ["o"]})) == ["o"]
