"""The shape of the package: no import cycle, a data plane that stands alone, no package
that swallows the rest.

Every module under ``bgserve/`` is parsed with :mod:`ast`, so an import counts wherever
it is written: at the top, under ``if TYPE_CHECKING:``, or inside a function.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "bgserve"
MAX_PACKAGE_SHARE = 0.16

# orjson: a chat body's routing fields, read in half json.loads's time on cold caches.
DATAPLANE_THIRD_PARTY = frozenset({"httptools", "orjson", "uvloop"})
DATAPLANE_BGSERVE = frozenset({"bgserve", "bgserve.domain", "bgserve.domain.latency"})
STDLIB_IF_STDLIB_ONLY = "bgserve.gcpause"

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_names(path: Path, name: str, modules: Collection[str] = ()) -> Iterator[str]:
    """Every dotted name ``path`` imports. ``from a import b`` names ``a.b`` if that is
    one of ``modules`` (a submodule), else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in modules else base


def bgserve_edges(modules: dict[str, Path]) -> Graph:
    """Module -> the bgserve modules it imports."""
    return {
        name: {n for n in imported_names(path, name, modules) if n in modules and n != name}
        for name, path in modules.items()
    }


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as a path that starts and ends on the same module, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        branches = [iter(sorted(graph[start]))]
        while branches:
            nxt = next(branches[-1], None)
            if nxt is None:
                branches.pop()
                done.add(path.pop())
            elif nxt in path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                path.append(nxt)
                branches.append(iter(sorted(graph.get(nxt, ()))))
    return None


def parent_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python initialises before the module."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def top_level(name: str) -> str:
    return name.split(".")[0]


def is_stdlib(name: str) -> bool:
    return top_level(name) in sys.stdlib_module_names


def test_find_cycle_reports_the_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": set()})
    assert cycle == ["b", "c", "b"]


def test_no_import_cycle_anywhere() -> None:
    graph = bgserve_edges(all_modules())
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def stdlib_only(modules: dict[str, Path], name: str) -> bool:
    """Whether module ``name`` exists and imports nothing but the standard library."""
    path = modules.get(name)
    return path is not None and all(is_stdlib(n) for n in imported_names(path, name, modules))


def allowed_for_the_data_plane(modules: dict[str, Path]) -> set[str]:
    """The bgserve modules the data plane may import."""
    allowed = {m for m in modules if m.startswith("bgserve.dataplane")} | DATAPLANE_BGSERVE
    if stdlib_only(modules, STDLIB_IF_STDLIB_ONLY):
        allowed.add(STDLIB_IF_STDLIB_ONLY)
    return allowed


def test_the_data_plane_imports_only_the_stdlib_httptools_orjson_uvloop_and_the_histogram() -> None:
    modules = all_modules()
    allowed = allowed_for_the_data_plane(modules)
    wrong = [
        f"{name} imports {imported}"
        for name, path in modules.items()
        if name.startswith("bgserve.dataplane")
        for imported in set(imported_names(path, name, modules))
        if not (
            imported in allowed
            or is_stdlib(imported)
            or top_level(imported) in DATAPLANE_THIRD_PARTY
        )
    ]
    assert not wrong, "the data plane must stand alone:\n" + "\n".join(sorted(wrong))


def test_everything_the_data_plane_reaches_in_bgserve_is_allowed() -> None:
    """The transitive closure too, with the packages a module's import runs first: an
    allowed module must not pull the rest in."""
    modules = all_modules()
    graph = bgserve_edges(modules)
    seen: set[str] = set()
    todo = [m for m in modules if m.startswith("bgserve.dataplane")]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(graph[current])
            todo.extend(p for p in parent_packages(current) if p in modules)
    beyond = seen - allowed_for_the_data_plane(modules)
    assert not beyond, f"the data plane reaches {sorted(beyond)}"


def code_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_no_top_level_package_holds_more_than_its_share_of_the_code() -> None:
    total = sum(code_lines(p) for p in ROOT.rglob("*.py"))
    packages = sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    shares = {p.name: sum(code_lines(f) for f in p.rglob("*.py")) / total for p in packages}
    too_big = {name: f"{share:.1%}" for name, share in shares.items() if share > MAX_PACKAGE_SHARE}
    assert not too_big, f"packages above {MAX_PACKAGE_SHARE:.0%} of {total} lines: {too_big}"


PURE_PACKAGES = ("bgserve.domain", "bgserve.evaluation")
PURE_BGSERVE = frozenset({"bgserve", "bgserve.errors", "__future__"})  # the one error tree
# Computation only: validation, statistics, text similarity, safe regexes, JSON schemas.
PURE_THIRD_PARTY = frozenset(
    {"pydantic", "pydantic_core", "scipy", "rapidfuzz", "re2", "jsonschema", "typing_extensions"}
)
IO_STDLIB = frozenset(
    {"os", "io", "socket", "subprocess", "pathlib", "shutil", "asyncio", "threading", "time"}
)


def test_the_pure_packages_do_no_io_and_import_no_outer_layer() -> None:
    """domain/ and evaluation/ import only each other, the error tree, computation
    libraries and the standard library less its I/O, process and clock modules."""
    modules = all_modules()
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        if not name.startswith(PURE_PACKAGES):
            continue
        for imported in imported_names(path, name, modules):
            top = top_level(imported)
            if imported.startswith(PURE_PACKAGES) or imported in PURE_BGSERVE:
                continue
            if top in PURE_THIRD_PARTY or (is_stdlib(imported) and top not in IO_STDLIB):
                continue
            found.setdefault(name, set()).add(imported)
    assert not found, f"pure modules importing I/O or outer layers: {found}"


def test_the_comparison_never_imports_the_rollout_domain() -> None:
    """evaluation/ stands below domain/: the rollout may use verdicts, never the reverse."""
    modules = all_modules()
    reaching = {
        name: sorted(
            i for i in imported_names(path, name, modules) if i.startswith("bgserve.domain")
        )
        for name, path in modules.items()
        if name.startswith("bgserve.evaluation")
    }
    assert not {k: v for k, v in reaching.items() if v}
