"""Scorers: how similar two answers are, from 0 to 1, and the registry of them by name. Pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Protocol

from rapidfuzz import fuzz

from bgserve.errors import InvalidInput

__all__ = [
    "ExactScorer",
    "Scorer",
    "ScorerRegistry",
    "TextScorer",
    "default_registry",
    "normalize_text",
]


class Scorer(Protocol):
    """Similarity of two texts, from 0 (unrelated) to 1 (the same). Must be symmetric."""

    @property
    def name(self) -> str: ...

    def score(self, a: str, b: str) -> float: ...


def normalize_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class TextScorer:
    """rapidfuzz ``fuzz.ratio`` / 100 of the normalized texts: ``2 * matches / total length``.

    Chosen over normalized Levenshtein because it is the familiar difflib ratio, it rewards
    shared content in both texts whatever their lengths, and a substitution costs as much
    as the insertion plus deletion it is, so a changed word weighs like a changed word.
    """

    name = "text"

    def score(self, a: str, b: str) -> float:
        return float(fuzz.ratio(normalize_text(a), normalize_text(b))) / 100.0


class ExactScorer:
    """1 when the normalized texts are equal, else 0: for deterministic models."""

    name = "exact"

    def score(self, a: str, b: str) -> float:
        return 1.0 if normalize_text(a) == normalize_text(b) else 0.0


class ScorerRegistry:
    """Scorers by name, so an optional extra (an embedding scorer) can be plugged in."""

    def __init__(self, factories: Mapping[str, Callable[[], Scorer]] | None = None) -> None:
        self._factories: dict[str, Callable[[], Scorer]] = dict(factories or {})

    def register(self, name: str, factory: Callable[[], Scorer]) -> None:
        """Add a scorer; a name is registered once."""
        if name in self._factories:
            raise ValueError(f"scorer {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Scorer:
        """A new scorer called ``name``; :class:`InvalidInput` listing the known ones."""
        if name not in self._factories:
            raise InvalidInput(
                f"unknown scorer {name!r}: use one of {', '.join(self.names())}", field="scorer"
            )
        return self._factories[name]()


def default_registry() -> ScorerRegistry:
    """The built-in scorers: ``text`` (the default) and ``exact``."""
    return ScorerRegistry({"text": TextScorer, "exact": ExactScorer})
