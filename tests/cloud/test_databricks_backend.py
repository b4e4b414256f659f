"""The Databricks backend on the stand-in: what a failed step leaves (nothing), how
Databricks' refusals reach the user, 409 and 429 handled as Databricks asks, and the
stand-in refusing what the Serving Endpoints API refuses."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bgserve.cloud.databricks.backend import DatabricksBackend
from bgserve.compose.backends import databricks_backend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings import Settings
from tests.support.cloud_backend import assert_never_changes_an_unmanaged_endpoint
from tests.support.databricks import DatabricksStandIn
from tests.support.kube import RELEASES

pytestmark = pytest.mark.integration
ENDPOINT = "bgserve-chat"


def backend_on(api: DatabricksStandIn, **extra: Any) -> DatabricksBackend:
    settings = Settings(**api.settings(**{"slot_ready_timeout_seconds": 30, **extra}))
    backend = databricks_backend(settings, client=api.client())
    assert isinstance(backend, DatabricksBackend)
    return backend


def test_a_first_slot_that_never_serves_leaves_no_endpoint(
    databricks_api: DatabricksStandIn,
) -> None:
    databricks_api.starve_seconds = 0.2
    backend = backend_on(databricks_api)
    databricks_api.starving.add(f"{ENDPOINT}/release-1")
    with pytest.raises(BackendError, match=r"UPDATE_FAILED.*release-1: DEPLOYMENT_FAILED"):
        backend.ensure_slot("chat", RELEASES[1])
    assert databricks_api.left() == {"endpoints": [], "entities": []}


def test_a_staged_entity_whose_update_fails_leaves_blue_as_it_was(
    databricks_api: DatabricksStandIn,
) -> None:
    databricks_api.starve_seconds = 0.2
    backend = backend_on(databricks_api)
    backend.ensure_slot("chat", RELEASES[1])
    databricks_api.starving.add(f"{ENDPOINT}/release-2")
    with pytest.raises(BackendError, match="did not become ready"):
        backend.ensure_slot("chat", RELEASES[2])
    endpoint = databricks_api.endpoints[ENDPOINT]
    assert [e["name"] for e in endpoint["config"]["served_entities"]] == ["release-1"]
    assert databricks_api.traffic(ENDPOINT) == {"release-1": 100}
    assert backend.slot_info("chat", 2) is None
    databricks_api.starving.clear()  # staging again works: the failed update left nothing
    assert backend.ensure_slot("chat", RELEASES[2]).ready
    assert databricks_api.traffic(ENDPOINT) == {"release-1": 100, "release-2": 0}


def test_an_update_that_outlasts_the_timeout_is_a_readiness_timeout(
    databricks_api: DatabricksStandIn,
) -> None:
    backend = backend_on(databricks_api, slot_ready_timeout_seconds=1)
    databricks_api.updates.clear()
    with pytest.raises(ReadinessTimeout, match="create endpoint timed out"):
        backend.ensure_slot("chat", RELEASES[1])
    databricks_api.updates.set()
    assert databricks_api.left() == {"endpoints": [], "entities": []}


def test_a_request_databricks_refuses_names_the_field_and_the_fix(
    databricks_api: DatabricksStandIn,
) -> None:
    backend = backend_on(databricks_api, databricks_workload_size="Huge")
    with pytest.raises(
        BackendError, match=r"create endpoint refused: INVALID_PARAMETER_VALUE: .*workload_size"
    ):
        backend.ensure_slot("chat", RELEASES[1])
    assert databricks_api.left() == {"endpoints": [], "entities": []}


def test_a_change_waits_while_another_update_is_in_progress(
    databricks_api: DatabricksStandIn,
) -> None:
    """Databricks answers 409 RESOURCE_CONFLICT while a config update is in progress; the
    backend tries again until that update is done."""
    backend = backend_on(databricks_api)
    backend.ensure_slot("chat", RELEASES[1])
    backend.ensure_slot("chat", RELEASES[2])
    client = databricks_api.client()
    endpoint = client.serving_endpoints.get(ENDPOINT)
    databricks_api.updates.clear()  # the update below holds until released
    client.serving_endpoints.update_config(
        ENDPOINT,
        served_entities=_inputs(endpoint),
        traffic_config=endpoint.config.traffic_config,
    )
    routing = threading.Thread(target=backend.retire_slot, args=("chat", 2), daemon=True)
    routing.start()
    routing.join(0.5)
    assert routing.is_alive()  # waiting, not failed
    databricks_api.updates.set()
    routing.join(20)
    assert not routing.is_alive()
    assert databricks_api.traffic(ENDPOINT) == {"release-1": 100}


def test_a_throttled_call_is_retried_after_retry_after(databricks_api: DatabricksStandIn) -> None:
    backend = backend_on(databricks_api)
    backend.ensure_slot("chat", RELEASES[1])
    backend.ensure_slot("chat", RELEASES[2])
    databricks_api.throttle = 1
    started = time.monotonic()
    backend.set_routes("chat", [Route("blue", 1, 60), Route("green", 2, 40)])
    assert databricks_api.throttled == 1
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert databricks_api.traffic(ENDPOINT) == {"release-1": 60, "release-2": 40}
    assert (
        "GET",
        f"/api/2.0/serving-endpoints/{ENDPOINT}",
        429,
        "REQUEST_LIMIT_EXCEEDED",
    ) in databricks_api.refused


def test_an_endpoint_bgserve_did_not_create_is_never_changed(
    databricks_api: DatabricksStandIn,
) -> None:
    from databricks.sdk.service.serving import EndpointCoreConfigInput, ServedEntityInput

    entity = ServedEntityInput(
        name="theirs", entity_name="m", entity_version="1", workload_size="Small"
    )
    client = databricks_api.client()
    client.serving_endpoints.create(
        ENDPOINT, config=EndpointCoreConfigInput(name=ENDPOINT, served_entities=[entity])
    )
    assert_never_changes_an_unmanaged_endpoint(backend_on(databricks_api), databricks_api.left)


def test_an_entity_of_another_bundle_under_bgserves_name_is_not_used(
    databricks_api: DatabricksStandIn,
) -> None:
    backend = backend_on(databricks_api)
    backend.ensure_slot("chat", RELEASES[1])
    other = RELEASES[2]  # another state's release 1: release 2's bundle under id 1
    with pytest.raises(BackendError, match=r"not release 1's bundle \(it serves .* version 1, "):
        backend.ensure_slot("chat", type(other)(**{**vars(other), "id": 1}))


def test_the_backend_needs_a_workspace() -> None:
    with pytest.raises(BackendError, match="DATABRICKS_HOST"):
        databricks_backend(Settings(backend="databricks"), client=None)


def _inputs(endpoint: Any) -> list[Any]:
    from bgserve.cloud.databricks.entities import as_inputs

    return as_inputs(endpoint.config.served_entities)


# ----- the stand-in refuses what Databricks refuses -----


def raw(api: DatabricksStandIn, method: str, path: str, body: str) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {api.token}"}
    status, _, answer = api.answer(method, f"https://ws{path}", headers, body.encode())
    return status, answer


ENTITY = '{"name": "a", "entity_name": "m", "entity_version": "1", "workload_size": "Small"}'


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ('{"name": "e", "confg": {}}', "Unknown field 'confg'"),
        (
            '{"name": "e", "config": {"name": "e", "served_entities": [{"nme": "a"}]}}',
            "Unknown field 'config.served_entities[0].nme' (ServedEntityInput)",
        ),
        ('{"name": "e", "config": {"served_entities": []}}', "Missing required field: config.name"),
        (
            '{"name": "e", "config": {"name": "e", "served_entities": [' + ENTITY + "], "
            '"traffic_config": {"routes": [{"served_entity_name": "a", "traffic_percentage": '
            '"90"}]}}}',
            'Invalid value "90" for config.traffic_config.routes[0].traffic_percentage',
        ),
        (
            '{"name": "e", "config": {"name": "e", "served_entities": [{"name": "a", '
            '"workload_type": "TPU"}]}}',
            "Invalid value 'TPU' for config.served_entities[0].workload_type",
        ),
    ],
)
def test_the_stand_in_refuses_a_body_the_sdk_types_refuse(
    databricks_api: DatabricksStandIn, body: str, found: str
) -> None:
    status, answer = raw(databricks_api, "POST", "/api/2.0/serving-endpoints", body)
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert found in answer["message"]


def test_the_stand_in_keeps_databricks_traffic_and_name_rules(
    databricks_api: DatabricksStandIn,
) -> None:
    backend = backend_on(databricks_api)
    backend.ensure_slot("chat", RELEASES[1])
    config = '{"served_entities": [%s], "traffic_config": {"routes": %s}}'
    path = f"/api/2.0/serving-endpoints/{ENDPOINT}/config"
    for routes, message in (
        ('[{"served_entity_name": "a", "traffic_percentage": 90}]', "must sum to 100, got 90"),
        ('[{"served_entity_name": "b", "traffic_percentage": 100}]', "not in the config: ['b']"),
    ):
        status, answer = raw(databricks_api, "PUT", path, config % (ENTITY, routes))
        assert status == 400 and message in answer["message"]
    status, answer = raw(databricks_api, "POST", "/api/2.0/serving-endpoints", '{"name": "a.b"}')
    assert status == 400 and "alphanumeric characters, dashes and underscores" in answer["message"]
    status, answer = raw(databricks_api, "GET", "/api/2.0/serving-endpoints/nope", "")
    assert (status, answer["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    databricks_api.updates.clear()
    ok = '[{"served_entity_name": "a", "traffic_percentage": 100}]'
    assert raw(databricks_api, "PUT", path, config % (ENTITY, ok))[0] == 200
    status, answer = raw(databricks_api, "PUT", path, config % (ENTITY, ok))
    assert (status, answer["error_code"]) == (409, "RESOURCE_CONFLICT")
    databricks_api.updates.set()
