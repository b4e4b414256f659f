"""tools/crds.py: the pinned CRD set, verified offline through BGSERVE_CRD_DIR.

The download path needs the network and is not run here; what it does to a downloaded body
(the Istio cut, the SeldonDeployment fix) is.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.crd_schema import require_crd_dir
from tools import crds

SELDON_V1 = "seldon/machinelearning.seldon.io_seldondeployments.v1.18.2.small.yaml"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _run(env_dir: Path, *args: str) -> Run:
    """``python3 tools/crds.py ARGS`` with ``BGSERVE_CRD_DIR=env_dir``, in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BGSERVE_CRD_DIR", str(env_dir))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = crds.main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def crd_copy(tmp_path: Path) -> Path:
    """A writable copy of the verified CRD directory."""
    copy = tmp_path / "crds"
    shutil.copytree(require_crd_dir(), copy)
    return copy


def test_the_override_directory_is_verified_and_printed(crd_copy: Path) -> None:
    result = _run(crd_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(crd_copy)


def test_a_changed_file_is_refused_by_name(crd_copy: Path) -> None:
    target = crd_copy / "gateway-api/gateway.networking.k8s.io_httproutes.yaml"
    target.write_bytes(target.read_bytes().replace(b"HTTPRoute", b"HTTPRoutx", 1))
    result = _run(crd_copy)
    assert result.returncode == 1
    assert str(target) in result.stderr and "SHA-256" in result.stderr
    assert result.stdout == ""


def test_a_missing_file_is_refused_and_the_override_never_written(crd_copy: Path) -> None:
    (crd_copy / SELDON_V1).unlink()
    result = _run(crd_copy)
    assert result.returncode == 1
    assert f"{crd_copy / SELDON_V1}: missing" in result.stderr
    assert not (crd_copy / SELDON_V1).exists()


def test_every_pinned_file_is_checked() -> None:
    root = require_crd_dir()
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.yaml")}
    assert {spec.path for spec in crds.FILES} == on_disk


def test_the_seldon_fix_turns_the_generated_node_into_the_pinned_file() -> None:
    pinned = (require_crd_dir() / SELDON_V1).read_bytes()
    indent = b" " * 26
    lines = [b"items:", b"  type: object", b"  x-kubernetes-preserve-unknown-fields: true"]
    fixed_node = b"".join(indent + line + b"\n" for line in lines)
    generated = pinned.replace(
        b"children:\n" + fixed_node, b"children:\n" + indent + b"items: {}\n"
    )
    assert generated != pinned
    assert crds._fix_seldon_children(generated) == pinned
    with pytest.raises(ValueError, match="children"):
        crds._fix_seldon_children(pinned)


def test_the_istio_cut_takes_each_document_from_the_combined_file() -> None:
    istio = require_crd_dir() / "istio"
    docs = {p.stem: p.read_bytes() for p in sorted(istio.glob("*.yaml"))}
    combined = b"# header\n---\n" + b"---\n".join(docs.values())
    for name, body in docs.items():
        assert crds._istio_document(name)(combined) == body
    with pytest.raises(ValueError, match="gateways"):
        crds._istio_document("gateways.networking.istio.io")(combined)
