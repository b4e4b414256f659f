"""The names bgserve gives SageMaker resources: pure, and within SageMaker's rule
(``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``: 63 characters, letters, digits and single dashes
between them)."""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
VARIANT_PREFIX = "r"
_VARIANT = re.compile(r"r([1-9][0-9]{0,17})")


def _fit(name: str) -> str:
    """``name``, or its first characters and a digest of the whole when it is too long
    (two long deployment names sharing a beginning still get different names)."""
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"


def endpoint_name(prefix: str, deployment: str) -> str:
    """The endpoint that serves ``deployment``."""
    return _fit(f"{prefix}{deployment}")


def model_name(prefix: str, deployment: str, release_id: int) -> str:
    """The SageMaker model of one release in one deployment."""
    return _fit(f"{prefix}{deployment}-r{release_id}")


def config_name(prefix: str, deployment: str, serial: int) -> str:
    """An endpoint configuration of ``deployment``: configs never change, so each change of
    variants writes a new one (``serial`` makes it unique)."""
    return _fit(f"{prefix}{deployment}-c{serial}")


def variant_name(release_id: int) -> str:
    """The production variant of a release (unique within its endpoint)."""
    return f"{VARIANT_PREFIX}{release_id}"


def release_of_variant(name: str) -> int | None:
    """The release id of a variant bgserve named, None for any other variant."""
    match = _VARIANT.fullmatch(name)
    return int(match.group(1)) if match else None
