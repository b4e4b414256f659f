"""The I/O half of a comparison: send every golden case to two slots, directly, and record
the verdict as the deployment's gate.

Bounded concurrency and a per-request timeout; each answer becomes a
:class:`~bgserve.domain.comparison.SlotResult` for the pure scorer. Nothing here goes
through the weighted router, so a comparison never moves or counts live traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from bgserve.domain import rollout
from bgserve.domain.comparison import (
    ComparisonReport,
    SlotResult,
    Thresholds,
    compare,
    default_registry,
)
from bgserve.domain.golden import GoldenCase, check_inputs
from bgserve.domain.rollout import DeploymentState, Gate
from bgserve.domain.template import variables as template_variables
from bgserve.errors import Conflict, IllegalTransition, Unavailable

if TYPE_CHECKING:
    from bgserve.app.service import Service
    from bgserve.store import StoredDeployment


@dataclass(frozen=True)
class SlotTarget:
    """One slot to query: its infer URL and the template variables it takes."""

    infer_url: str
    variables: Sequence[str]


def oip_request(inputs: Mapping[str, str], variables: Sequence[str]) -> dict[str, object]:
    """An OIP v2 infer body with one BYTES input per variable."""
    return {
        "inputs": [
            {"name": v, "datatype": "BYTES", "shape": [1], "data": [inputs[v]]} for v in variables
        ]
    }


def output_text(body: object) -> str:
    """The text of the ``output`` tensor of an OIP v2 answer. Raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("answer is not a JSON object")
    for tensor in body.get("outputs") or []:
        if isinstance(tensor, dict) and tensor.get("name") == "output" and tensor.get("data"):
            return str(tensor["data"][0])
    raise ValueError("answer has no 'output' tensor")


async def _ask(
    client: httpx.AsyncClient, target: SlotTarget, case: GoldenCase, gate: asyncio.Semaphore
) -> SlotResult:
    async with gate:
        started = time.perf_counter()
        try:
            response = await client.post(
                target.infer_url, json=oip_request(case.inputs, target.variables)
            )
            latency = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                return SlotResult(
                    output=None,
                    latency_ms=latency,
                    error=f"HTTP {response.status_code}: {response.text[:300]}",
                )
            return SlotResult(output=output_text(response.json()), latency_ms=latency, error=None)
        except (httpx.HTTPError, ValueError) as exc:
            latency = (time.perf_counter() - started) * 1000
            return SlotResult(output=None, latency_ms=latency, error=f"{type(exc).__name__}: {exc}")


async def _ask_all(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], concurrency: int, timeout: float
) -> list[dict[str, SlotResult]]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency * len(targets))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        per_target = [
            asyncio.gather(*(_ask(client, target, case, gate) for case in cases))
            for target in targets
        ]
        answers = await asyncio.gather(*per_target)
    return [
        {case.id: result for case, result in zip(cases, results, strict=True)}
        for results in answers
    ]


def query_slots(
    targets: Sequence[SlotTarget], cases: Sequence[GoldenCase], *, concurrency: int, timeout: float
) -> list[dict[str, SlotResult]]:
    """Each target's answer to every case, by case id (blocking; runs its own loop)."""
    return asyncio.run(_ask_all(targets, cases, concurrency, timeout))


class Comparer:
    """Compares a deployment's blue and green on golden cases and records the gate."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def compare(
        self,
        name: str,
        cases: list[GoldenCase],
        principal: str,
        thresholds: dict[str, float] | None = None,
    ) -> tuple[StoredDeployment, ComparisonReport]:
        """Send every case to blue and green directly, score, and record the gate.

        The verdict is stored for this exact blue/green pair; a stage or revert in the
        meantime makes the comparison moot (Conflict). Raises IllegalTransition (no green),
        InvalidInput (a case lacks a variable, a bad threshold), Unavailable (a slot or
        MLflow is down), NotFound.
        """
        settings = self.service.settings
        before = self.service.store.get_deployment(name).state
        if before.green is None:
            raise IllegalTransition(
                f"{name} has no green release to compare: stage one with "
                f"POST /deployments/{name}/green"
            )
        limits = Thresholds().with_overrides(settings.compare_thresholds)
        targets = [self._target(name, release, cases) for release in (before.blue, before.green)]
        blue, green = query_slots(
            targets,
            cases,
            concurrency=settings.compare_concurrency,
            timeout=settings.compare_timeout_seconds,
        )
        scorer = default_registry().get(settings.compare_scorer)
        report = compare(cases, blue, green, limits.with_overrides(thresholds), scorer)
        gate = Gate(before.blue, before.green, report.verdict.passed, tuple(report.verdict.reasons))
        return self._record(name, before, gate, report, principal), report

    def _target(self, name: str, release_id: int, cases: list[GoldenCase]) -> SlotTarget:
        service = self.service
        release = service.store.get_release(release_id)
        variables = template_variables(
            service.registry.get_prompt_template(release.prompt_name, release.prompt_version)
        )
        check_inputs(cases, variables)
        info = service.backend.slot_info(name, release_id)
        if info is None or not info.ready:
            raise Unavailable(f"the slot of release {release_id} on {name} is not ready")
        return SlotTarget(f"{info.endpoint}/v2/models/{name}/infer", variables)

    def _record(
        self,
        name: str,
        before: DeploymentState,
        gate: Gate,
        report: ComparisonReport,
        principal: str,
    ) -> StoredDeployment:
        service = self.service
        with service.locked(name):
            now = service.store.get_deployment(name).state
            if (now.blue, now.green) != (before.blue, before.green):
                raise Conflict(
                    f"{name} changed during the comparison (blue {now.blue}, green {now.green}):"
                    " compare again"
                )
            verdict = "passed" if gate.passed else "failed: " + "; ".join(gate.reasons)
            return service.store.save_deployment(
                now,
                rollout.record_gate(now, gate),
                now=service.clock(),
                principal=principal,
                action="compare",
                reason=f"comparison of {len(report.cases)} cases {verdict}",
                last_comparison=report.model_dump(mode="json"),
            )
