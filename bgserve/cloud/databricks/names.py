"""The names bgserve gives Databricks serving endpoints and served entities: pure, within
Databricks' rule (letters, digits, '-' and '_'; endpoint names at most 63 characters)."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
ENTITY_PREFIX = "release-"
_ENTITY = re.compile(r"release-([1-9][0-9]{0,17})")


def endpoint_name(prefix: str, deployment: str) -> str:
    """The endpoint that serves ``deployment``: ``prefix`` + its name, or, when that is
    longer than 63 characters, its beginning and a digest of the whole."""
    name = f"{prefix}{deployment}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - len(digest) - 1]}-{digest}"


def entity_name(release_id: int) -> str:
    """The served entity of a release (unique within its endpoint)."""
    return f"{ENTITY_PREFIX}{release_id}"


def release_of_entity(name: str | None) -> int | None:
    """The release id of a served entity bgserve named, None for any other."""
    match = _ENTITY.fullmatch(name or "")
    return int(match.group(1)) if match else None
