"""Checks on a GGUF file before it is registered as an LLM base model."""

from __future__ import annotations

from pathlib import Path

from bgserve.errors import InvalidInput

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
