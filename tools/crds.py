"""The official CRDs the tests validate against, fetched from their upstream sources.

    python3 tools/crds.py           fetch what is missing into the cache, verify, print the dir
    python3 tools/crds.py --check   verify only (no network); print the dir or exit 1

Each file comes from a pinned upstream revision and is checked by SHA-256 before use. The
directory is ``$BGSERVE_CRD_DIR`` when set (an offline machine points it at a copy: it is
verified, never written to), else ``${XDG_CACHE_HOME:-~/.cache}/bgserve/crds/<pin>``, where
``<pin>`` names the set of revisions below, so changing a pin starts a fresh directory.

Two files are not byte-for-byte upstream, and their checksums are of the result:
- ``istio/*.yaml`` are two documents cut from Istio's ``crd-all.gen.yaml``.
- the SeldonDeployment CRD has ``items: {}`` under ``graph.children``, which a real
  kube-apiserver refuses (422, "must not be empty for specified array items"); Seldon's own
  install post-processes it, and so does :func:`_fix_seldon_children`, into
  ``{type: object, x-kubernetes-preserve-unknown-fields: true}``.

Standard library only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

RAW = "https://raw.githubusercontent.com"
KSERVE = f"{RAW}/kserve/kserve/aaac4e294dae"
SELDON2 = f"{RAW}/SeldonIO/seldon-core/v2.10.2/operator/config/crd/bases"
SELDON1 = f"{RAW}/SeldonIO/seldon-core/v1.18.2/operator/config/crd_v1_small/bases"
GATEWAY = f"{RAW}/kubernetes-sigs/gateway-api/4564255ac2c3/config/crd/standard"
ISTIO_ALL = f"{RAW}/istio/istio/86c9f01fd735/manifests/charts/base/files/crd-all.gen.yaml"
# Names the set of revisions above: bump it whenever a URL or a checksum changes.
PIN = "kserve-aaac4e2-seldon-2.10.2-gw-4564255-istio-86c9f01"


@dataclass(frozen=True)
class CrdFile:
    """One file of the set: where it lands, where it comes from, what it must hash to."""

    path: str
    url: str
    sha256: str
    transform: Callable[[bytes], bytes] | None = None


def _istio_document(name: str) -> Callable[[bytes], bytes]:
    """Cut the CRD named ``name`` out of Istio's multi-document ``crd-all.gen.yaml``."""

    def cut(text: bytes) -> bytes:
        for doc in re.split(rb"(?m)^---\s*\n", text):
            if re.search(rb"(?m)^  name: " + re.escape(name.encode()) + rb"\s*$", doc):
                return doc.lstrip(b"\n")
        raise ValueError(f"{name} is not in {ISTIO_ALL}")

    return cut


def _fix_seldon_children(text: bytes) -> bytes:
    """Give ``graph.children`` the item schema a real kube-apiserver requires."""
    fixed, count = re.subn(rb"(?m)^(( *)children:\n)\2  items: \{\}\n", _children_node, text)
    if count == 0:
        raise ValueError("no `children: items: {}` node to fix in the SeldonDeployment CRD")
    return fixed


def _children_node(match: re.Match[bytes]) -> bytes:
    inner = match.group(2) + b"  "
    lines = [b"items:", b"  type: object", b"  x-kubernetes-preserve-unknown-fields: true"]
    return match.group(1) + b"".join(inner + line + b"\n" for line in lines)


def _kserve(name: str, sha256: str, under: str = "config/crd/full") -> CrdFile:
    return CrdFile(f"kserve/{name}", f"{KSERVE}/{under}/{name}", sha256)


