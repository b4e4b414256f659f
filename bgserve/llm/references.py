"""What an LLM model version stores instead of a secret or a large file: the Kubernetes
Secret key an endpoint's API key is read from, and the storage URI of a GGUF file.

Pure checks, shared by the registry (which stores the references) and the Kubernetes
renderings (which turn them into ``secretKeyRef`` and ``STORAGE_URI``). Nothing here reads
a Secret or fetches a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bgserve.errors import InvalidInput

# Kubernetes' own rules: a Secret's name is a DNS-1123 subdomain, a key is what
# `kubectl create secret --from-literal` accepts (both at most 253 characters).
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_MAX = 253
# The storage URIs KServe's storage initializer fetches into /mnt/models.
WEIGHTS_SCHEMES = ("s3", "gs", "hf", "pvc")


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Kubernetes Secret in the slot's namespace (the value is never read here).

    Not checked on construction; :func:`check_secret_ref` says what is wrong with one.
    """

    name: str
    key: str = "api-key"

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


def check_secret_ref(ref: SecretKeyRef, field: str = "api_key_secret") -> SecretKeyRef:
    """``ref`` if its name is a Secret name and its key a Secret key.

    Raises:
        InvalidInput: naming ``field`` and what is wrong.
    """
    if not (len(ref.name) <= _NAME_MAX and _SECRET_NAME.fullmatch(ref.name)):
        raise InvalidInput(
            f"{field}: {ref.name!r} is not a Secret name (lowercase letters, digits, '-' and "
            "'.', starting and ending with a letter or digit, at most 253 characters)",
            field=field,
        )
    if not (len(ref.key) <= _NAME_MAX and _SECRET_KEY.fullmatch(ref.key)):
        raise InvalidInput(
            f"{field}: {ref.key!r} is not a key of a Secret (letters, digits, '-', '_' and "
            "'.', at most 253 characters)",
            field=field,
        )
    return ref


def parse_secret_ref(text: str, field: str = "api_key_secret") -> SecretKeyRef:
    """``SECRET/KEY`` as a checked :class:`SecretKeyRef`.

    Raises:
        InvalidInput: naming ``field``: not of that form, or a bad name or key.
    """
    name, slash, key = text.partition("/")
    if not slash or not name or not key:
        raise InvalidInput(
            f"{field} must be SECRET/KEY (the Secret's name and the key within it, e.g. "
            "llm-endpoint/api-key)",
            field=field,
        )
    return check_secret_ref(SecretKeyRef(name, key), field)


def check_weights_uri(uri: str, field: str = "gguf_uri") -> str:
    """``uri`` if it is a storage URI KServe's storage initializer fetches
    (``s3://``, ``gs://``, ``hf://``, ``pvc://``) naming something after the scheme.

    Raises:
        InvalidInput: naming ``field``.
    """
    parts = urlsplit(uri)
    if parts.scheme not in WEIGHTS_SCHEMES or not (parts.netloc + parts.path).strip("/"):
        schemes = ", ".join(f"{s}://" for s in WEIGHTS_SCHEMES)
        raise InvalidInput(
            f"{field} {uri!r} is not a storage URI a Kubernetes storage initializer fetches: "
            f"use {schemes}",
            field=field,
        )
    return uri
