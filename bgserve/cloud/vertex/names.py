"""The ids bgserve gives Vertex AI resources: pure. Endpoint and model ids follow SageMaker's
63-character form (a digest shortens longer ones), which also fits Vertex's rules for a
prefix starting with a lowercase letter (endpoint ids ``[a-z0-9-]``, model ids
``[a-z0-9_-]``); a deployed model's id is the release id itself (Vertex: 1-10 digits)."""

from __future__ import annotations

import re

from bgserve.cloud.sagemaker.names import endpoint_name, model_name
from bgserve.errors import BackendError

__all__ = ["deployed_model_id", "display_name", "endpoint_name", "model_name", "release_of"]

_DEPLOYED_ID = re.compile(r"[1-9][0-9]{0,9}")


def deployed_model_id(release_id: int) -> str:
    """The deployed model's id of a release (unique within its endpoint). Raises
    BackendError for a release id longer than Vertex's 10 digits."""
    found = str(release_id)
    if not _DEPLOYED_ID.fullmatch(found):
        raise BackendError(
            f"release id {release_id} does not fit a Vertex AI deployed model id (1-10 digits)"
        )
    return found


def release_of(deployed_id: str) -> int | None:
    """The release id of a deployed model bgserve named, None for any other id."""
    return int(deployed_id) if _DEPLOYED_ID.fullmatch(deployed_id) else None


def display_name(release_id: int) -> str:
    """The deployed model's display name, as the console lists it."""
    return f"release-{release_id}"


def resource(project: str, location: str, kind: str, resource_id: str) -> str:
    """``projects/<project>/locations/<location>/<kind>/<id>``."""
    return f"projects/{project}/locations/{location}/{kind}/{resource_id}"
