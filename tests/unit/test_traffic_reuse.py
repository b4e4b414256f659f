"""Sources whose counts change now and then (Prometheus, CloudWatch) are read at most once
every few seconds per deployment, however often the engine asks."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bgserve.app.traffic_reuse import ReadEvery
from bgserve.compose.backends import build_traffic_source
from bgserve.domain.window import SideWindow
from bgserve.errors import Unavailable
from bgserve.kube.prometheus import PrometheusTraffic
from bgserve.settings import Settings


class Counting:
    """A source that counts its readings; ``down`` makes the next one fail."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.down = False

    def windows(self, deployment: str) -> Mapping[int, SideWindow]:
        if self.down:
            raise Unavailable("the source is down")
        self.reads.append(deployment)
        return {1: SideWindow(requests=len(self.reads))}


def test_a_reading_stands_for_its_seconds_per_deployment_and_a_failure_is_not_kept() -> None:
    now = [100.0]
    source = Counting()
    traffic = ReadEvery(source, 2.0, lambda: now[0])
    assert traffic.windows("chat")[1].requests == 1
    now[0] += 1.9
    assert traffic.windows("chat")[1].requests == 1  # the same reading, not read again
    assert traffic.windows("other")[1].requests == 2  # another deployment reads its own
    now[0] += 0.2
    source.down = True
    with pytest.raises(Unavailable):
        traffic.windows("chat")
    source.down = False
    assert traffic.windows("chat")[1].requests == 3
    assert source.reads == ["chat", "other", "chat"]
    every_time = ReadEvery(source, 0.0, lambda: now[0])
    every_time.windows("chat")
    every_time.windows("chat")
    assert source.reads[-2:] == ["chat", "chat"]


def test_prometheus_is_read_through_the_reuse_its_setting_names() -> None:
    settings = Settings(
        backend="kserve", prometheus_url="http://prometheus:9090", prometheus_read_seconds=7.5
    )
    traffic = build_traffic_source(settings, backend=object())  # type: ignore[arg-type]
    assert isinstance(traffic, ReadEvery) and traffic.seconds == 7.5
    assert isinstance(traffic.source, PrometheusTraffic)
    with pytest.raises(ValueError, match="read_seconds"):
        Settings(prometheus_read_seconds=-1)
