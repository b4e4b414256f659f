"""The backend contract: the same tests against the memory, local, KServe, Seldon (v2
and v1), SageMaker, Azure ML and Databricks backends. What one backend does here, every
backend does, or the divergence is marked where it is known (strict: the mark fails once the
backend is fixed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError
from tests.contract.harness import (
    DEPLOYMENT,
    KINDS,
    Harness,
    azureml_harness,
    databricks_harness,
    kube_harness,
    local_harness,
    memory_harness,
    sagemaker_harness,
    vertex_harness,
)
from tests.support.models import build_bundle

# The echo bundle has no type hints on predict; MLflow warns about it every time.
pytestmark = pytest.mark.filterwarnings("ignore:.*type hints:UserWarning")

SLOW = {"local": [pytest.mark.integration, pytest.mark.slow]}
BACKENDS = [
    pytest.param(kind, marks=SLOW.get(kind, [] if kind == "memory" else [pytest.mark.integration]))
    for kind in KINDS
]


@pytest.fixture(scope="module")
def local_bundles(tmp_path_factory: pytest.TempPathFactory) -> Mapping[int, str]:
    """Echo bundles for releases 1-3 of the local backend (v1, v2, v1 again)."""
    root = tmp_path_factory.mktemp("bundles")
    v1, v2 = build_bundle(root, "v1"), build_bundle(root, "v2")
    return {1: v1, 2: v2, 3: v1}


@pytest.fixture(params=BACKENDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The backend under test, fresh for each test."""
    kind: str = request.param
    if kind == "memory":
        yield from memory_harness()
    elif kind == "local":
        yield from local_harness(tmp_path, request.getfixturevalue("local_bundles"))
    elif kind == "sagemaker":
        yield from sagemaker_harness()
    elif kind == "azureml":
        yield from azureml_harness()
    elif kind == "databricks":
        yield from databricks_harness()
    elif kind == "vertex":
        yield from vertex_harness()
    else:
        yield from kube_harness(kind, request.getfixturevalue("kube_cluster"))


def ensure(h: Harness, *release_ids: int) -> None:
    for release_id in release_ids:
        assert h.backend.ensure_slot(DEPLOYMENT, h.release(release_id)).ready


def test_ensure_slot_is_idempotent_and_never_moves_weights(h: Harness) -> None:
    first = h.backend.ensure_slot(DEPLOYMENT, h.release(1))
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 100)])
    again = h.backend.ensure_slot(DEPLOYMENT, h.release(1))
    assert first.ready and again == first
    assert h.backend.slot_info(DEPLOYMENT, 1) == first
    h.backend.ensure_slot(DEPLOYMENT, h.release(2))
    assert h.routed() == {1: 100}


def test_set_routes_puts_every_weight_in_place_and_is_idempotent(h: Harness) -> None:
    ensure(h, 1, 2)
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 100), Route("green", 2, 0)])
    assert h.routed() == {1: 100}
    routes = [Route("blue", 1, 40), Route("green", 2, 60)]
    h.backend.set_routes(DEPLOYMENT, routes)
    h.backend.set_routes(DEPLOYMENT, routes)
    assert h.weights(DEPLOYMENT) == {1: 40, 2: 60}


REFUSED = {
    "sum-90": [Route("blue", 1, 90)],
    "sum-110": [Route("blue", 1, 50), Route("green", 2, 60)],
    "negative": [Route("blue", 1, 110), Route("green", 2, -10)],
    "no-slot": [Route("blue", 1, 50), Route("green", 9, 50)],
    "no-slot-at-0": [Route("blue", 1, 100), Route("green", 9, 0)],
}


def test_refused_routes_leave_the_previous_weights(h: Harness) -> None:
    ensure(h, 1, 2)  # one backend for every case: slots of the local one take seconds
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 70), Route("green", 2, 30)])
    for case, routes in REFUSED.items():
        with pytest.raises(BgserveError) as refused:
            h.backend.set_routes(DEPLOYMENT, routes)
        assert isinstance(refused.value, BackendError), case
        assert h.weights(DEPLOYMENT) == {1: 70, 2: 30}, case


