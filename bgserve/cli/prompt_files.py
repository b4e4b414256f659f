"""Read a ``prompts/<name>/`` directory safely: no symlinks, regular files only, sizes capped.

A text prompt has ``template.txt``; a chat prompt has ``messages`` in ``prompt.yaml``
instead, and may add ``model_config`` and ``response_format`` (a JSON schema) there.

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

from bgserve.errors import InvalidInput, PayloadTooLarge
from bgserve.evaluation.chat_prompt import check_messages, lint_chat
from bgserve.evaluation.golden import GoldenCase, LintReport, lint_template, parse_golden_jsonl
from bgserve.evaluation.model_config import check_model_config
from bgserve.evaluation.response_schema import check_response_schema
from bgserve.evaluation.template import variables

TEMPLATE_LIMIT = 64 * 1024
META_LIMIT = 16 * 1024
CHAT_META_LIMIT = TEMPLATE_LIMIT + META_LIMIT
GOLDEN_LIMIT = 10 * 1024 * 1024
# MLflow's prompt name rule (mlflow.prompt.constants.PROMPT_NAME_RULE), checked before
# anything is contacted.
PROMPT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}\Z")


@dataclass
class PromptDir:
    """The contents of one prompt directory, checked: ``template`` for a text prompt,
    ``messages`` (with ``model_config`` and ``response_format``) for a chat prompt."""

    name: str
    template: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    cases: list[GoldenCase] | None = None
    messages: list[dict[str, str]] | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None

    @property
    def is_chat(self) -> bool:
        """True for a chat prompt (messages in prompt.yaml)."""
        return self.messages is not None

    @property
    def tags(self) -> dict[str, str]:
        """``tags`` of prompt.yaml, as strings."""
        return {str(k): str(v) for k, v in (self.meta.get("tags") or {}).items()}

    def lint(self) -> LintReport | None:
        """The template lint against the golden set, or None without one."""
        if self.cases is None:
            return None
        if self.messages is not None:
            return lint_chat(self.messages, self.cases)
        return lint_template(variables(self.template or ""), self.cases)


def read_prompt_dir(directory: Path, *, need_golden: bool = False) -> PromptDir:
    """Read and check template.txt or the messages of prompt.yaml, the rest of prompt.yaml
    (optional) and golden.jsonl.

    Raises:
        InvalidInput: a link, a file that is not regular, a bad name or YAML, a text
            template without variables, both or neither of template.txt and messages, bad
            messages, an unknown or out-of-range model_config key, a response_format that
            is not a JSON schema, a missing file; each message names the file and the key.
        PayloadTooLarge: a file over its limit, naming the file and the limit.
    """
    if directory.is_symlink() or not directory.is_dir():
        raise InvalidInput(
            f"{directory} must be a directory, not a symbolic link: give the prompt directory "
            "itself",
            field="directory",
        )
    template = _read(directory, "template.txt", TEMPLATE_LIMIT)
    meta, meta_size = _meta(directory)
    name = _name(directory, meta)
    golden = _read(directory, "golden.jsonl", GOLDEN_LIMIT)
    if golden is None and need_golden:
        raise InvalidInput(f"{directory / 'golden.jsonl'} does not exist", field="golden.jsonl")
    cases = _cases(directory, golden)
    if "messages" in meta:
        return _chat_dir(directory, name, template, meta, cases)
    _check_text(directory, template, meta, meta_size)
    return PromptDir(name, template, meta, cases)


def _check_text(
    directory: Path, template: str | None, meta: dict[str, Any], meta_size: int
) -> None:
    if template is None:
        raise InvalidInput(
            f"{directory / 'template.txt'} does not exist: a prompt needs template.txt, or "
            "messages in prompt.yaml for a chat prompt",
            field="template.txt",
        )
    if not variables(template):
        raise InvalidInput(
            f"{directory / 'template.txt'} has no {{{{variable}}}}: a prompt needs at least one",
            field="template.txt",
        )
    for key in ("model_config", "response_format"):
        if key in meta:
            raise InvalidInput(
                f"{directory / 'prompt.yaml'}: {key} applies to chat prompts only: move the "
                "template into messages",
                field=key,
            )
    if meta_size > META_LIMIT:  # read up to the chat limit; without messages this one holds
        raise PayloadTooLarge(
            f"{directory / 'prompt.yaml'} is larger than {_size(META_LIMIT)}, the limit for "
            "prompt.yaml without messages",
            field="prompt.yaml",
        )


def _chat_dir(
    directory: Path,
    name: str,
    template: str | None,
    meta: dict[str, Any],
    cases: list[GoldenCase] | None,
) -> PromptDir:
    where = directory / "prompt.yaml"
    if template is not None:
        raise InvalidInput(
            f"{directory} has both template.txt and messages in prompt.yaml: keep one "
            "(template.txt for a text prompt, messages for a chat prompt)",
            field="messages",
        )
    try:
        messages = check_messages(meta["messages"])
        config = check_model_config(meta.get("model_config"))
        schema = meta.get("response_format")
        schema = None if schema is None else check_response_schema(schema)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", field=exc.field) from exc
    return PromptDir(name, None, meta, cases, messages, config, schema)


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


def _meta(directory: Path) -> tuple[dict[str, Any], int]:
    """prompt.yaml as a mapping (empty when absent), and its size in bytes."""
    text = _read(directory, "prompt.yaml", CHAT_META_LIMIT)
    if text is None:
        return {}, 0
    try:
        meta = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{directory / 'prompt.yaml'}: {exc}", field="prompt.yaml") from exc
    if not isinstance(meta, dict):
        raise InvalidInput(
            f"{directory / 'prompt.yaml'} must be a YAML mapping", field="prompt.yaml"
        )
    return meta, len(text.encode())


def _name(directory: Path, meta: dict[str, Any]) -> str:
    raw = meta.get("name", directory.resolve().name)
    name = raw if isinstance(raw, str) else ""
    if not PROMPT_NAME.fullmatch(name):
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
