"""The platforms' own mirrors in rendered objects: valid against the official CRDs, pointed
at green, with the percent; refused where nothing can mirror."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bgserve.errors import InvalidInput
from bgserve.kube.mirror import mirror_route
from bgserve.manifests import render_deployment
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import RELEASES, promoted, shifting

STORAGE = "s3://bundles/{bundle_name}/{bundle_version}"


def route_of(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


@pytest.mark.parametrize(
    ("backend", "settings", "kind"),
    [
        ("kserve", Settings(kserve_router="gateway"), "HTTPRoute"),
        ("kserve", Settings(kserve_router="istio"), "VirtualService"),
        ("seldon", Settings(seldon_flavour="v2", kube_bundle_storage_uri=STORAGE), "Experiment"),
    ],
)
def test_mirror_to_green_validates_against_the_crds(
    crds: Mapping[str, Crd], backend: str, settings: Settings, kind: str
) -> None:
    state = shifting()
    assert state.green is not None
    plain = render_deployment(state, RELEASES, settings, backend)
    objects = mirror_route(plain, state.name, state.green, 25, settings.kube.namespace)
    for obj in objects:
        assert validate_object(crds, obj) == [], obj
    route = route_of(objects, kind)
    assert route != route_of(plain, kind)  # the input was not changed in place
    spec = route["spec"]
    green = f"r{state.green}"
    if kind == "HTTPRoute":
        (mirror,) = spec["rules"][0]["filters"]
        assert mirror["requestMirror"]["percent"] == 25
        assert green in mirror["requestMirror"]["backendRef"]["name"]
    elif kind == "VirtualService":
        http = spec["http"][0]
        assert http["mirrorPercentage"] == {"value": 25.0} and green in http["mirror"]["host"]
    else:
        assert spec["mirror"]["percent"] == 25 and spec["mirror"]["name"].endswith(green)
    weights = [o for o in objects if o["kind"] == kind]
    assert len(weights) == 1  # one route, still weighted as stored


def test_mirror_needs_a_green_a_percent_and_a_route_that_can_mirror() -> None:
    settings = Settings()
    objects = render_deployment(promoted(), RELEASES, settings, "kserve")
    with pytest.raises(InvalidInput, match="no green"):
        mirror_route(objects, "chat", None, 10, "default")
    state = shifting()
    objects = render_deployment(state, RELEASES, settings, "kserve")
    with pytest.raises(InvalidInput, match="out of range") as caught:
        mirror_route(objects, state.name, state.green, 0, "default")
    assert caught.value.field == "percent"
    v1 = render_deployment(
        state, RELEASES, Settings(seldon_flavour="v1", kube_bundle_storage_uri=STORAGE), "seldon"
    )
    with pytest.raises(InvalidInput, match="Seldon v1's SeldonDeployment"):
        mirror_route(v1, state.name, state.green, 10, "default")