FILES: tuple[CrdFile, ...] = (
    _kserve(
        "serving.kserve.io_inferenceservices.yaml",
        "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
    ),
    _kserve(
        "serving.kserve.io_inferencegraphs.yaml",
        "b2e246d7a055937ea56de13850d0f4f993f1825b078a4c901944b99bba1800ca",
    ),
    _kserve(
        "serving.kserve.io_servingruntimes.yaml",
        "5a262831474e7bd23e7c4f76556d84e1a11fb3ad74a78a6d18cfc71fd8fca7a2",
    ),
    _kserve(
        "serving.kserve.io_clusterservingruntimes.yaml",
        "f721d19516670d4a81181e231b1e58cbc32c36435969182ae457fad537151cc8",
    ),
    _kserve(
        "serving.kserve.io_llminferenceservices.yaml",
        "fbd625c2a2ac7b79e17c9763b7a0c4acf3cd3eaa99ebf0fab06db008785b35f3",
        under="config/crd/full/llmisvc",
    ),
    _kserve(
        "serving.kserve.io_llminferenceserviceconfigs.yaml",
        "221d71dcdefec8415430c306d274293b8f566e0b316b110065ff8e6e6d441104",
        under="config/crd/full/llmisvc",
    ),
    CrdFile(
        "kserve/kserve-mlserver.clusterservingruntime.yaml",
        f"{KSERVE}/config/runtimes/kserve-mlserver.yaml",
        "163224dcc5dadd32e335710dd8d3de3d0af3600096681814045601eefc30a121",
    ),
    *(
        CrdFile(
            f"seldon/mlops.seldon.io_{kind}.yaml", f"{SELDON2}/mlops.seldon.io_{kind}.yaml", sha
        )
        for kind, sha in (
            ("models", "14722aa36434dc005a2f4c331e9f443560a2acc91bad29dda377e2b6b886f653"),
            ("experiments", "07e19b06453d857701ad76677cf01723e5d97514b5e60c56d7b359026e7c5597"),
            ("pipelines", "347b261a964c20768f77d672382b9b1a2e81cdcdc5d6fac4193b4ac48cb4d333"),
            ("servers", "fa72fe5edce0002163d6dc3f84876bd436536d5ef69b4928ae20cd7d9b119b0d"),
            ("serverconfigs", "f17e26ccfd76dd96e76f0625cb60395102566db79e280e8db3f94f35c90d97a5"),
        )
    ),
    CrdFile(
        "seldon/machinelearning.seldon.io_seldondeployments.v1.18.2.small.yaml",
        f"{SELDON1}/machinelearning.seldon.io_seldondeployments.yaml",
        "a82f604c22ab3304bb81aa5c577a5f46da4b78402c2e9f064226a7b0597203b0",
        _fix_seldon_children,
    ),
    *(
        CrdFile(
            f"gateway-api/gateway.networking.k8s.io_{kind}.yaml",
            f"{GATEWAY}/gateway.networking.k8s.io_{kind}.yaml",
            sha,
        )
        for kind, sha in (
            ("httproutes", "5b746e5dd696239cdf7d1a6dc6293d103fb78056598aa3f2e14f7512dc8c362b"),
            ("gateways", "161791d534b1ef582573cad99f9163eb8761715e6e934dd93374a5999ad17356"),
            ("gatewayclasses", "4c0b7eac1d0979defa6d2b54dd89c5fd6a40ec918e464974229aaa927cc1b646"),
            ("referencegrants", "068bebe134b7f594e1a929bd7e32e722057548b47d485c5a3f3e55be34f0e4a0"),
        )
    ),
    *(
        CrdFile(f"istio/{name}.yaml", ISTIO_ALL, sha, _istio_document(name))
        for name, sha in (
            (
                "virtualservices.networking.istio.io",
                "4e6d1e3d666a48d9b3fddd0ce9bb3aef624fe760898318960af17f39aa9bd300",
            ),
            (
                "destinationrules.networking.istio.io",
                "5accff346c128a5c1e5b8fa1dea00c1fd57f8a932939359201da459126861234",
            ),
        )
    ),
)


def cache_dir() -> Path:
    """Where fetched CRDs live: one directory per :data:`PIN`."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "bgserve" / "crds" / PIN


def crd_dir() -> Path:
    """``$BGSERVE_CRD_DIR`` when set, else :func:`cache_dir` (which may not exist yet)."""
    override = os.environ.get("BGSERVE_CRD_DIR")
    return Path(override) if override else cache_dir()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problems(root: Path, files: Iterable[CrdFile] = FILES) -> list[str]:
    """Every file of the set that is missing under ``root`` or hashes wrong; empty when good."""
    found = []
    for spec in files:
        path = root / spec.path
        if not path.is_file():
            found.append(f"{path}: missing")
        elif (actual := _sha256(path)) != spec.sha256:
            found.append(f"{path}: SHA-256 {actual}, pinned {spec.sha256}")
    return found


def _download(url: str, cache: dict[str, bytes]) -> bytes:
    if url not in cache:
        with urllib.request.urlopen(url, timeout=120) as response:
            cache[url] = response.read()
    return cache[url]


def fetch(root: Path) -> None:
    """Download every missing or wrong file of the set into ``root``, each checked by SHA-256
    before it is moved into place. Idempotent. Raises ``OSError`` (network, disk) or
    ``ValueError`` (a file that does not hash to its pin; nothing is written for it)."""
    downloads: dict[str, bytes] = {}
    for spec in FILES:
        target = root / spec.path
        if target.is_file() and _sha256(target) == spec.sha256:
            continue
        body = _download(spec.url, downloads)
        if spec.transform is not None:
            body = spec.transform(body)
        actual = hashlib.sha256(body).hexdigest()
        if actual != spec.sha256:
            raise ValueError(f"{spec.url} -> {spec.path}: SHA-256 {actual}, pinned {spec.sha256}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(body)
        os.replace(tmp.name, target)


def main(argv: list[str] | None = None) -> int:
    """Print the verified CRD directory (fetching into the cache first unless ``--check``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="verify only, never download")
    args = parser.parse_args(argv)
    root = crd_dir()
    offline = args.check or bool(os.environ.get("BGSERVE_CRD_DIR"))
    if not offline:
        try:
            fetch(root)
        except (OSError, ValueError) as exc:
            print(f"fetching the CRDs into {root} failed: {exc}", file=sys.stderr)
            return 1
    wrong = problems(root)
    if wrong:
        where = "BGSERVE_CRD_DIR" if os.environ.get("BGSERVE_CRD_DIR") else "the cache"
        print(f"the CRDs in {root} ({where}) do not match the pins:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in wrong), file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
