"""The slot's model repository API, driven the way Seldon Core 2's agent drives a server.

One real slot process serves a folder of real MLflow pyfunc bundles laid out as the agent
lays them out (``<root>/<model>_<version>/1/``). REST calls are POSTs with an empty body,
as the agent's REST client sends them; gRPC calls are sent as raw bytes encoded here by
hand with the Open Inference Protocol's field numbers (``model_name`` is field 2), so the
server's own message definitions are checked, not trusted.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.support.models import build_bundle, infer_body, wait_until
from tests.support.processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]

COUNTING_CODE = '''
import mlflow
from mlflow.pyfunc import PythonModel


class CountingBundle(PythonModel):
    """Appends a line to model_config["counter"] at every load; answers like the echo."""

    def load_context(self, context):
        with open(context.model_config["counter"], "a") as f:
            f.write("load\\n")

    def predict(self, context, model_input, params=None):
        return [f"counted:{t}" for t in model_input["text"]]


mlflow.models.set_model(CountingBundle())
'''

SERVICE = "/inference.GRPCInferenceService/"


def _counting_bundle(root: Path, counter: Path) -> Path:
    import mlflow.pyfunc

    code = root / "counting_model.py"
    code.write_text(COUNTING_CODE)
    path = root / "counting"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(code),
            model_config={"counter": str(counter)},
            pip_requirements=["mlflow"],
        )
    return path


class RepositorySlot:
    """A slot process serving ``root`` as a model repository over REST and gRPC."""

    def __init__(self, root: Path, log: Path) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bgserve.slot.server"),
                *("--model-repository", str(root), "--host", "127.0.0.1"),
                *("--port", str(self.port), "--grpc-port", str(self.grpc_port)),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def live(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"slot exited: {self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: bytes = b"") -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=body, timeout=120)

    def raw_post(self, path: str) -> tuple[int, str]:
        """POST ``path`` exactly as written (no client normalises ``..`` or ``%2F`` away)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=b"", headers={"content-length": "0"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles in the agent's layout, plus hostile and broken folders."""
    built = tmp_path_factory.mktemp("built")
    root = tmp_path_factory.mktemp("agent") / "models"
    outside = tmp_path_factory.mktemp("outside")
    counter = built / "loads.txt"
    versions = {"chat-r1_1": "v1", "chat-r2_1": "v2", "steady_1": "steady", "grpc-a_1": "ga"}
    for name, version in versions.items():
        shutil.copytree(build_bundle(built / version, version), root / name / "1")
    shutil.copytree(build_bundle(built / "flat", "flat"), root / "flat_1")  # no version folder
    shutil.copytree(_counting_bundle(built, counter), root / "twice_1" / "1")
    broken = root / "broken_1" / "1"
    shutil.copytree(build_bundle(built / "broken", "broken"), broken)
    (broken / "MLmodel").write_text("not: [a valid MLmodel\n")
    (root / "empty_1" / "1").mkdir(parents=True)
    shutil.copytree(build_bundle(built / "out", "out"), outside / "escape")
    (root / "escape_1").symlink_to(outside / "escape", target_is_directory=True)
    leaky = root / "leaky_1" / "1"
    shutil.copytree(build_bundle(built / "leaky", "leaky"), leaky)
    (leaky / "secret.txt").symlink_to("/etc/passwd")
    return {"root": root, "counter": counter}


@pytest.fixture(scope="module")
def slot(layout: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = RepositorySlot(layout["root"], tmp_path_factory.mktemp("logs") / "slot.log")
    try:
        wait_until(proc.live, 90, "the repository slot to be live")
        yield proc
    finally:
        proc.stop()


def infer(slot: RepositorySlot, name: str, text: str = "hi") -> httpx.Response:
    return httpx.post(f"{slot.url}/v2/models/{name}/infer", json=infer_body(text), timeout=60)


def index(slot: RepositorySlot, ready_only: bool = False) -> dict[str, dict[str, str]]:
    body = b'{"ready": true}' if ready_only else b""
    response = slot.post("/v2/repository/index", body)
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()}


def test_load_infer_unload_then_load_another(slot: RepositorySlot) -> None:
    before = index(slot)
    assert before["chat-r1_1"]["state"] == before["chat-r2_1"]["state"] == "UNAVAILABLE"
    assert infer(slot, "chat-r1_1").status_code == 404

    loaded = slot.post("/v2/repository/models/chat-r1_1/load")
    assert (loaded.status_code, loaded.content) == (200, b"")
    assert httpx.get(f"{slot.url}/v2/models/chat-r1_1/ready").status_code == 200
    assert infer(slot, "chat-r1_1").json()["outputs"][0]["data"] == ["v1:HI"]
    ready = index(slot, ready_only=True)
    assert ready["chat-r1_1"] == {
        "name": "chat-r1_1",
        "version": "1",
        "state": "READY",
        "reason": "",
    }
    assert "chat-r2_1" not in ready

    unloaded = slot.post("/v2/repository/models/chat-r1_1/unload")
    assert (unloaded.status_code, unloaded.content) == (200, b"")
    assert httpx.get(f"{slot.url}/v2/models/chat-r1_1/ready").status_code == 404
    assert infer(slot, "chat-r1_1").status_code == 404
    assert index(slot)["chat-r1_1"]["state"] == "UNAVAILABLE"

    assert slot.post("/v2/repository/models/chat-r2_1/load").status_code == 200
    assert infer(slot, "chat-r2_1", "again").json()["outputs"][0]["data"] == ["v2:AGAIN"]
    assert infer(slot, "chat-r1_1").status_code == 404


def test_a_bundle_at_the_top_of_its_folder_loads_too(slot: RepositorySlot) -> None:
    assert slot.post("/v2/repository/models/flat_1/load").status_code == 200
    assert infer(slot, "flat_1").json()["outputs"][0]["data"] == ["flat:HI"]
    assert index(slot)["flat_1"]["version"] == ""


def test_loading_twice_loads_once(slot: RepositorySlot, layout: dict[str, Path]) -> None:
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(lambda _: slot.post("/v2/repository/models/twice_1/load"), [0, 1]))
    again = slot.post("/v2/repository/models/twice_1/load")

    assert [r.status_code for r in [*first, again]] == [200, 200, 200]
    assert layout["counter"].read_text().splitlines() == ["load"]
    assert infer(slot, "twice_1").json()["outputs"][0]["data"] == ["counted:hi"]


