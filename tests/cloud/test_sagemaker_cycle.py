"""A full release cycle through the real Service on SageMaker: boto3 against the
stand-in's API, real slot processes behind its variants (SageMaker's container contract),
and the golden comparison calling each variant through the stand-in's runtime, signed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgserve.cloud.sagemaker.names import endpoint_name, variant_name
from bgserve.compose.backends import sagemaker_backend
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.cloud.conftest import SageMaker
from tests.support.kube import SlotProcesses, make_components, register, run_cycle, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sagemaker_cycle_through_the_service_with_real_slots(
    tmp_path: Path, mlflow_store: str, sagemaker: SageMaker, slots: SlotProcesses
) -> None:
    flat = sagemaker.api.settings(
        sagemaker_runtime_url=sagemaker.runtime.url, slot_ready_timeout_seconds=120
    )
    settings = Settings(**flat)
    backend = sagemaker_backend(settings, session=sagemaker.api.session())
    parts = make_components(tmp_path, mlflow_store, backend)
    service = parts.service
    ids = register(service, "smcycle")
    endpoint = endpoint_name(settings.sagemaker.name_prefix, "sc")

    def check() -> None:
        state = service.get_deployment("sc").state
        weights = sagemaker.api.weights(endpoint)
        assert weights == {variant_name(r.release_id): float(r.weight) for r in state.routes()}

    steps = run_cycle(parts, "sc", ids, check)
    v1, green = str(ids["v1"]), str(ids["reworded"])
    assert steps == [{v1: 90, green: 10}, {v1: 50, green: 50}, {green: 100, v1: 0}]
    # The comparison called both variants by name through the runtime, every call signed.
    assert sagemaker.runtime.refused == []
    called = {variant for _, variant in sagemaker.runtime.invoked}
    assert called == {variant_name(ids["v1"]), variant_name(ids["reworded"])}
    with pytest.raises(BackendError, match="still takes 100%"):
        backend.retire_slot("sc", ids["v1"])  # blue after the revert: refused
    backend.retire_slot("sc", ids["reworded"])
    wait_until(lambda: slots.running() == [("sc", ids["v1"])], "green's slot to stop")
    left = sagemaker.api.left()
    assert left["models"] == [f"bgserve-sc-r{ids['v1']}"] and left["endpoints"] == [endpoint]
    assert len(left["configs"]) == 1
    service.store.close()
