"""The SageMaker backend's pure half: names within SageMaker's rule, DescribeEndpoint read
as slots and weights, and the requests that keep the live weights."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from pydantic import ValidationError

from bgserve.cloud.sagemaker.names import endpoint_name, model_name, release_of_variant
from bgserve.cloud.sagemaker.variants import (
    UNROUTED_WEIGHT,
    config_keeping,
    model_request,
    percents,
    takes_traffic,
    variants,
    weights_request,
)
from bgserve.settings import Settings
from bgserve.settings.cloud import SageMakerGroup
from tests.support.kube import RELEASES

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}\Z")


def test_long_names_fit_sagemakers_rule_and_stay_apart() -> None:
    a, b = "a" * 60 + "-one", "a" * 60 + "-two"
    names = [endpoint_name("bgserve-", a), endpoint_name("bgserve-", b), model_name("p-", a, 12)]
    assert all(SAGEMAKER_NAME.fullmatch(n) for n in names), names
    assert len(set(names)) == 3
    assert endpoint_name("bgserve-", "chat") == "bgserve-chat"  # short names are kept


@pytest.mark.parametrize(("name", "release"), [("r12", 12), ("r0", None), ("blue", None)])
def test_only_variants_bgserve_named_are_slots(name: str, release: int | None) -> None:
    assert release_of_variant(name) == release


def endpoint(status: str = "InService", **fields: Mapping[str, object]) -> dict[str, object]:
    """A DescribeEndpoint answer with a variant per keyword."""
    return {
        "EndpointStatus": status,
        "ProductionVariants": [{"VariantName": n, **f} for n, f in fields.items()],
    }


def test_a_variant_serves_only_with_an_instance_up_on_a_serving_endpoint() -> None:
    up = {"CurrentWeight": 1.0, "CurrentInstanceCount": 1, "DesiredInstanceCount": 1}
    down = {**up, "CurrentInstanceCount": 0}
    found = variants(endpoint(r1=up, r2=down, blue=up))
    assert sorted(found) == [1, 2]  # a user's own variant is left alone
    assert found[1].serving and not found[2].serving
    assert variants(endpoint("Updating", r1=up))[1].serving  # the old fleet still answers
    assert not variants(endpoint("Creating", r1=up))[1].serving
    assert not variants(endpoint("Failed", r1=up))[1].serving


def test_weights_read_as_percents_and_a_lone_unrouted_variant_takes_none() -> None:
    found = variants(endpoint(r1={"CurrentWeight": 70.0}, r2={"CurrentWeight": 30.0}))
    assert percents(found) == {1: 70, 2: 30}
    assert takes_traffic(2, found) == 30
    lone = variants(endpoint(r1={"CurrentWeight": UNROUTED_WEIGHT}))
    assert percents(lone) == {1: 100} and takes_traffic(1, lone) == 0
    routed = variants(endpoint(r1={"CurrentWeight": 100.0}))
    assert takes_traffic(1, routed) == 100


def test_a_new_config_keeps_the_live_weights_and_counts() -> None:
    """UpdateEndpoint deploys a config as written: a config copied from the first one
    would put the weights of its creation back."""
    config = {
        "ProductionVariants": [
            {"VariantName": "r1", "ModelName": "m1", "InitialVariantWeight": 1.0,
             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"},
            {"VariantName": "r2", "ModelName": "m2", "InitialVariantWeight": 0.0,
             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"},
        ]
    }  # fmt: skip
    live = variants(
        endpoint(
            r1={"CurrentWeight": 40.0, "DesiredInstanceCount": 3},
            r2={"CurrentWeight": 60.0, "DesiredInstanceCount": 2},
        )
    )
    kept = config_keeping(config, live)
    assert [
        (e["VariantName"], e["InitialVariantWeight"], e["InitialInstanceCount"]) for e in kept
    ] == [
        ("r1", 40.0, 3),
        ("r2", 60.0, 2),
    ]
    assert [e["VariantName"] for e in config_keeping(config, live, drop=2)] == ["r1"]


def test_weights_are_written_for_every_variant_with_its_instance_count() -> None:
    live = variants(
        endpoint(
            r1={"CurrentWeight": 100.0, "DesiredInstanceCount": 2},
            r2={"CurrentWeight": 0.0, "DesiredInstanceCount": 1},
        )
    )
    assert weights_request(live, {2: 100}) == [
        {"VariantName": "r1", "DesiredWeight": 0.0, "DesiredInstanceCount": 2},
        {"VariantName": "r2", "DesiredWeight": 100.0, "DesiredInstanceCount": 1},
    ]


def test_a_model_takes_its_bundle_from_s3_or_from_mlflow() -> None:
    release = RELEASES[3]
    template = "s3://b/{bundle_name}/{bundle_version}.tar.gz"
    sm = SageMakerGroup(role_arn="arn:aws:iam::1:role/r", image="img", bundle_storage_uri=template)
    s3 = model_request("m", "chat", release, sm, {"MLFLOW_TRACKING_URI": "http://m"})
    container = s3["PrimaryContainer"]
    assert (
        container["ModelDataUrl"] == f"s3://b/{release.bundle_name}/{release.bundle_version}.tar.gz"
    )
    assert container["Environment"]["BGSERVE_SLOT_MODEL_URI"] == "/opt/ml/model"
    assert container["Environment"]["MLFLOW_TRACKING_URI"] == "http://m"
    plain = sm.model_copy(update={"bundle_storage_uri": ""})
    mlflow = model_request("m", "chat", release, plain, {})["PrimaryContainer"]
    assert "ModelDataUrl" not in mlflow
    assert mlflow["Environment"]["BGSERVE_SLOT_MODEL_URI"] == release.bundle_uri
    assert mlflow["Environment"]["BGSERVE_SLOT_RELEASE_ID"] == str(release.id)


@pytest.mark.parametrize("prefix", ["-x", "bg_serve-", "x" * 31])
def test_a_name_prefix_sagemaker_would_refuse_is_refused_naming_the_setting(prefix: str) -> None:
    with pytest.raises(ValidationError, match="sagemaker_name_prefix"):
        Settings(sagemaker_name_prefix=prefix)