def test_unloading_an_unknown_model_answers_what_mlserver_answers(slot: RepositorySlot) -> None:
    response = slot.post("/v2/repository/models/ghost_1/unload")
    assert response.status_code == 404
    assert response.json() == {"error": "Model ghost_1 not found"}


def test_a_bundle_that_fails_to_load_leaves_the_others_serving(slot: RepositorySlot) -> None:
    assert slot.post("/v2/repository/models/steady_1/load").status_code == 200

    broken = slot.post("/v2/repository/models/broken_1/load")
    empty = slot.post("/v2/repository/models/empty_1/load")

    assert broken.status_code == 422
    assert "broken_1" in broken.json()["error"] and "failed to load" in broken.json()["error"]
    assert empty.status_code == 422 and "MLmodel" in empty.json()["error"]
    entries = index(slot)
    assert entries["broken_1"]["state"] == "UNAVAILABLE" and entries["broken_1"]["reason"]
    assert entries["steady_1"]["state"] == "READY"
    assert infer(slot, "steady_1").json()["outputs"][0]["data"] == ["steady:HI"]
    assert slot.proc.poll() is None


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/v2/repository/models/../load", 400, "not a folder name"),
        ("/v2/repository/models/..%2F..%2Fetc/load", 400, "not a folder name"),
        ("/v2/repository/models/%2Fetc%2Fpasswd/load", 400, "not a folder name"),
        ("/v2/repository/models/chat-r1_1%2F1/load", 400, "not a folder name"),
        ("/v2/repository/models/.hidden/load", 400, "not a folder name"),
        ("/v2/repository/models/" + "a" * 300 + "/load", 400, "not a folder name"),
        ("/v2/repository/models/escape_1/load", 403, "links out of the model repository"),
        ("/v2/repository/models/leaky_1/load", 403, "secret.txt links out"),
        ("/v2/repository/models/..%2F..%2Fetc/unload", 400, "not a folder name"),
    ],
    ids=[
        "dotdot",
        "encoded-dotdot",
        "absolute",
        "slash",
        "hidden",
        "long",
        "dir-link",
        "file-link",
        "unload",
    ],
)
def test_hostile_names_are_refused_and_nothing_loads(
    slot: RepositorySlot, path: str, status: int, says: str
) -> None:
    before = set(index(slot, ready_only=True))

    code, body = slot.raw_post(path)

    assert code == status, body
    assert says in body
    assert set(index(slot, ready_only=True)) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_refused_unread(slot: RepositorySlot, chunked: bool) -> None:
    assert slot.post("/v2/repository/models/steady_1/load").status_code == 200
    blob = b'{"parameters": "' + b"x" * 2_000_000 + b'"}'
    content: Any = (
        iter([blob[i : i + 65536] for i in range(0, len(blob), 65536)]) if chunked else blob
    )
    response = httpx.post(
        f"{slot.url}/v2/repository/models/steady_1/unload", content=content, timeout=60
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert index(slot)["steady_1"]["state"] == "READY"


def test_a_body_that_is_not_a_json_object_names_the_shape(slot: RepositorySlot) -> None:
    bad = slot.post("/v2/repository/index", b"[1, 2]")
    flag = slot.post("/v2/repository/index", b'{"ready": "yes"}')
    assert bad.status_code == 400 and "JSON object" in bad.json()["error"]
    assert flag.status_code == 400 and "'ready'" in flag.json()["error"]


# gRPC, the agent's control plane: requests encoded by hand, responses decoded by hand.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints and length-delimited."""
    fields: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        if key & 7 == 0:
            fields.append((key >> 3, varint()))
        else:
            assert key & 7 == 2, f"unexpected wire type {key & 7}"
            size = varint()
            fields.append((key >> 3, data[i : i + size]))
            i += size
    return fields


@pytest.fixture(scope="module")
def channel(slot: RepositorySlot) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{slot.grpc_port}") as chan:
        yield chan


def call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    stub = channel.unary_unary(SERVICE + method)
    response: bytes = stub(request, timeout=120)
    return response


def grpc_index(channel: grpc.Channel, ready_only: bool) -> dict[str, dict[int, Any]]:
    request = _varint(2 << 3) + _varint(1) if ready_only else b""
    entries = [v for _, v in _fields(call(channel, "RepositoryIndex", request))]
    models = [dict(_fields(v)) for v in entries if isinstance(v, bytes)]
    return {bytes(m[1]).decode(): m for m in models}


def test_grpc_load_infer_unload_as_the_agent_calls_it(
    slot: RepositorySlot, channel: grpc.Channel
) -> None:
    assert _fields(call(channel, "ServerLive", b"")) == [(1, 1)]

    assert call(channel, "RepositoryModelLoad", _string_field(2, "grpc-a_1")) == b""
    assert infer(slot, "grpc-a_1").json()["outputs"][0]["data"] == ["ga:HI"]
    ready = grpc_index(channel, ready_only=True)
    assert ready["grpc-a_1"][3] == b"READY" and ready["grpc-a_1"][2] == b"1"
    ready_now = call(channel, "ModelReady", _string_field(1, "grpc-a_1"))
    assert _fields(ready_now) == [(1, 1)]

    assert call(channel, "RepositoryModelUnload", _string_field(2, "grpc-a_1")) == b""
    assert infer(slot, "grpc-a_1").status_code == 404
    assert grpc_index(channel, ready_only=False)["grpc-a_1"][3] == b"UNAVAILABLE"


def _infer_request(model: str, *texts: str, input_name: str = "text") -> bytes:
    """A ModelInferRequest: model_name (1), one BYTES input (5) of shape [n] whose
    contents (5) carry bytes_contents (8)."""
    contents = b"".join(_string_field(8, t) for t in texts)
    shape = _varint(len(texts))
    tensor = (
        _string_field(1, input_name)
        + _string_field(2, "BYTES")
        + _varint(3 << 3 | 2)
        + _varint(len(shape))
        + shape
        + _varint(5 << 3 | 2)
        + _varint(len(contents))
        + contents
    )
    return _string_field(1, model) + _varint(5 << 3 | 2) + _varint(len(tensor)) + tensor


def _output_strings(response: bytes) -> list[str]:
    """The strings of the response's first output, from its contents or raw contents."""
    fields = _fields(response)
    outputs = [dict(_fields(v)) for n, v in fields if n == 5 and isinstance(v, bytes)]
    assert outputs and bytes(outputs[0][1]).decode() == "output"
    contents = outputs[0].get(5)
    if isinstance(contents, bytes):
        return [bytes(v).decode() for n, v in _fields(contents) if n == 8]
    raw = next(v for n, v in fields if n == 6 and isinstance(v, bytes))
    values, i = [], 0
    while i < len(raw):  # raw BYTES: 4-byte little-endian length, then the bytes
        size = int.from_bytes(raw[i : i + 4], "little")
        values.append(raw[i + 4 : i + 4 + size].decode())
        i += 4 + size
    return values


def test_grpc_inference_reaches_a_loaded_model(slot: RepositorySlot, channel: grpc.Channel) -> None:
    assert slot.post("/v2/repository/models/steady_1/load").status_code == 200

    answer = call(channel, "ModelInfer", _infer_request("steady_1", "a", "b"))

    assert _fields(answer)[0] == (1, b"steady_1")
    assert _output_strings(answer) == ["steady:A", "steady:B"]
    with pytest.raises(grpc.RpcError) as unknown:
        call(channel, "ModelInfer", _infer_request("ghost_1", "a"))
    with pytest.raises(grpc.RpcError) as bad:
        call(channel, "ModelInfer", _infer_request("steady_1", "a", input_name="txt"))
    with pytest.raises(grpc.RpcError) as garbage:
        call(channel, "ModelInfer", b"\xff\xff\xff")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "txt" in (bad.value.details() or "")
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("method", "name", "code"),
    [
        ("RepositoryModelUnload", "ghost_1", grpc.StatusCode.NOT_FOUND),
        ("RepositoryModelLoad", "ghost_1", grpc.StatusCode.NOT_FOUND),
        ("RepositoryModelLoad", "../../etc", grpc.StatusCode.INVALID_ARGUMENT),
        ("RepositoryModelLoad", "escape_1", grpc.StatusCode.PERMISSION_DENIED),
        ("RepositoryModelLoad", "broken_1", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_grpc_errors_carry_the_codes_the_agent_reads(
    channel: grpc.Channel, method: str, name: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, method, _string_field(2, name))
    assert raised.value.code() == code
    assert name.strip("./") in (raised.value.details() or "")


def test_the_slot_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = RepositorySlot(tmp_path, tmp_path / "slot.log")
    try:
        wait_until(proc.live, 90, "the repository slot to be live")
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as chan:
            assert _fields(call(chan, "ServerLive", b"")) == [(1, 1)]
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
    finally:
        proc.stop()
