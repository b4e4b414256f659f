"""The names bgserve gives Azure ML resources: pure, and within Azure's rule for endpoint
and deployment names (3-32 characters, letters, digits and '-', starting with a letter and
ending with a letter or digit; the SDK's ``^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$``)."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 32
DEPLOYMENT_PREFIX = "release-"
_DEPLOYMENT = re.compile(r"release-([1-9][0-9]{0,17})")


def endpoint_name(prefix: str, deployment: str) -> str:
    """The endpoint that serves ``deployment``: ``prefix`` + its name, or, when that is
    longer than 32 characters, its beginning and a digest of the whole (two long names
    sharing a beginning still differ)."""
    name = f"{prefix}{deployment}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = name[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def deployment_name(release_id: int) -> str:
    """The online deployment of a release (unique within its endpoint)."""
    return f"{DEPLOYMENT_PREFIX}{release_id}"


def release_of_deployment(name: str) -> int | None:
    """The release id of a deployment bgserve named, None for any other deployment."""
    match = _DEPLOYMENT.fullmatch(name)
    return int(match.group(1)) if match else None
