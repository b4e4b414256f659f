"""The Azure ML backend on the ARM stand-in: what a failed step leaves (nothing), how
Azure's refusals reach the user, 409 and 429 handled as Azure asks, and the stand-in
refusing what ARM refuses."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bgserve.cloud.azureml.backend import AzureMLBackend
from bgserve.compose.backends import azureml_backend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from tests.support.azureml import WS_PATH, AzureMLStandIn
from tests.support.cloud_backend import assert_never_changes_an_unmanaged_endpoint
from tests.support.kube import RELEASES

pytestmark = pytest.mark.integration
ENDPOINT = "bgserve-chat"


def backend_on(api: AzureMLStandIn, **extra: Any) -> AzureMLBackend:
    settings = Settings(**api.settings(**{"slot_ready_timeout_seconds": 30, **extra}))
    backend = azureml_backend(settings, client=api.client())
    assert isinstance(backend, AzureMLBackend)
    return backend


def test_a_first_slot_that_never_serves_leaves_no_endpoint_or_deployment(
    azure_api: AzureMLStandIn,
) -> None:
    backend = backend_on(azure_api, slot_ready_timeout_seconds=1)
    azure_api.starving.add(f"{ENDPOINT}/release-1")
    with pytest.raises(ReadinessTimeout, match="did not finish within"):
        backend.ensure_slot("chat", RELEASES[1])
    azure_api.starving.clear()
    assert azure_api.left() == {"endpoints": [], "deployments": []}


def test_a_staged_slot_whose_provisioning_fails_leaves_blue_as_it_was(
    azure_api: AzureMLStandIn,
) -> None:
    azure_api.starve_seconds = 0.2
    backend = backend_on(azure_api)
    backend.ensure_slot("chat", RELEASES[1])
    backend.set_routes("chat", [Route("blue", 1, 100)])
    azure_api.starving.add(f"{ENDPOINT}/release-2")
    with pytest.raises(BackendError, match="ResourceNotReady: The readiness probe"):
        backend.ensure_slot("chat", RELEASES[2])
    assert azure_api.left() == {"endpoints": [ENDPOINT], "deployments": [f"{ENDPOINT}/release-1"]}
    assert azure_api.traffic(ENDPOINT) == {"release-1": 100}
    assert backend.slot_info("chat", 2) is None


def test_a_request_azure_refuses_is_a_backend_error_naming_the_call_and_field(
    azure_api: AzureMLStandIn,
) -> None:
    backend = backend_on(azure_api, azureml_instance_type="")
    with pytest.raises(
        BackendError, match=r"create deployment refused: BadArgument: .*instanceType"
    ):
        backend.ensure_slot("chat", RELEASES[1])
    assert azure_api.left() == {"endpoints": [], "deployments": []}


def test_a_change_waits_while_another_operation_runs_on_the_endpoint(
    azure_api: AzureMLStandIn,
) -> None:
    """Azure answers 409 while an endpoint or one of its deployments is busy; the backend
    starts its change again until the other operation is done."""
    backend = backend_on(azure_api)
    backend.ensure_slot("chat", RELEASES[1])
    client = azure_api.client()
    deployment = client.online_deployments.get("release-1", ENDPOINT)
    azure_api.updates.clear()  # the update below holds until released
    client.online_deployments.begin_create_or_update(deployment)
    routing = threading.Thread(
        target=backend.set_routes, args=("chat", [Route("blue", 1, 100)]), daemon=True
    )
    routing.start()
    routing.join(0.5)
    assert routing.is_alive()  # waiting, not failed
    assert any(status == 409 for _, _, status, _ in azure_api.refused)
    assert azure_api.traffic(ENDPOINT) == {}
    azure_api.updates.set()
    routing.join(10)
    assert not routing.is_alive()
    assert azure_api.traffic(ENDPOINT) == {"release-1": 100}


def test_throttling_is_retried_after_azures_retry_after(azure_api: AzureMLStandIn) -> None:
    backend = backend_on(azure_api)
    backend.ensure_slot("chat", RELEASES[1])
    azure_api.throttle = 1
    started = time.monotonic()
    backend.set_routes("chat", [Route("blue", 1, 100)])
    assert azure_api.throttled == 1
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert azure_api.traffic(ENDPOINT) == {"release-1": 100}


def test_an_endpoint_bgserve_did_not_create_is_never_changed(azure_api: AzureMLStandIn) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    client = azure_api.client()
    client.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=ENDPOINT)).result()
    assert_never_changes_an_unmanaged_endpoint(backend_on(azure_api), azure_api.left)


def test_a_deployment_of_another_bundle_under_bgserves_name_is_not_used(
    azure_api: AzureMLStandIn,
) -> None:
    backend = backend_on(azure_api)
    backend.ensure_slot("chat", RELEASES[2])
    client = azure_api.client()
    theirs = client.online_deployments.get("release-2", ENDPOINT)
    theirs.name = "release-1"  # release 2's bundle under release 1's name
    client.online_deployments.begin_create_or_update(theirs).result()
    with pytest.raises(BackendError, match=r"not release 1's bundle \(BGSERVE_SLOT_MODEL_URI="):
        backend.ensure_slot("chat", RELEASES[1])


def test_the_backend_needs_a_workspace_and_an_image() -> None:
    with pytest.raises(BackendError, match="BGSERVE_AZUREML_IMAGE"):
        azureml_backend(Settings(backend="azureml"))
    with pytest.raises(BackendError, match=r"SUBSCRIPTION_ID and .*RESOURCE_GROUP and .*WORKSPACE"):
        azureml_backend(Settings(backend="azureml", azureml_image="bgserve:0.1.0"))


# ----- the stand-in refuses what ARM refuses -----


def put(api: AzureMLStandIn, path: str, body: str) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {api.token}"}
    url = f"https://management.azure.com{WS_PATH}/{path}?api-version=2023-04-01-preview"
    status, _, answer = api.answer("PUT", url, headers, body.encode())
    return status, answer


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (
            '{"location": "westeurope", "properties": {"authMode": "Key", "trafic": {}}}',
            "Could not find member 'trafic' on object of type 'OnlineEndpointProperties'",
        ),
        ('{"location": "westeurope", "properties": {}}', "Required property 'authMode'"),
        (
            '{"location": "westeurope", "properties": {"authMode": "Password"}}',
            "Error converting value 'Password' to type 'EndpointAuthMode'",
        ),
        (
            '{"location": "westeurope", "properties": {"authMode": "Key", "traffic": {"a": 10.5}}}',
            "Error converting value 10.5 to type 'int'",
        ),
    ],
)
def test_the_stand_in_refuses_a_body_the_rest_models_refuse(
    azure_api: AzureMLStandIn, body: str, found: str
) -> None:
    status, answer = put(azure_api, "onlineEndpoints/bgserve-x", body)
    assert status == 400 and answer["error"]["code"] == "InvalidRequestContent"
    assert found in answer["error"]["message"]


def test_the_stand_in_keeps_azures_traffic_and_name_rules(azure_api: AzureMLStandIn) -> None:
    backend = backend_on(azure_api)
    backend.ensure_slot("chat", RELEASES[1])
    ok = '{"location": "westeurope", "properties": {"authMode": "Key", "traffic": %s}}'
    for traffic, message in (
        ('{"release-1": 90}', "must sum to 100, got 90"),
        ('{"release-9": 100}', "do not exist on endpoint"),
    ):
        status, answer = put(azure_api, f"onlineEndpoints/{ENDPOINT}", ok % traffic)
        assert status == 400 and message in answer["error"]["message"]
    status, answer = put(azure_api, "onlineEndpoints/9-starts-with-a-digit", ok % "{}")
    assert status == 400 and "3-32 characters" in answer["error"]["message"]
    backend.set_routes("chat", [Route("blue", 1, 100)])
    client = azure_api.client()
    with pytest.raises(Exception, match="takes 100% of endpoint"):
        client.online_deployments.begin_delete("release-1", ENDPOINT).result()
