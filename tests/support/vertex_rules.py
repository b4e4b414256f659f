"""What Vertex AI refuses in a request, as its API reference documents it: pure checks
returning problems (empty when the request is acceptable).

Required fields are read from the SDK's own request types: every attribute the proto-plus
class documents as "Required." (the published protos' ``REQUIRED`` field behavior, which
the GAPIC package carries in its docstrings) must be set, in the request and in every
message set inside it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

ENDPOINT_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?|[1-9][0-9]{0,8}")
MODEL_ID = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
DEPLOYED_ID = re.compile(r"[0-9]{1,10}")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)(?:/(?P<kind>endpoints|models)/(?P<id>[^/]+))?"
)
_REQUIRED = re.compile(r"^ {8}(\w+) \([^)]*\):\n +Required\.", re.M)
ENDPOINT_PATHS = frozenset({"display_name", "description", "labels", "traffic_split"})


@functools.cache
def _required(doc: str) -> tuple[str, ...]:
    return tuple(_REQUIRED.findall(doc))


def required_fields(cls: type) -> tuple[str, ...]:
    """The attributes a proto-plus message type documents as required."""
    return _required(cls.__doc__ or "")


def missing_fields(message: Any, path: str = "") -> list[str]:
    """Every required field left unset in ``message`` or a message set inside it (dotted
    from the request, as Vertex names them)."""
    import proto

    problems = [
        f"{path}{name}" for name in required_fields(type(message)) if not _set(message, name)
    ]
    for name in type(message).meta.fields:
        if not _set(message, name):
            continue
        value = getattr(message, name)
        items = (
            value
            if isinstance(value, Iterable) and not isinstance(value, str | bytes | proto.Message)
            else [value]
        )
        for item in items:
            if isinstance(item, proto.Message):
                problems += missing_fields(item, f"{path}{name}.")
    return problems


def _set(message: Any, name: str) -> bool:
    """proto-plus: a message field is present, a scalar non-zero, a list or map non-empty."""
    return name in message


def display_name_problems(name: str, what: str) -> list[str]:
    """Vertex's display names: 1-128 UTF-8 characters."""
    return [] if 0 < len(name) <= 128 else [f"{what}.display_name must be 1-128 characters"]


def label_problems(labels: Mapping[str, str], what: str) -> list[str]:
    """Google Cloud's label rules: keys a lowercase letter first, keys and values at most 63
    lowercase letters, digits, '_' and '-'; at most 64 labels."""
    problems = [f"{what} has more than 64 labels"] if len(labels) > 64 else []
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
            problems.append(
                f"label {key}={value!r} of {what} is invalid: keys start with a lowercase "
                "letter; keys and values hold at most 63 lowercase letters, digits, '_' and '-'"
            )
    return problems


def split_problems(
    split: Mapping[str, int], deployed: Iterable[str], *, new: bool = False
) -> list[str]:
    """A traffic split: percents of deployed models the endpoint has (``"0"`` for the one
    being deployed when ``new``), each 0-100, summing to 100."""
    known = set(deployed) | ({"0"} if new else set())
    problems = [
        f"traffic_split names deployed model {k}, which the endpoint does not have"
        for k in sorted(split)
        if k not in known
    ]
    if any(not 0 <= v <= 100 for v in split.values()):
        problems.append("traffic_split percents must be between 0 and 100")
    if split and sum(split.values()) != 100:
        problems.append(f"traffic_split percents must add up to 100, got {sum(split.values())}")
    return problems


def container_problems(model: Any) -> list[str]:
    """A custom container Model: an image, at most one port, valid environment names,
    either a predict route or the invoke prefix ("/*", the only value Vertex takes)."""
    spec = model.container_spec
    problems = []
    if len(spec.ports) > 1:
        problems.append("model.container_spec.ports: Vertex AI uses only one port")
    problems += [
        f"model.container_spec.env name {e.name!r} is invalid"
        for e in spec.env
        if not ENV_NAME.fullmatch(e.name)
    ]
    if spec.invoke_route_prefix and spec.predict_route:
        problems.append(
            "model.container_spec: only one of predict_route or invoke_route_prefix can be set"
        )
    if spec.invoke_route_prefix not in ("", "/*"):
        problems.append(
            'model.container_spec.invoke_route_prefix: "/*" is the only supported value'
        )
    return problems


def resource_problems(deployed: Any) -> list[str]:
    """A DeployedModel's resources: dedicated machines with a type and 1 <= min <= max."""
    if "dedicated_resources" not in deployed:
        return ["deployed_model.dedicated_resources is required for a custom container model"]
    res = deployed.dedicated_resources
    problems = []
    if not res.machine_spec.machine_type:
        problems.append("deployed_model.dedicated_resources.machine_spec.machine_type is required")
    if res.min_replica_count < 1:
        problems.append("deployed_model.dedicated_resources.min_replica_count must be at least 1")
    if res.max_replica_count and res.max_replica_count < res.min_replica_count:
        problems.append(
            "deployed_model.dedicated_resources.max_replica_count must be at least "
            "min_replica_count"
        )
    return problems
