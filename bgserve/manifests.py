"""``bgserve render``: the Kubernetes objects a backend would apply, without a cluster (the
cloud backends' documents are rendered by their own modules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bgserve.domain.release import Release
from bgserve.domain.rollout import DeploymentState, Route
from bgserve.errors import InvalidInput
from bgserve.kube.kserve.llm_isvc import llmisvc_objects
from bgserve.kube.kserve.llm_objects import LlmServing, kserve_llm_objects
from bgserve.kube.kserve.objects import kserve_objects
from bgserve.kube.objects import SlotMlflow
from bgserve.kube.seldon.objects import seldon_objects
from bgserve.settings import KubeGroup, Settings

Obj = dict[str, Any]
Builder = Callable[[str, Sequence[Route], Mapping[int, Release], KubeGroup, SlotMlflow], list[Obj]]
LlmLookup = Callable[[Release], LlmServing | None]
"""A release's LLM base model, None for a classic model (read from the registry)."""

# Kubernetes backends whose objects can be rendered; another backend adds itself here.
BUILDERS: dict[str, Builder] = {"kserve": kserve_objects, "seldon": seldon_objects}
# Cloud backends, rendered as their own infrastructure-as-code documents (bgserve.cli).
CLOUD = ("sagemaker", "azureml", "databricks", "vertex")


def render_backend(option: str | None, settings: Settings) -> str:
    """The backend to render for: ``--backend`` when given, else ``BGSERVE_BACKEND`` when
    it renders (a Kubernetes backend, SageMaker, Azure ML, Databricks or Vertex AI), else
    ``kserve``."""
    if option:
        return option
    return settings.backend if settings.backend in (*BUILDERS, *CLOUD) else "kserve"


def render_deployment(
    state: DeploymentState,
    releases: Mapping[int, Release],
    settings: Settings,
    backend: str,
    llms: LlmLookup | None = None,
) -> list[Obj]:
    """The objects ``backend`` would apply for ``state``: every slot, then the route.

    Given ``llms``, a KServe deployment with an LLM release is rendered as the KServe
    backend applies it: LLM slots with their base model and the OpenAI routes beside OIP,
    or, with ``kserve_llm_mode`` ``llminferenceservice``, one LLMInferenceService member
    per release, weighted, and no route.

    Raises:
        InvalidInput: ``backend`` renders no objects, a routed release is missing from
            ``releases``, or (routing-group mode) a routed release pins no LLM.
    """
    build = BUILDERS.get(backend)
    if build is None:
        raise InvalidInput(
            f"backend {backend!r} has nothing to render: use one of {sorted([*BUILDERS, *CLOUD])}",
            field="backend",
        )
    mlflow = SlotMlflow(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    routes = state.routes()
    if backend == "kserve" and llms is not None:
        served = _llms_of(routes, releases, llms)
        if served:
            kube = settings.kube
            if kube.kserve.llm_mode == "llminferenceservice":
                return llmisvc_objects(state.name, routes, releases, served, kube, mlflow)
            return kserve_llm_objects(state.name, routes, releases, served, kube, mlflow)
    return build(state.name, routes, releases, settings.kube, mlflow)


def _llms_of(
    routes: Sequence[Route], releases: Mapping[int, Release], llms: LlmLookup
) -> dict[int, LlmServing]:
    """The LLM base model of each routed release that pins one (known releases only)."""
    served = {}
    for route in routes:
        release = releases.get(route.release_id)
        llm = None if release is None else llms(release)
        if llm is not None:
            served[route.release_id] = llm
    return served


def render_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, one document per object, in the given order."""
    return "".join(
        "---\n" + yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False)
        for obj in objects
    )


def object_filename(obj: Mapping[str, Any]) -> str:
    """``<kind>-<name>.yaml``, lowercase: unique within one namespace's render."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_objects(objects: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Write each object to its own file in ``out_dir`` (created if needed); return the paths.

    Overwrites files of the same name, so rendering twice gives the same directory.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in objects:
        path = out_dir / object_filename(obj)
        path.write_text(render_yaml([obj]), encoding="utf-8")
        paths.append(path)
    return paths
