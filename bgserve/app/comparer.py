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

import httpx

from bgserve.app.executor import Executor
from bgserve.app.ports import DeploymentReader, Releases, SlotLocator, Templates
from bgserve.domain import rollout
from bgserve.domain.comparison import (
    ComparisonReport,
    SlotResult,
    Thresholds,
    compare,
    default_registry,
)
from bgserve.domain.golden import GoldenCase, check_inputs
from bgserve.domain.rollout import Gate
from bgserve.domain.template import variables as template_variables
from bgserve.errors import IllegalTransition, Unavailable
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


@dataclass(frozen=True)
class CompareSettings:
    """How comparisons run and judge: from settings, per process."""

    concurrency: int
    timeout_seconds: float
    thresholds: Mapping[str, float]
    scorer: str


class Comparer:
    """Compares a deployment's blue and green on golden cases and records the gate.

    Reads the deployment and its releases, asks the registry for templates and the backend
    for slot endpoints, queries the slots directly, and hands the verdict to the executor.
    """

    def __init__(
        self,
        settings: CompareSettings,
        deployments: DeploymentReader,
        releases: Releases,
        templates: Templates,
        slots: SlotLocator,
        executor: Executor,
    ) -> None:
        self.settings = settings
        self.deployments = deployments
        self.releases = releases
        self.templates = templates
        self.slots = slots
        self.executor = executor

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
        settings = self.settings
        before = self.deployments.get_deployment(name).state
        if before.green is None:
            raise IllegalTransition(
                f"{name} has no green release to compare: stage one first", hint="stage"
            )
        limits = Thresholds().with_overrides(dict(settings.thresholds))
        targets = [self._target(name, release, cases) for release in (before.blue, before.green)]
        blue, green = query_slots(
            targets,
            cases,
            concurrency=settings.concurrency,
            timeout=settings.timeout_seconds,
        )
        scorer = default_registry().get(settings.scorer)
        report = compare(cases, blue, green, limits.with_overrides(thresholds), scorer)
        gate = Gate(before.blue, before.green, report.verdict.passed, tuple(report.verdict.reasons))
        body = report.model_dump(mode="json")
        stored = self.executor.run(name, principal, lambda s: rollout.record_gate(s, gate, body))
        return stored, report

    def _target(self, name: str, release_id: int, cases: list[GoldenCase]) -> SlotTarget:
        release = self.releases.get_release(release_id)
        variables = template_variables(
            self.templates.get_prompt_template(release.prompt_name, release.prompt_version)
        )
        check_inputs(cases, variables)
        info = self.slots.slot_info(name, release_id)
        if info is None or not info.ready:
            raise Unavailable(f"the slot of release {release_id} on {name} is not ready")
        return SlotTarget(f"{info.endpoint}/v2/models/{name}/infer", variables)
