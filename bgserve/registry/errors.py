"""Translate MLflow, database and HTTP failures into bgserve errors.

A missing thing is :class:`NotFound`, a refused value :class:`InvalidInput`, anything
else (unreachable server, database error) :class:`RegistryUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from bgserve.errors import BgserveError, InvalidInput, NotFound, RegistryUnavailable

__all__ = ["is_absent", "translate_errors"]

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
_REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE"})


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn MLflow, database and HTTP failures met while doing ``action`` into bgserve errors.

    Raises:
        NotFound, InvalidInput, RegistryUnavailable: translated, ``from`` the original.
    """
    try:
        yield
    except BgserveError:
        raise
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            raise NotFound(f"{action}: {exc.message}") from exc
        if exc.error_code in _REFUSED:
            raise InvalidInput(f"{action}: {exc.message}") from exc
        raise RegistryUnavailable(f"MLflow registry failed while {action}: {exc.message}") from exc
    except (SQLAlchemyError, requests.RequestException, OSError) as exc:
        raise RegistryUnavailable(f"MLflow registry unreachable while {action}: {exc}") from exc


def is_absent(exc: MlflowException) -> bool:
    """Whether MLflow says the thing asked for does not exist."""
    return exc.error_code in _NOT_FOUND