def test_weight_on_a_slot_that_is_down_is_refused(h: Harness) -> None:
    ensure(h, 1, 2)
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 100), Route("green", 2, 0)])
    h.take_down(DEPLOYMENT, 2)
    before = h.weights(DEPLOYMENT)
    with pytest.raises(BackendError):
        h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 50), Route("green", 2, 50)])
    assert h.weights(DEPLOYMENT) == before
    info = h.backend.slot_info(DEPLOYMENT, 2)
    assert info is not None and not info.ready


def test_traffic_goes_back_to_blue_while_green_is_down(h: Harness) -> None:
    """A revert works at any moment: green at 30% goes down, blue gets its 100% back
    (Seldon v1 once read the whole SeldonDeployment's state and refused)."""
    ensure(h, 1, 2)
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 70), Route("green", 2, 30)])
    h.take_down(DEPLOYMENT, 2)
    with pytest.raises(BackendError):
        h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 50), Route("green", 2, 50)])
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 100), Route("green", 2, 0)])
    assert h.routed() == {1: 100}


def test_retire_is_idempotent(h: Harness) -> None:
    ensure(h, 1, 2)
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 100), Route("green", 2, 0)])
    h.backend.retire_slot(DEPLOYMENT, 2)
    assert h.backend.slot_info(DEPLOYMENT, 2) is None
    h.backend.retire_slot(DEPLOYMENT, 2)
    h.backend.retire_slot(DEPLOYMENT, 7)  # never existed
    h.backend.retire_slot("elsewhere", 1)
    assert h.routed() == {1: 100}
    assert h.backend.slot_info(DEPLOYMENT, 1) is not None


def test_retire_is_refused_while_the_slot_takes_traffic(h: Harness) -> None:
    ensure(h, 1, 2)
    h.backend.set_routes(DEPLOYMENT, [Route("blue", 1, 60), Route("green", 2, 40)])
    with pytest.raises(BackendError):
        h.backend.retire_slot(DEPLOYMENT, 1)
    info = h.backend.slot_info(DEPLOYMENT, 1)
    assert info is not None and info.ready
    assert h.weights(DEPLOYMENT) == {1: 60, 2: 40}


def test_slot_info_is_none_for_an_unknown_slot(h: Harness) -> None:
    assert h.backend.slot_info(DEPLOYMENT, 42) is None
    ensure(h, 1)
    assert h.backend.slot_info(DEPLOYMENT, 42) is None
    assert h.backend.slot_info("elsewhere", 1) is None
    info = h.backend.slot_info(DEPLOYMENT, 1)
    assert info is not None and info.release_id == 1 and info.ready
    assert urlsplit(info.endpoint).scheme in ("http", "https", "memory")


# A SageMaker endpoint is called on its own invocation path (SigV4-signed), not OIP's.
# An Azure ML endpoint is scored at /score, the deployment named in a header or by traffic.
# A Databricks endpoint is called at its invocations route, MLflow's scoring formats.
DATA_PLANE_PATH = {
    "sagemaker": f"/endpoints/bgserve-{DEPLOYMENT}/invocations",
    "azureml": "/score",
    "databricks": f"/serving-endpoints/bgserve-{DEPLOYMENT}/invocations",
}
# A Vertex AI endpoint's DNS name is Vertex's to give when it creates the endpoint, and its
# invoke API reaches the slots' own OIP route under the endpoint's resource name.
URL_AFTER_SLOT = {"vertex"}
VERTEX_PREFIX = "/v1/projects/123456789012/locations/europe-west4/endpoints/bgserve-chat/invoke"
DATA_PLANE_PATH["vertex"] = f"{VERTEX_PREFIX}/v2/models/{DEPLOYMENT}/infer"


def test_data_plane_url_is_the_deployments_infer_url(h: Harness) -> None:
    if h.kind in URL_AFTER_SLOT:
        assert h.backend.data_plane_url(DEPLOYMENT) is None
        ensure(h, 1)
    url = h.backend.data_plane_url(DEPLOYMENT)
    assert url == h.backend.data_plane_url(DEPLOYMENT)
    assert url is not None
    parts = urlsplit(url)
    assert parts.scheme and parts.netloc
    assert parts.path == DATA_PLANE_PATH.get(h.kind, f"/v2/models/{DEPLOYMENT}/infer")


def test_close_is_idempotent(h: Harness) -> None:
    ensure(h, 1)
    h.backend.close()
    h.backend.close()
