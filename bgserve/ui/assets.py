"""The dashboard's stylesheet and script, read once from the package; their version (a
hash of both) goes into the pages' URLs, so a browser never keeps a stale copy."""

from __future__ import annotations

import hashlib
from importlib.resources import files

ASSETS: dict[str, tuple[bytes, str]] = {
    name: (files("bgserve.ui").joinpath("static", name).read_bytes(), kind)
    for name, kind in (("ui.css", "text/css"), ("ui.js", "text/javascript"))
}
VERSION = hashlib.sha256(b"".join(content for content, _ in ASSETS.values())).hexdigest()[:12]
