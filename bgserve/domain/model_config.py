"""A chat prompt's ``model_config``: the sampling settings applied to every call. Pure.

Only the settings every OpenAI-compatible server and llama.cpp understand are accepted,
under their OpenAI names; anything else is refused naming the key, so a typo such as
``temprature`` never passes silently as a provider-specific extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bgserve.errors import InvalidInput

__all__ = ["MAX_STOP_SEQUENCES", "MODEL_CONFIG_KEYS", "check_model_config"]

MAX_STOP_SEQUENCES = 4
MAX_TOKENS_LIMIT = 1_000_000
SEED_LIMIT = 2**63 - 1


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _temperature(value: object) -> str | None:
    number = _number(value)
    return None if number is not None and 0 <= number <= 2 else "a number from 0 to 2"


def _top_p(value: object) -> str | None:
    number = _number(value)
    return None if number is not None and 0 < number <= 1 else "a number above 0 and at most 1"


def _max_tokens(value: object) -> str | None:
    count = _integer(value)
    ok = count is not None and 1 <= count <= MAX_TOKENS_LIMIT
    return None if ok else f"a whole number from 1 to {MAX_TOKENS_LIMIT:,}"


def _seed(value: object) -> str | None:
    seed = _integer(value)
    return None if seed is not None and abs(seed) <= SEED_LIMIT else "a whole number (64-bit)"


def _stop(value: object) -> str | None:
    items = [value] if isinstance(value, str) else value
    ok = (
        isinstance(items, list)
        and 1 <= len(items) <= MAX_STOP_SEQUENCES
        and all(isinstance(item, str) and item for item in items)
    )
    return None if ok else f"a non-empty string or a list of 1 to {MAX_STOP_SEQUENCES} of them"


_RULES: dict[str, Callable[[object], str | None]] = {
    "temperature": _temperature,
    "max_tokens": _max_tokens,
    "top_p": _top_p,
    "stop": _stop,
    "seed": _seed,
}
MODEL_CONFIG_KEYS = tuple(_RULES)


def check_model_config(raw: object, where: str = "model_config") -> dict[str, Any]:
    """``raw`` checked: a mapping of known keys with values in range (``{}`` for None).

    Raises:
        InvalidInput: naming the unknown key or the key whose value is out of range,
            and what it accepts.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"{where} must be a mapping of {', '.join(MODEL_CONFIG_KEYS)}", field=where
        )
    for key, value in raw.items():
        rule = _RULES.get(str(key))
        if rule is None:
            raise InvalidInput(
                f"{where}.{key} is not a known setting: use {', '.join(MODEL_CONFIG_KEYS)}",
                field=f"{where}.{key}",
            )
        wanted = rule(value)
        if wanted is not None:
            raise InvalidInput(
                f"{where}.{key} is {value!r}: it must be {wanted}", field=f"{where}.{key}"
            )
    return {str(key): value for key, value in raw.items()}
