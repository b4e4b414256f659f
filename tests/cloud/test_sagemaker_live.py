"""Live analysis on SageMaker: clients call the endpoint through the real SDK
(``invoke_endpoint``), SageMaker's own counts in CloudWatch are the traffic source, and a
green that fails on long texts is reverted by the error-rate check on those counts."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bgserve.compose.backends import sagemaker_backend
from bgserve.demo.models import register_flaky_model
from bgserve.demo.run import LIVE_TEXTS
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
from bgserve.settings import Settings
from tests.cloud.conftest import SageMaker
from tests.support.flow import infer_body
from tests.support.kube import make_components

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Clients:
    """Two threads calling the endpoint through boto3's sagemaker-runtime client, the live
    texts in turn (the long ones make the flaky model fail)."""

    def __init__(self, sagemaker: SageMaker, endpoint: str) -> None:
        self.runtime = sagemaker.api.session().client(
            "sagemaker-runtime", endpoint_url=sagemaker.runtime.url
        )
        self.endpoint = endpoint
        self.answered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]

    def _run(self, offset: int) -> None:
        from botocore.exceptions import ClientError

        i = offset
        while not self.stopping.is_set():
            text = LIVE_TEXTS[i % len(LIVE_TEXTS)]
            body = infer_body(text)
            try:
                answer = self.runtime.invoke_endpoint(
                    EndpointName=self.endpoint,
                    Body=json.dumps(body),
                    ContentType="application/json",
                )
                self.answered[answer["InvokedProductionVariant"]] += 1
            except ClientError as exc:
                self.failed[exc.response["Error"]["Code"]] += 1
            i += 1
            time.sleep(0.01)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_a_flaky_green_is_reverted_on_the_errors_sagemaker_counts(
    tmp_path: Path, mlflow_store: str, sagemaker: SageMaker
) -> None:
    flat = sagemaker.api.settings(
        sagemaker_runtime_url=sagemaker.runtime.url,
        sagemaker_cloudwatch_url=sagemaker.api.url,
        sagemaker_cloudwatch_read_seconds=0,  # the stand-in's counts are live
        slot_ready_timeout_seconds=120,
    )
    backend = sagemaker_backend(Settings(**flat), sagemaker.api.session())
    extra = {"engine_interval_seconds": 0.1, "leader_election": "off", **flat}
    parts = make_components(tmp_path, mlflow_store, backend, **extra)
    parts.start()
    try:
        service = parts.service
        flaky = register_flaky_model(mlflow_store, mlflow_store, model_name="summarizer-sm-flaky")
        blue = service.register_release(
            "sm-v1", "models:/summarizer/1", "prompts:/summarize/1", "t"
        )
        green = service.register_release(
            "sm-flaky", f"models:/summarizer-sm-flaky/{flaky}", "prompts:/summarize/1", "t"
        )
        service.create_deployment("live", blue.id, "test")
        service.stage_green("live", green.id, "test")
        # The flaky green fails about one request in five: with 60 answers a side, missing
        # it (4 errors or fewer: p >= 0.05) is rarer than 1 in 400; 10 a side missed it once
        # on a loaded machine.
        analysis = AnalysisSettings(min_requests=60, checks=("error_rate",), max_bake_s=30)
        plan = make_plan([50, 100], 2.0, analysis, force=True)
        with Clients(sagemaker, "bgserve-live") as clients:
            time.sleep(0.5)
            service.start_plan("live", "test", plan, force=True)
            deadline = time.monotonic() + 60
            while service.get_deployment("live").state.plan is not None:
                assert time.monotonic() < deadline, "the plan did not end"
                time.sleep(0.1)
        event = service.history("live")[-1]
        assert (event.action, event.principal) == ("auto-revert", "bgserve"), event
        assert event.details is not None
        (check,) = event.details["analysis"]["checks"]
        assert check["name"] == "error_rate" and check["outcome"] == "fail"
        assert check["green_errors"] > 0 and check["blue_errors"] == 0
        assert sagemaker.api.weights("bgserve-live") == {f"r{blue.id}": 100.0, f"r{green.id}": 0.0}
        # What failed for the clients was green's: SageMaker's ModelError on long texts.
        assert set(clients.failed) == {"ModelError"}
        assert clients.answered[f"r{blue.id}"] > 0 and clients.answered[f"r{green.id}"] > 0
    finally:
        parts.close()
