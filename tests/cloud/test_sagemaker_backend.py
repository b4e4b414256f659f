"""The SageMaker backend on the stand-in's API: what a failed step leaves (nothing), how
SageMaker's refusals reach the user, and what the runtime stand-in refuses."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from bgserve.cloud.sagemaker.backend import SageMakerBackend
from bgserve.cloud.sagemaker.variants import model_request
from bgserve.compose.backends import sagemaker_backend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from bgserve.slot.sagemaker import RELEASE_ID_ENV
from tests.cloud.conftest import SageMaker
from tests.support.cloud_backend import assert_never_changes_an_unmanaged_endpoint
from tests.support.kube import RELEASES
from tests.support.sagemaker import SageMakerStandIn

pytestmark = pytest.mark.integration


def backend_on(api: SageMakerStandIn, **extra: Any) -> SageMakerBackend:
    settings = Settings(**api.settings(**{"slot_ready_timeout_seconds": 30, **extra}))
    backend = sagemaker_backend(settings, session=api.session())
    assert isinstance(backend, SageMakerBackend)
    return backend


def test_a_first_slot_that_never_serves_leaves_no_endpoint_config_or_model(
    stand_in: SageMakerStandIn,
) -> None:
    backend = backend_on(stand_in, slot_ready_timeout_seconds=1)
    stand_in.starving.add("bgserve-chat-r1")
    with pytest.raises(ReadinessTimeout, match="did not come to serve release 1"):
        backend.ensure_slot("chat", RELEASES[1])
    assert stand_in.left() == {"models": [], "configs": [], "endpoints": []}


def test_a_staged_slot_that_never_serves_leaves_blue_as_it_was(
    stand_in: SageMakerStandIn,
) -> None:
    backend = backend_on(stand_in)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    stand_in.starving.add("bgserve-chat-r2")
    with pytest.raises(ReadinessTimeout):
        backend_on(stand_in, slot_ready_timeout_seconds=1).ensure_slot("chat", RELEASES[2])
    left = stand_in.left()
    assert left["models"] == ["bgserve-chat-r1"] and left["endpoints"] == ["bgserve-chat"]
    assert len(left["configs"]) == 1  # the config in use, nothing else
    assert stand_in.weights("bgserve-chat") == {"r1": 100.0}
    assert backend.slot_info("chat", 2) is None


def test_a_request_sagemaker_refuses_is_a_backend_error_naming_the_call(
    stand_in: SageMakerStandIn,
) -> None:
    """botocore checks each request against SageMaker's published model before it is
    sent (an ExecutionRoleArn is 20 characters at least), as on AWS."""
    backend = backend_on(stand_in, sagemaker_role_arn="arn:too-short")
    with pytest.raises(BackendError, match=r"SageMaker CreateModel failed: .*ExecutionRoleArn"):
        backend.ensure_slot("chat", RELEASES[1])
    assert stand_in.left() == {"models": [], "configs": [], "endpoints": []}


def test_a_change_waits_for_an_updating_endpoint_instead_of_failing(
    stand_in: SageMakerStandIn,
) -> None:
    """SageMaker refuses a change while an endpoint updates; the backend waits for it to
    settle, so routing right after staging works."""
    backend = backend_on(stand_in)
    backend.ensure_slot("chat", RELEASES[1])
    client = stand_in.client()
    config = stand_in.state.endpoints["bgserve-chat"].endpoint_config_name
    stand_in.updates.clear()  # the update below holds until released
    client.update_endpoint(EndpointName="bgserve-chat", EndpointConfigName=config)
    assert client.describe_endpoint(EndpointName="bgserve-chat")["EndpointStatus"] == "Updating"
    routing = threading.Thread(
        target=backend.set_routes, args=("chat", [Route("blue", 1, 100)]), daemon=True
    )
    routing.start()
    routing.join(0.5)
    assert routing.is_alive()  # waiting, not refused
    assert stand_in.weights("bgserve-chat") == {"r1": 1.0}
    stand_in.updates.set()
    routing.join(10)
    assert not routing.is_alive()
    assert stand_in.weights("bgserve-chat") == {"r1": 100.0}


def test_a_failed_endpoint_is_reported_with_sagemakers_reason(
    stand_in: SageMakerStandIn,
) -> None:
    backend = backend_on(stand_in)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    stand_in.fail("bgserve-chat", "the image could not be pulled")
    with pytest.raises(BackendError, match="is Failed: the image could not be pulled"):
        backend.ensure_slot("chat", RELEASES[2])
    assert stand_in.left()["models"] == ["bgserve-chat-r1"]


def test_the_backend_needs_a_role_and_an_image() -> None:
    with pytest.raises(
        BackendError, match="BGSERVE_SAGEMAKER_ROLE_ARN and BGSERVE_SAGEMAKER_IMAGE"
    ):
        sagemaker_backend(Settings(backend="sagemaker", sagemaker_region="us-east-1"))


def test_a_variant_call_is_signed_and_an_unsigned_or_forged_one_refused(
    sagemaker: SageMaker,
) -> None:
    """The runtime stand-in verifies SigV4 as SageMaker does, so a comparison that
    reached a slot was signed right: the backend's signed call passes the check, the
    same call without a signature or with one made with another secret does not."""
    backend = backend_on(sagemaker.api, sagemaker_runtime_url=sagemaker.runtime.url)
    call = backend.slot_call("chat", 1)
    body = json.dumps({"inputs": []}).encode()
    headers = dict(call.headers(body))
    assert headers["X-Amzn-SageMaker-Target-Variant"] == "r1"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    unsigned = {k: v for k, v in headers.items() if k != "Authorization"}
    forged = {**headers, "Authorization": headers["Authorization"][:-8] + "00000000"}
    for bad in (unsigned, forged):
        answer = httpx.post(call.url, content=body, headers=bad)
        assert answer.status_code == 403, answer.text
    assert len(sagemaker.runtime.refused) == 2
    # The signed call is refused only for what follows the signature check: no endpoint.
    answer = httpx.post(call.url, content=body, headers=headers)
    assert answer.status_code == 400 and "not found" in answer.json()["message"]


def test_an_endpoint_bgserve_did_not_create_is_never_changed(stand_in: SageMakerStandIn) -> None:
    """A user's endpoint under the name bgserve would use: no variant added, no weight
    moved, nothing retired; the error says how to get out of the way."""
    client = stand_in.client()
    client.create_model(
        ModelName="theirs",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/theirs",
        PrimaryContainer={"Image": "their-image"},
    )
    variant = {"VariantName": "r1", "ModelName": "theirs", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    client.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[variant])
    client.create_endpoint(EndpointName="bgserve-chat", EndpointConfigName="theirs")
    assert_never_changes_an_unmanaged_endpoint(backend_on(stand_in), stand_in.left)


def test_cloudwatch_is_read_once_per_interval_not_at_every_engine_tick(
    stand_in: SageMakerStandIn,
) -> None:
    """Its counts change once a minute: a reading is reused for 15 seconds (what the
    composition root wraps it in)."""
    import datetime as dt

    from bgserve.app.traffic_reuse import ReadEvery
    from bgserve.cloud.sagemaker.metrics import CloudWatchTraffic

    now = [dt.datetime.now(dt.UTC)]
    cloudwatch = CloudWatchTraffic(
        stand_in.client("cloudwatch"), lambda _: ("bgserve-chat", {1: "r1"}), lambda: now[0]
    )
    traffic = ReadEvery(cloudwatch, 15.0, lambda: now[0].timestamp())
    dimensions = [
        {"Name": "EndpointName", "Value": "bgserve-chat"},
        {"Name": "VariantName", "Value": "r1"},
    ]

    def invoked(count: int) -> None:
        data = [{"MetricName": "Invocations", "Dimensions": dimensions, "Value": float(count)}]
        stand_in.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=data)

    invoked(3)
    assert traffic.windows("chat")[1].requests == 3
    invoked(4)
    now[0] += dt.timedelta(seconds=14)
    assert traffic.windows("chat")[1].requests == 3  # the reading is reused
    now[0] += dt.timedelta(seconds=2)
    assert traffic.windows("chat")[1].requests == 7


def test_a_model_under_bgserves_name_is_used_only_if_it_is_that_releases_bundle(
    stand_in: SageMakerStandIn,
) -> None:
    """Release ids belong to one bgserve state: a model of the same name made by another
    state (or by hand) is never put behind a variant, and nothing is created meanwhile."""
    client = stand_in.client()
    role = "arn:aws:iam::123456789012:role/theirs"
    client.create_model(
        ModelName="bgserve-chat-r1", ExecutionRoleArn=role, PrimaryContainer={"Image": "x"}
    )
    backend = backend_on(stand_in)
    with pytest.raises(BackendError, match=r"bgserve-chat-r1 exists but .*no tag managed-by"):
        backend.ensure_slot("chat", RELEASES[1])
    # Tagged as bgserve's, but made for another bundle under the same release id.
    client.delete_model(ModelName="bgserve-chat-r1")
    request = model_request("bgserve-chat-r1", "chat", RELEASES[2], backend.sm, backend.slot_env)
    request["PrimaryContainer"]["Environment"][RELEASE_ID_ENV] = "1"
    client.create_model(**request)
    with pytest.raises(BackendError, match=r"not release 1's bundle \(BGSERVE_SLOT_MODEL_URI="):
        backend.ensure_slot("chat", RELEASES[1])
    assert stand_in.left() == {"models": ["bgserve-chat-r1"], "configs": [], "endpoints": []}
    # Its own model, left by an earlier call, is used as it is.
    client.delete_model(ModelName="bgserve-chat-r1")
    mine = model_request("bgserve-chat-r1", "chat", RELEASES[1], backend.sm, backend.slot_env)
    client.create_model(**mine)
    backend.ensure_slot("chat", RELEASES[1])
    assert stand_in.left()["models"] == ["bgserve-chat-r1"]
