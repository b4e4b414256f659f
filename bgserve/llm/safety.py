"""Refuse a llama.cpp build that crashes, before a slot evaluates anything with it.

A ``llama-cpp-python`` built with the default native CPU flags loads models fine on some
machines (AVX-512 and AMX advertised) and then dies by SIGSEGV at the first evaluation.
So before a slot serves a GGUF model, one tiny evaluation runs in a child process; if
the child dies by a signal the slot refuses to start and says how to rebuild. The
verdict is kept per build (the shared library's path and mtime) in
``~/.cache/bgserve/llama-check.json``, so only the first start after an install pays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bgserve.errors import BgserveError

# With -march=native off, ggml's own defaults build SSE4.2, AVX, AVX2, BMI2, FMA and F16C
# and leave AVX-512 and AMX off: those are what a CPU may advertise by CPUID while the kernel
# has not enabled their register state (as in some VMs), so native builds crash there.
SAFE_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
REINSTALL = (
    f'CMAKE_ARGS="{SAFE_CMAKE_ARGS}" pip install --force-reinstall --no-binary '
    "llama-cpp-python --no-cache-dir llama-cpp-python==0.3.36"
)
CHECK_TIMEOUT_S = 120.0

_CHILD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_batch=8, verbose=False)
llm.eval(llm.tokenize(b"Hi"))
"""


class UnsafeLlamaBuild(BgserveError):
    """The installed llama.cpp crashes at its first evaluation on this machine."""


def cache_file() -> Path:
    """Where verdicts are kept (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``bgserve``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bgserve" / "llama-check.json"


def library_key() -> str:
    """The installed llama.cpp shared library's path and mtime: one build, one key."""
    import llama_cpp.llama_cpp as native

    path = Path(native._lib._name)  # the library loaded here is the build that will run
    return f"{path.resolve()}@{path.stat().st_mtime_ns}"


def _read_verdicts(path: Path) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _write_verdict(path: Path, key: str, verdict: str) -> None:
    verdicts = _read_verdicts(path) | {key: verdict}
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(verdicts, indent=1))
    scratch.replace(path)


def evaluate_in_child(gguf: Path, timeout_s: float = CHECK_TIMEOUT_S) -> str:
    """Run one tiny evaluation of ``gguf`` in a child; ``ok`` or ``signal <NAME>``.

    Raises:
        UnsafeLlamaBuild: the child failed without a signal (its error is quoted) or did
            not finish in ``timeout_s``; nothing is cached then.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(gguf)],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnsafeLlamaBuild(
            f"the llama.cpp start-up check did not finish in {timeout_s:.0f}s"
        ) from exc
    if done.returncode < 0:
        return f"signal {signal.Signals(-done.returncode).name}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise UnsafeLlamaBuild(f"the llama.cpp start-up check failed: {' / '.join(tail)}")
    return "ok"


def ensure_llama_works(gguf: Path, cache: Path | None = None) -> None:
    """Pass when this llama.cpp build evaluates ``gguf`` without crashing; else refuse.

    Idempotent; the verdict is cached per build (see the module docstring).

    Raises:
        UnsafeLlamaBuild: the build crashes by a signal (the message names the reinstall
            line with safe CMAKE_ARGS), or the check itself failed.
    """
    cache = cache or cache_file()
    key = library_key()
    verdict = _read_verdicts(cache).get(key)
    if verdict is None:
        verdict = evaluate_in_child(gguf)
        _write_verdict(cache, key, verdict)
    if verdict != "ok":
        raise UnsafeLlamaBuild(
            f"this llama-cpp-python build crashes at its first evaluation ({verdict}) on this "
            f"machine: it was built for CPU features the machine does not run safely. "
            f"Reinstall it with: {REINSTALL}"
        )
