"""GGUF paths the API accepts: only under the operator's allowed directories, with symlinks
and '..' resolved before the check, and nothing said about a refused path's existence."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgserve.errors import Forbidden, InvalidInput
from bgserve.llm.gguf import GGUF_DIRS_SETTING, confine_gguf


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "model.gguf").write_bytes(b"GGUF-inside")
    (outside / "secret.gguf").write_bytes(b"GGUF-outside")
    return allowed, outside


def test_no_allowed_directory_refuses_every_path_naming_the_setting(
    dirs: tuple[Path, Path],
) -> None:
    allowed, _ = dirs
    with pytest.raises(Forbidden) as refused:
        confine_gguf(allowed / "model.gguf", [])
    assert GGUF_DIRS_SETTING in refused.value.message
    assert refused.value.details["setting"] == GGUF_DIRS_SETTING


def test_a_path_under_an_allowed_directory_comes_back_resolved(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    (allowed / "alias.gguf").symlink_to(allowed / "model.gguf")
    assert confine_gguf(allowed / "alias.gguf", [allowed]) == (allowed / "model.gguf").resolve()


def test_an_allowed_directory_given_through_a_symlink_still_allows_its_files(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    allowed, _ = dirs
    (tmp_path / "link-to-allowed").symlink_to(allowed)
    resolved = confine_gguf(allowed / "model.gguf", [tmp_path / "link-to-allowed"])
    assert resolved == (allowed / "model.gguf").resolve()


@pytest.mark.parametrize("exists", [True, False])
def test_dot_dot_out_of_the_allowed_directory_is_refused_alike_whether_the_file_exists(
    dirs: tuple[Path, Path], exists: bool
) -> None:
    allowed, _ = dirs
    name = "secret.gguf" if exists else "missing.gguf"
    with pytest.raises(Forbidden) as refused:
        confine_gguf(allowed / ".." / "outside" / name, [allowed])
    assert GGUF_DIRS_SETTING in refused.value.message and "exist" not in refused.value.message


def test_a_symlinked_file_pointing_out_is_refused(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    (allowed / "link.gguf").symlink_to(outside / "secret.gguf")
    with pytest.raises(Forbidden):
        confine_gguf(allowed / "link.gguf", [allowed])


def test_a_symlinked_directory_pointing_out_is_refused(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    (allowed / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(Forbidden):
        confine_gguf(allowed / "sub" / "secret.gguf", [allowed])


def test_a_sibling_whose_name_extends_the_allowed_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models-private").mkdir()
    with pytest.raises(Forbidden):
        confine_gguf(tmp_path / "models-private" / "x.gguf", [tmp_path / "models"])


def test_a_relative_path_is_a_422_naming_the_field(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    with pytest.raises(InvalidInput) as refused:
        confine_gguf(Path("model.gguf"), [allowed])
    assert refused.value.field == "gguf"
