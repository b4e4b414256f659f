"""Live traffic for the cloud backends' live-analysis tests: clients calling an endpoint
through its provider's own SDK with the demo's live texts, the plan that judges a flaky
green on its error rate, and what its revert must show."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bgserve.demo.models import register_flaky_model
from bgserve.demo.run import LIVE_TEXTS
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan, make_plan


class LiveClients:
    """Two threads calling ``call(text)`` back to back with the live texts in turn (the long
    ones make the flaky model fail). ``call`` returns who answered; ``failure(exc)`` names
    what failed, or returns None for an exception the test does not expect (re-raised)."""

    def __init__(
        self,
        call: Callable[[str], str],
        failure: Callable[[Exception], str | None],
    ) -> None:
        self.call, self.failure = call, failure
        self.answered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]

    def _run(self, offset: int) -> None:
        i = offset
        while not self.stopping.is_set():
            try:
                self.answered[self.call(LIVE_TEXTS[i % len(LIVE_TEXTS)])] += 1
            except Exception as exc:
                name = self.failure(exc)
                if name is None:
                    raise
                self.failed[name] += 1
            i += 1
            time.sleep(0.01)

    def __enter__(self) -> LiveClients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def error_rate_plan(bake_s: float = 2.0, max_bake_s: float = 30.0) -> Plan:
    """50 then 100, each step judged on its error rate alone.

    The flaky green fails about one request in five: with 60 answers a side, missing it (4
    errors or fewer: p >= 0.05) is rarer than 1 in 400; 10 a side missed it once on a
    loaded machine.
    """
    analysis = AnalysisSettings(min_requests=60, checks=("error_rate",), max_bake_s=max_bake_s)
    return make_plan([50, 100], bake_s, analysis, force=True)


def wait_for_plan_end(service: Any, deployment: str, timeout: float = 60.0) -> None:
    """Until the deployment's plan ended (finished or reverted)."""
    deadline = time.monotonic() + timeout
    while service.get_deployment(deployment).state.plan is not None:
        assert time.monotonic() < deadline, "the plan did not end"
        time.sleep(0.1)


def error_rate_revert(service: Any, deployment: str) -> dict[str, Any]:
    """The failed error-rate check of the deployment's last event, which must be bgserve's
    auto-revert on green's errors with none of blue's."""
    event = service.history(deployment)[-1]
    assert (event.action, event.principal) == ("auto-revert", "bgserve"), event
    assert event.details is not None
    (check,) = event.details["analysis"]["checks"]
    assert check["name"] == "error_rate" and check["outcome"] == "fail"
    assert check["green_errors"] > 0 and check["blue_errors"] == 0
    return dict(check)


def stage_flaky_green(service: Any, mlflow_store: str, tag: str) -> tuple[Any, Any]:
    """The demo's summarizer v1 deployed as ``live``, and beside it a staged green whose
    model fails about one request in five; (blue, green), the releases."""
    model = f"summarizer-{tag}-flaky"
    flaky = register_flaky_model(mlflow_store, mlflow_store, model_name=model)
    prompt = "prompts:/summarize/1"
    blue = service.register_release(f"{tag}-v1", "models:/summarizer/1", prompt, "t")
    green = service.register_release(f"{tag}-flaky", f"models:/{model}/{flaky}", prompt, "t")
    service.create_deployment("live", blue.id, "test")
    service.stage_green("live", green.id, "test")
    return blue, green
