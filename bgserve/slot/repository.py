"""The Open Inference Protocol's model repository extension, for bundles in folders.

A slot started with ``--model-repository ROOT`` serves no fixed bundle: a model name is
a folder under ``ROOT``, and ``load``/``unload`` put that folder's MLflow bundle into the
slot's model registry and take it out again. This is how Seldon Core 2's agent drives a
model server: it copies a Model's artifact to ``ROOT/<model>_<version>/1/``, asks the
server to load ``<model>_<version>``, and then sends inference to
``/v2/models/<model>_<version>/infer``.

A folder holds a bundle when it has an ``MLmodel`` file itself or in a numbered version
folder (the highest number wins). The answers follow MLServer's where the agent relies on
them: index states ``READY``/``LOADING``/``UNAVAILABLE``/``UNKNOWN``, an unknown model is
a 404 ``{"error": "Model <name> not found"}``, loading a loaded model succeeds without
loading it again.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A Seldon model name is a DNS-1123 name plus "_<version>"; anything that could leave the
# root folder is not a name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
MLMODEL = "MLmodel"

Loader = Callable[[str, Path], Any]
"""Load the bundle in a folder as a ready kserve model answering under a name."""


class RepositoryError(Exception):
    """A repository request refused or failed; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidModelName(RepositoryError):
    """The name is not a plain folder name."""


class OutsideRepository(RepositoryError):
    """The model's folder, or a link in it, leads out of the repository root."""

    status = 403


class ModelNotFound(RepositoryError):
    """No such folder to load, or no such loaded model to unload."""

    status = 404

    def __init__(self, name: str, why: str = "") -> None:
        super().__init__(f"Model {name} not found{why}")


class BundleNotLoadable(RepositoryError):
    """The folder holds no bundle, or loading the bundle raised."""

    status = 422


@dataclass(frozen=True)
class IndexEntry:
    """One model of the repository index, as MLServer reports it."""

    name: str
    version: str
    state: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
        }


def check_name(name: str) -> None:
    """Refuse a model name that is not one plain folder name.

    Raises:
        InvalidModelName: naming the characters a model name may use.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidModelName(
            f"model name {name!r} is not a folder name of the model repository: use letters, "
            "digits, '-', '_' and '.', starting with a letter or digit, without '/' or '..'"
        )


def model_folder(root: Path, name: str) -> Path:
    """The folder of model ``name`` under ``root``, with links resolved.

    Raises:
        InvalidModelName: ``name`` is not a plain folder name.
        ModelNotFound: there is no such folder.
        OutsideRepository: the folder is a link leading out of ``root``.
    """
    check_name(name)
    folder = root / name
    if not folder.is_dir():
        raise ModelNotFound(name, f": no folder {name!r} in the model repository")
    resolved = folder.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise OutsideRepository(
            f"model {name}: its folder links out of the model repository: copy the bundle "
            "into the repository instead of linking to it"
        )
    return resolved


def bundle_dir(folder: Path) -> tuple[Path, str]:
    """The MLflow bundle in ``folder`` (itself or its highest numbered version) and its version.

    Raises:
        BundleNotLoadable: neither ``folder`` nor a numbered folder in it has an MLmodel file.
    """
    if (folder / MLMODEL).is_file():
        return folder, ""
    versions = [
        (int(child.name), child)
        for child in folder.iterdir()
        if child.name.isdigit() and (child / MLMODEL).is_file()
    ]
    if not versions:
        raise BundleNotLoadable(
            f"model {folder.name}: its folder holds no MLflow bundle: expected an {MLMODEL} "
            "file in it or in a numbered version folder such as 1/"
        )
    number, path = max(versions)
    return path, str(number)


def check_links(folder: Path, root: Path) -> None:
    """Refuse a bundle with a symbolic link that leads out of ``root``.

    Raises:
        OutsideRepository: naming the link.
    """
    top = root.resolve()
    for current, dirs, files in os.walk(folder):
        for entry in (*dirs, *files):
            path = Path(current, entry)
            if path.is_symlink() and not path.resolve().is_relative_to(top):
                raise OutsideRepository(
                    f"model {folder.name}: {path.relative_to(folder)} links out of the model "
                    "repository: bundles must be self-contained"
                )


class BundleRepository:
    """Bundles in folders under ``root``, loaded into and out of a kserve model registry.

    Safe to call from several threads: loads and unloads of one name are serialised, and
    a slow load never blocks the index or other names. Per-name locks exist only for
    folders that exist, so unknown names cannot grow them.
    """

    def __init__(self, root: Path, registry: Any, loader: Loader) -> None:
        self.root = root
        self._registry = registry
        self._loader = loader
        self._guard = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._loading: set[str] = set()
        self._failures: dict[str, str] = {}
        self._versions: dict[str, str] = {}

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._name_locks.setdefault(name, threading.Lock())

    def _known_lock(self, name: str) -> threading.Lock | None:
        with self._guard:
            return self._name_locks.get(name)

    def is_ready(self, name: str) -> bool:
        model = self._registry.get_model(name)
        return bool(model is not None and model.ready)

    def load(self, name: str) -> None:
        """Load model ``name`` from its folder; a model already loaded stays as it is.

        Raises:
            RepositoryError: the name is refused, the folder is missing or unsafe, or the
                bundle did not load (the other loaded models keep serving).
        """
        folder = model_folder(self.root, name)
        with self._lock_for(name):
            if self.is_ready(name):
                return
            bundle, version = bundle_dir(folder)
            check_links(folder, self.root)
            with self._guard:
                self._loading.add(name)
            try:
                model = self._loader(name, bundle)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                with self._guard:
                    self._failures[name] = reason
                    self._loading.discard(name)
                raise BundleNotLoadable(
                    f"model {name}: the bundle in {bundle.name} failed to load: {reason}"
                ) from exc
            with self._guard:
                self._loading.discard(name)
                self._failures.pop(name, None)
                self._versions[name] = version
                self._registry.update(model)

    def unload(self, name: str) -> None:
        """Take model ``name`` out of serving; its folder stays.

        Raises:
            InvalidModelName: the name is refused.
            ModelNotFound: no model of that name is loaded.
        """
        check_name(name)
        lock = self._known_lock(name)
        if lock is None:  # never loaded here
            raise ModelNotFound(name)
        with lock, self._guard:
            try:
                self._registry.unload(name)
            except KeyError:
                raise ModelNotFound(name) from None
            self._versions.pop(name, None)

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model in a folder or loaded, with its state; only READY ones if asked."""
        entries = [self._entry(name) for name in sorted(self._names())]
        return [e for e in entries if e.state == "READY" or not ready_only]

    def _names(self) -> set[str]:
        with self._guard:
            names = set(self._registry.get_models()) | set(self._loading)
        if self.root.is_dir():
            names |= {p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)}
        return names

    def _entry(self, name: str) -> IndexEntry:
        with self._guard:
            if self.is_ready(name):
                return IndexEntry(name, self._versions.get(name, ""), "READY", "")
            if name in self._loading:
                return IndexEntry(name, "", "LOADING", "")
            return IndexEntry(name, "", "UNAVAILABLE", self._failures.get(name, ""))
