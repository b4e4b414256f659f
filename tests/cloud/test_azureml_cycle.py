"""A full release cycle through the real Service on Azure ML: azure-ai-ml against the ARM
stand-in, real slot processes behind its deployments (the image's ``serve``), and the
golden comparison calling each deployment through the endpoint's scoring URI, by the
``azureml-model-deployment`` header, with the endpoint's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgserve.cloud.azureml.names import deployment_name, endpoint_name
from bgserve.compose.backends import azureml_backend
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.cloud.conftest import AzureML
from tests.support.kube import SlotProcesses, make_components, register, run_cycle, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_azureml_cycle_through_the_service_with_real_slots(
    tmp_path: Path, mlflow_store: str, azureml: AzureML, slots: SlotProcesses
) -> None:
    settings = Settings(**azureml.api.settings(slot_ready_timeout_seconds=120))
    backend = azureml_backend(settings, client=azureml.api.client())
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "azcycle")
    endpoint = endpoint_name(settings.azureml.name_prefix, "ac")

    def check() -> None:
        state = service.get_deployment("ac").state
        routed = {deployment_name(r.release_id): r.weight for r in state.routes() if r.weight}
        assert azureml.api.traffic(endpoint) == routed

    steps = run_cycle(parts, "ac", ids, check)
    v1, green = str(ids["v1"]), str(ids["reworded"])
    assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
    # The comparison called both deployments by name through the scoring URI, with a key.
    assert azureml.scoring.refused == []
    called = {name for _, name in azureml.scoring.invoked}
    assert called == {deployment_name(ids["v1"]), deployment_name(ids["reworded"])}
    # Every request the SDK sent passed the REST models and Azure's rules.
    assert [r for r in azureml.api.refused if r[2] != 404] == []
    with pytest.raises(BackendError, match="still takes 100%"):
        backend.retire_slot("ac", ids["v1"])  # blue after the revert: refused
    backend.retire_slot("ac", ids["reworded"])
    wait_until(lambda: slots.running() == [("ac", ids["v1"])], "green's slot to stop")
    assert azureml.api.left() == {
        "endpoints": [endpoint],
        "deployments": [f"{endpoint}/{deployment_name(ids['v1'])}"],
    }
    service.store.close()
