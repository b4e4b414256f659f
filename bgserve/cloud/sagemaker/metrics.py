"""Live traffic per release read from CloudWatch: the SageMaker backend's traffic source.

SageMaker counts every call of every production variant in CloudWatch (namespace
``AWS/SageMaker``, dimensions ``EndpointName`` and ``VariantName``): ``Invocations``,
``Invocation5XXErrors``, and ``ModelLatency`` as statistics only. :class:`CloudWatchTraffic`
sums the first two per variant since it started, with one GetMetricData call per reading;
the rollout engine subtracts two readings into a step's window.

What this gives the analysis, and what it does not:

- the ``error_rate`` check, on SageMaker's own counts of the variants' 5xx answers;
- **no latency histogram**: CloudWatch keeps percentiles per period, not the per-request
  distribution the latency checks test, so those checks are *skipped* (and say so);
- the counts come in one-minute periods, published a minute or so late: a step must bake
  for minutes, not seconds, for its window to hold any traffic;
- calls that name a variant (the golden comparison, the warm-up) are invocations too; they
  come before a plan's first step, so no step's window holds them.

The rollout engine asks for counts every interval (a quarter of a second); CloudWatch's
change once a minute, and each read is a DescribeEndpoint and a GetMetricData call (both
throttled, the second billed). So the composition root reads it through
:class:`~bgserve.app.traffic_reuse.ReadEvery` (``BGSERVE_SAGEMAKER_CLOUDWATCH_READ_SECONDS``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from bgserve.cloud.sagemaker.aws import call
from bgserve.domain.window import SideWindow

NAMESPACE = "AWS/SageMaker"
PERIOD_S = 60
# GetMetricData takes at most 500 queries: two per variant.
_MAX_VARIANTS = 250


class CloudWatchTraffic:
    """:class:`~bgserve.app.ports.TrafficSource` of the SageMaker backend (module
    docstring): ``variants(deployment)`` names the endpoint and each release's variant."""

    def __init__(
        self,
        client: Any,
        variants: Callable[[str], tuple[str, Mapping[int, str]] | None],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.variants = variants
        self.clock = clock
        # Counts start at the minute this source was made: an arbitrary origin, as the
        # protocol allows (the engine only ever subtracts two readings).
        self.origin = clock().replace(second=0, microsecond=0)

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests and 5xx errors per release id of ``deployment`` since this source
        started (no latency histogram); {} when the deployment has no endpoint. Each call
        is a DescribeEndpoint and a paged GetMetricData.

        Raises:
            BackendError (an Unavailable): CloudWatch cannot be reached or refuses the
            query.
        """
        found = self.variants(deployment)
        if found is None:
            return {}
        endpoint, names = found
        releases = sorted(names)[:_MAX_VARIANTS]
        queries = [
            _query(f"{kind}{release}", metric, endpoint, names[release])
            for release in releases
            for kind, metric in (("requests", "Invocations"), ("errors", "Invocation5XXErrors"))
        ]
        sums = self._sums(queries)
        return {
            release: SideWindow(
                requests=round(sums.get(f"requests{release}", 0.0)),
                errors=round(sums.get(f"errors{release}", 0.0)),
            )
            for release in releases
        }

    def _sums(self, queries: list[dict[str, Any]]) -> dict[str, float]:
        end = self.clock() + dt.timedelta(seconds=PERIOD_S)  # the minute in progress too
        sums: dict[str, float] = {}
        paging: dict[str, Any] = {}
        while True:
            page = call(
                "GetMetricData",
                self.client.get_metric_data,
                service="CloudWatch",
                MetricDataQueries=queries,
                StartTime=self.origin,
                EndTime=end,
                **paging,
            )
            for result in page.get("MetricDataResults") or []:
                sums[result["Id"]] = sums.get(result["Id"], 0.0) + sum(result["Values"])
            if not page.get("NextToken"):
                return sums
            paging = {"NextToken": page["NextToken"]}


def _query(query_id: str, metric: str, endpoint: str, variant: str) -> dict[str, Any]:
    dimensions = [
        {"Name": "EndpointName", "Value": endpoint},
        {"Name": "VariantName", "Value": variant},
    ]
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
            "Period": PERIOD_S,
            "Stat": "Sum",
        },
        "ReturnData": True,
    }
