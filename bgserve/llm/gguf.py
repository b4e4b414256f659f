"""Checks on a GGUF file before it is registered as an LLM base model, and the confinement
of the paths the API accepts to the directories an operator allowed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bgserve.errors import Forbidden, InvalidInput

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path, field: str = "gguf") -> Path:
    """Return ``path`` resolved if it is a readable file starting with the GGUF magic.

    Raises:
        InvalidInput: naming ``field``: no such file, not a regular file, or not GGUF.
    """
    if not path.exists():
        raise InvalidInput(f"{field} {str(path)!r}: no such file", field=field)
    if not path.is_file():
        raise InvalidInput(f"{field} {str(path)!r} is not a regular file", field=field)
    with path.open("rb") as stream:
        magic = stream.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise InvalidInput(
            f"{field} {str(path)!r} is not a GGUF model file (it does not start with "
            "'GGUF'): convert the model to GGUF (llama.cpp's convert_hf_to_gguf.py)",
            field=field,
        )
    return path.resolve()


GGUF_DIRS_SETTING = "BGSERVE_LLM_GGUF_DIRS"


def confine_gguf(path: Path, allowed_dirs: Sequence[Path], field: str = "gguf") -> Path:
    """``path`` with symlinks and ``..`` resolved, if it lies under one of ``allowed_dirs``
    (themselves resolved). Nothing is read and nothing is said about whether a refused path
    exists, so a caller cannot probe the server's files.

    Raises:
        Forbidden: no directory is allowed, or the resolved path lies outside every one.
        InvalidInput: a relative path (the server's working directory is nobody's business).
    """
    if not allowed_dirs:
        raise Forbidden(
            f"{field}: this server registers no GGUF file from its own disk; its operator can "
            f"allow directories with {GGUF_DIRS_SETTING} (a JSON list), or register the file "
            "with `bgserve models register-llm --gguf` where it lies",
            details={"field": field, "setting": GGUF_DIRS_SETTING},
        )
    if not path.is_absolute():
        raise InvalidInput(f"{field} {str(path)!r} is relative: give an absolute path", field=field)
    resolved = path.resolve()
    roots = [Path(root).resolve() for root in allowed_dirs]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise Forbidden(
            f"{field} {str(path)!r} is outside the directories {GGUF_DIRS_SETTING} allows "
            f"({', '.join(str(root) for root in roots)}), symlinks and '..' resolved: put the "
            "file there, or ask the operator to allow its directory",
            details={"field": field, "setting": GGUF_DIRS_SETTING},
        )
    return resolved
