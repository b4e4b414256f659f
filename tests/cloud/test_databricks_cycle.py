"""A full release cycle through the real Service on Databricks: databricks-sdk against the
stand-in, MLflow's scoring server (what Databricks runs for a model version) behind each
served entity, and the golden comparison calling each entity on its own invocations route
through the backend's adapter, bypassing the traffic config."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bgserve.cloud.databricks.names import endpoint_name, entity_name
from bgserve.compose.backends import databricks_backend
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.support.databricks import DatabricksStandIn
from tests.support.databricks_platform import ModelHost
from tests.support.kube import make_components, register, run_cycle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_databricks_cycle_through_the_service_with_real_model_servers(
    tmp_path: Path, mlflow_store: str, databricks_api: DatabricksStandIn, databricks: ModelHost
) -> None:
    settings = Settings(**databricks_api.settings(slot_ready_timeout_seconds=120))
    client = databricks_api.client()
    backend = databricks_backend(settings, client=client)
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "dbcycle")
    endpoint = endpoint_name(settings.databricks.name_prefix, "dc")

    def check() -> None:
        state = service.get_deployment("dc").state
        routed = {entity_name(r.release_id): r.weight for r in state.routes()}
        assert databricks_api.traffic(endpoint) == routed

    steps = run_cycle(parts, "dc", ids, check)
    v1, green = str(ids["v1"]), str(ids["reworded"])
    assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
    # The comparison reached both entities by name, not by the traffic config.
    called = {name for _, name in databricks.invoked}
    assert called == {entity_name(ids["v1"]), entity_name(ids["reworded"])}
    # Every request the SDK sent passed the SDK's types and Databricks' rules.
    assert [r for r in databricks_api.refused if r[2] != 404] == []
    service.shift("dc", 50, "test", force=True)
    answered = Counter(_query(client, endpoint) for _ in range(40))
    assert set(answered) == {entity_name(ids["v1"]), entity_name(ids["reworded"])}
    service.revert("dc", "test")
    with pytest.raises(BackendError, match="still takes 100%"):
        backend.retire_slot("dc", ids["v1"])  # blue after the revert: refused
    backend.retire_slot("dc", ids["reworded"])
    assert databricks.entities() == [(endpoint, entity_name(ids["v1"]))]
    assert databricks_api.left() == {
        "endpoints": [endpoint],
        "entities": [f"{endpoint}/{entity_name(ids['v1'])}"],
    }
    backend.close()
    service.store.close()


def _query(client: object, endpoint: str) -> str:
    """One call of the endpoint through the SDK, as a user's client makes it; the entity
    that answered (the ``served-model-name`` header)."""
    answer = client.serving_endpoints.query(  # type: ignore[attr-defined]
        endpoint, dataframe_records=[{"text": "a short text"}]
    )
    assert answer.predictions and isinstance(answer.predictions[0], str), json.dumps(
        answer.as_dict()
    )
    return str(answer.served_model_name)
