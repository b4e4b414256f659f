"""A full release cycle through the real Service on Vertex AI: the GAPIC clients against
the gRPC stand-in, real slot processes behind its deployed models (the image's ``serve``),
the golden comparison calling each deployed model through the dedicated endpoint's invoke
API by its id, and clients' calls split by the traffic split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bgserve.cloud.vertex.names import endpoint_name
from bgserve.compose.backends import vertex_backend
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.cloud.conftest import Vertex
from tests.support.kube import SlotProcesses, make_components, register, run_cycle, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b c"]}]}


def test_vertex_cycle_through_the_service_with_real_slots(
    tmp_path: Path, mlflow_store: str, vertex: Vertex, slots: SlotProcesses
) -> None:
    settings = Settings(**vertex.api.settings(slot_ready_timeout_seconds=120))
    backend = vertex_backend(settings, clients=vertex.api.clients(vertex.credentials))
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "vxcycle")
    endpoint = endpoint_name(settings.vertex.name_prefix, "vx")

    def check() -> None:
        state = service.get_deployment("vx").state
        routed = {str(r.release_id): r.weight for r in state.routes() if r.weight}
        assert vertex.api.split(endpoint) == routed

    steps = run_cycle(parts, "vx", ids, check)
    v1, green = str(ids["v1"]), str(ids["reworded"])
    assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
    # The comparison called both deployed models by id through the invoke API, with a token.
    assert vertex.dedicated.refused == []
    called = {(d, p) for _, d, p in vertex.dedicated.invoked}
    assert called == {(v1, "/invocations"), (green, "/invocations")}
    # Every request the GAPIC clients sent passed the stand-in's rules (lookups of what
    # did not exist yet aside).
    assert [r for r in vertex.api.refused if r[1] != "NOT_FOUND"] == []
    with pytest.raises(BackendError, match="still takes 100%"):
        backend.retire_slot("vx", ids["v1"])  # blue after the revert: refused
    backend.retire_slot("vx", ids["reworded"])
    wait_until(lambda: slots.running() == [("vx", ids["v1"])], "green's slot to stop")
    assert vertex.api.left() == {
        "endpoints": [endpoint],
        "deployed": [f"{endpoint}/{v1}"],
        "models": [f"{endpoint}-r{v1}"],
    }
    service.store.close()


def test_clients_are_split_by_the_traffic_split_and_green_is_reached_by_its_id(
    tmp_path: Path, mlflow_store: str, vertex: Vertex
) -> None:
    from bgserve.domain.rollout import Route

    settings = Settings(**vertex.api.settings(slot_ready_timeout_seconds=120))
    backend = vertex_backend(settings, clients=vertex.api.clients(vertex.credentials))
    parts = make_components(tmp_path, mlflow_store, backend)
    ids = register(parts.service, "vxsplit")
    blue, green = (parts.service.store.get_release(ids[k]) for k in ("v1", "reworded"))
    for release in (blue, green):
        backend.ensure_slot("vs", release)
    backend.set_routes("vs", [Route("blue", blue.id, 70), Route("green", green.id, 30)])
    url = backend.data_plane_url("vs")
    assert url is not None and url.endswith("/invoke/v2/models/vs/infer")
    token = {"Authorization": f"Bearer {vertex.credentials.token}"}
    answered: Counter[str] = Counter()
    for _ in range(60):
        answer = httpx.post(url, json=BODY, headers=token, timeout=60)
        assert answer.status_code == 200, answer.text
        answered[answer.headers["x-vertex-ai-deployed-model-id"]] += 1
    assert set(answered) == {str(blue.id), str(green.id)}
    assert answered[str(blue.id)] > answered[str(green.id)]
    # green alone, at its 30% and at 0%, through the slot's own OIP route
    direct = backend.slot_info("vs", green.id)
    assert direct is not None
    backend.set_routes("vs", [Route("blue", blue.id, 100), Route("green", green.id, 0)])
    for _ in range(5):
        answer = httpx.post(f"{direct.endpoint}/v2/models/vs/infer", json=BODY, headers=token)
        assert answer.headers["x-vertex-ai-deployed-model-id"] == str(green.id)
        assert json.loads(answer.content)["outputs"][0]["name"] == "output"
    refused = httpx.post(url, json=BODY, timeout=60)
    assert refused.status_code == 401
    parts.service.store.close()
