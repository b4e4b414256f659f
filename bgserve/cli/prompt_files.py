"""Read a ``prompts/<name>/`` directory safely: no symlinks, regular files only, sizes capped.

What is read here is sent to MLflow or to bgserve, so a template linked to
``/proc/self/environ`` would publish the caller's environment (tokens included): every
file must be a regular file inside the directory, opened without following links.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bgserve.domain.golden import GoldenCase, LintReport, lint_template, parse_golden_jsonl
from bgserve.domain.template import variables
from bgserve.errors import InvalidInput, PayloadTooLarge

TEMPLATE_LIMIT = 64 * 1024
META_LIMIT = 16 * 1024
GOLDEN_LIMIT = 10 * 1024 * 1024
# MLflow's prompt name rule (mlflow.prompt.constants.PROMPT_NAME_RULE), checked before
# anything is contacted.
PROMPT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


@dataclass
class PromptDir:
    """The contents of one prompt directory, checked."""

    name: str
    template: str
    meta: dict[str, Any] = field(default_factory=dict)
    cases: list[GoldenCase] | None = None

    @property
    def tags(self) -> dict[str, str]:
        """``tags`` of prompt.yaml, as strings."""
        return {str(k): str(v) for k, v in (self.meta.get("tags") or {}).items()}

    def lint(self) -> LintReport | None:
        """The template lint against the golden set, or None without one."""
        if self.cases is None:
            return None
        return lint_template(variables(self.template), self.cases)


def read_prompt_dir(directory: Path, *, need_golden: bool = False) -> PromptDir:
    """Read and check template.txt, prompt.yaml (optional) and golden.jsonl.

    Raises:
        InvalidInput: a link, a file that is not regular, a bad name or YAML, a template
            without variables, a missing file; each message names the file.
        PayloadTooLarge: a file over its limit, naming the file and the limit.
    """
    if directory.is_symlink() or not directory.is_dir():
        raise InvalidInput(
            f"{directory} must be a directory, not a symbolic link: give the prompt directory "
            "itself",
            field="directory",
        )
    template = _read(directory, "template.txt", TEMPLATE_LIMIT)
    if template is None:
        raise InvalidInput(f"{directory / 'template.txt'} does not exist", field="template.txt")
    if not variables(template):
        raise InvalidInput(
            f"{directory / 'template.txt'} has no {{{{variable}}}}: a prompt needs at least one",
            field="template.txt",
        )
    meta = _meta(directory)
    name = _name(directory, meta)
    golden = _read(directory, "golden.jsonl", GOLDEN_LIMIT)
    if golden is None and need_golden:
        raise InvalidInput(f"{directory / 'golden.jsonl'} does not exist", field="golden.jsonl")
    return PromptDir(name, template, meta, _cases(directory, golden))


def _cases(directory: Path, golden: str | None) -> list[GoldenCase] | None:
    if golden is None:
        return None
    try:
        return parse_golden_jsonl(golden)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{directory / 'golden.jsonl'}: {exc.message}", field="golden.jsonl"
        ) from exc


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit >= mib else f"{limit // 1024} KiB"


def _meta(directory: Path) -> dict[str, Any]:
    text = _read(directory, "prompt.yaml", META_LIMIT)
    if text is None:
        return {}
    try:
        meta = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{directory / 'prompt.yaml'}: {exc}", field="prompt.yaml") from exc
    if not isinstance(meta, dict):
        raise InvalidInput(
            f"{directory / 'prompt.yaml'} must be a YAML mapping", field="prompt.yaml"
        )
    return meta


def _name(directory: Path, meta: dict[str, Any]) -> str:
    raw = meta.get("name", directory.resolve().name)
    name = raw if isinstance(raw, str) else ""
    if not PROMPT_NAME.match(name):
        raise InvalidInput(
            f"prompt name {raw!r} (from {directory / 'prompt.yaml'} or the directory name) is "
            "not a valid MLflow prompt name: use 1 to 255 letters, digits, '_', '-' and '.'",
            field="name",
        )
    return name


def _read(directory: Path, filename: str, limit: int) -> str | None:
    """The text of ``directory/filename``, None if absent; never through a link."""
    path = directory / filename
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: the last component is a symbolic link
        raise InvalidInput(
            f"{path} is a symbolic link or cannot be opened ({exc.strerror}): prompt files must "
            "be regular files inside the prompt directory",
            field=filename,
        ) from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{path} is not a regular file", field=filename)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{path} is larger than {_size(limit)}, the limit for {filename}",
            field=filename,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text: {exc}", field=filename) from exc
