"""The Vertex AI backend on the gRPC stand-in: what a failed step leaves (nothing), how
Vertex's refusals reach the user, throttling retried, and the stand-in refusing what
Vertex refuses."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from bgserve.cloud.vertex.backend import VertexBackend
from bgserve.compose.backends import vertex_backend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from tests.support.cloud_backend import assert_never_changes_an_unmanaged_endpoint
from tests.support.kube import RELEASES
from tests.support.vertex import LOCATION, PROJECT, VertexStandIn

pytestmark = pytest.mark.integration
ENDPOINT = "bgserve-chat"
NOTHING: dict[str, list[str]] = {"endpoints": [], "deployed": [], "models": []}


def backend_on(api: VertexStandIn, **extra: Any) -> VertexBackend:
    settings = Settings(**api.settings(**{"slot_ready_timeout_seconds": 30, **extra}))
    backend = vertex_backend(settings, clients=api.clients())
    assert isinstance(backend, VertexBackend)
    return backend


def test_a_first_slot_that_never_serves_leaves_nothing(vertex_api: VertexStandIn) -> None:
    # 3 s: creating the endpoint and uploading the model fit well inside it, even on a busy
    # machine (with 1 s, a loaded CI box once spent it all before the deploy began).
    backend = backend_on(vertex_api, slot_ready_timeout_seconds=3)
    vertex_api.starving.add(f"{ENDPOINT}/1")
    with pytest.raises(ReadinessTimeout, match="did not finish within 3s \\(cancelled\\)"):
        backend.ensure_slot("chat", RELEASES[1])
    assert vertex_api.left() == NOTHING
    assert vertex_api.busy == {}


def test_a_staged_slot_whose_deploy_fails_leaves_blue_as_it_was(
    vertex_api: VertexStandIn,
) -> None:
    vertex_api.starve_seconds = 0.2
    backend = backend_on(vertex_api)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    vertex_api.starving.add(f"{ENDPOINT}/2")
    with pytest.raises(BackendError, match="FAILED_PRECONDITION: Model server never became"):
        backend.ensure_slot("chat", RELEASES[2])
    assert vertex_api.left() == {
        "endpoints": [ENDPOINT],
        "deployed": [f"{ENDPOINT}/1"],
        "models": [f"{ENDPOINT}-r1"],
    }
    assert vertex_api.split(ENDPOINT) == {"1": 100}
    assert backend.slot_info("chat", 2) is None


def test_a_request_vertex_refuses_is_a_backend_error_naming_the_call_and_field(
    vertex_api: VertexStandIn,
) -> None:
    backend = backend_on(vertex_api, vertex_machine_type="")
    with pytest.raises(
        BackendError,
        match=r"deploy model refused: INVALID_ARGUMENT: .*machine_spec\.machine_type is required",
    ):
        backend.ensure_slot("chat", RELEASES[1])
    assert vertex_api.left() == NOTHING


def test_throttling_is_retried_until_vertex_answers(vertex_api: VertexStandIn) -> None:
    """RESOURCE_EXHAUSTED on the read and the write of one change: both are tried again
    (api_core's jittered exponential wait, so no lower bound on the time taken)."""
    backend = backend_on(vertex_api, vertex_poll_seconds=0.05)
    backend.ensure_slot("chat", RELEASES[1])
    vertex_api.throttle = 2
    backend.set_routes("chat", [Route("blue", 1, 100)])
    assert vertex_api.throttled == 2
    assert vertex_api.split(ENDPOINT) == {"1": 100}


def test_throttling_past_the_timeout_says_what_to_do(vertex_api: VertexStandIn) -> None:
    backend = backend_on(vertex_api, slot_ready_timeout_seconds=0.5, vertex_poll_seconds=0.1)
    vertex_api.throttle = 1000
    with pytest.raises(BackendError, match=r"still throttled.*raise the project's Vertex AI quota"):
        backend.slot_info("chat", 1)


def test_an_endpoint_bgserve_did_not_create_is_never_changed(vertex_api: VertexStandIn) -> None:
    from google.cloud.aiplatform_v1 import Endpoint

    client = vertex_api.clients().endpoints
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    theirs = Endpoint(display_name="theirs", dedicated_endpoint_enabled=True)
    client.create_endpoint(parent=parent, endpoint=theirs, endpoint_id=ENDPOINT).result()
    assert_never_changes_an_unmanaged_endpoint(backend_on(vertex_api), vertex_api.left)


def test_a_model_of_another_bundle_under_bgserves_id_is_not_used(
    vertex_api: VertexStandIn,
) -> None:
    backend = backend_on(vertex_api)
    backend.ensure_slot("chat", RELEASES[2])
    models = vertex_api.clients().models
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    theirs = models.get_model(name=f"{parent}/models/{ENDPOINT}-r2")
    theirs.name = ""
    # release 2's bundle under release 1's model id
    request = {"parent": parent, "model": theirs, "model_id": f"{ENDPOINT}-r1"}
    models.upload_model(request=request).result()
    with pytest.raises(BackendError, match=r"not release 1's bundle \(BGSERVE_SLOT_MODEL_URI="):
        backend.ensure_slot("chat", RELEASES[1])
    assert vertex_api.left()["deployed"] == [f"{ENDPOINT}/2"]


def test_the_backend_needs_a_project_a_location_and_an_image() -> None:
    with pytest.raises(BackendError, match="BGSERVE_VERTEX_IMAGE"):
        vertex_backend(Settings(backend="vertex"))
    with pytest.raises(BackendError, match=r"BGSERVE_VERTEX_PROJECT and BGSERVE_VERTEX_LOCATION"):
        vertex_backend(Settings(backend="vertex", vertex_image="bgserve:0.1.0"))


# ----- the stand-in refuses what Vertex refuses -----


def refused(call: Any, code: grpc.StatusCode, message: str) -> None:
    from google.api_core import exceptions

    with pytest.raises(exceptions.GoogleAPICallError) as found:
        call()
    assert found.value.grpc_status_code == code
    assert message in str(found.value.message)


def test_the_stand_in_keeps_vertexs_rules(vertex_api: VertexStandIn) -> None:
    from google.cloud.aiplatform_v1 import Endpoint
    from google.protobuf.field_mask_pb2 import FieldMask

    backend = backend_on(vertex_api)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    client = vertex_api.clients().endpoints
    name = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT}"
    mask = FieldMask(paths=["traffic_split"])
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for split, message in (({"1": 90}, "must add up to 100, got 90"), ({"9": 100}, "not have")):
        endpoint = Endpoint(name=name, display_name="chat", traffic_split=split)
        refused(
            lambda e=endpoint: client.update_endpoint(endpoint=e, update_mask=mask),
            invalid,
            message,
        )
    refused(
        lambda: client.get_endpoint(name="endpoints/bgserve-chat"), invalid, "projects/*/locations"
    )
    refused(
        lambda: client.create_endpoint(parent=name.rsplit("/endpoints", 1)[0], endpoint=Endpoint()),
        invalid,
        "endpoint.display_name",
    )
    refused(
        lambda: client.undeploy_model(endpoint=name, deployed_model_id="1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "has 100% of the endpoint's traffic",
    )
    refused(
        lambda: vertex_api.clients().models.delete_model(
            name=f"{name.split('/endpoints')[0]}/models/{ENDPOINT}-r1"
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "undeploy it first",
    )
    refused(
        lambda: client.delete_endpoint(name=name), grpc.StatusCode.FAILED_PRECONDITION, "undeploy"
    )
    refused(lambda: client.get_endpoint(name=name + "x"), grpc.StatusCode.NOT_FOUND, "not found")
