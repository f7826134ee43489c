"""The package's layering, read from the source: no import cycles (lazy imports inside functions
count too), and each heavy library stays behind its one boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tfkd_search"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> every module it imports (absolute names), anywhere in its body."""
    out: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import losses`
        out[name] = found
    return out


def _internal_graph() -> dict[str, set[str]]:
    imports = _imports()
    modules = set(imports)
    graph = {}
    for mod, targets in imports.items():
        graph[mod] = {t for t in targets if t in modules and t != mod}
    return graph


def test_the_graph_sees_lazy_imports():
    graph = _internal_graph()
    assert "tfkd_search.export" in graph["tfkd_search.search.driver"]  # imported inside a function
    assert "tfkd_search.losses" in graph["tfkd_search.trainer"]  # `from . import losses`


def test_no_import_cycles():
    graph = _internal_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package's __init__ re-exporting its own submodules is not a cycle of the layering
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node)


# library -> the modules allowed to import it (prefixes)
BOUNDARIES = {
    "ray": ("tfkd_search.search",),
    "mlflow": ("tfkd_search.tracking",),
    "optuna": ("tfkd_search.report",),
}
# modules the replays and the validation use without torch, Ray or MLflow
PURE = ("tfkd_search.scheduling", "tfkd_search.runfolder", "tfkd_search.config",
        "tfkd_search.overrides", "tfkd_search.spaces", "tfkd_search.errors", "tfkd_search.registry")


@pytest.mark.parametrize("library", sorted(BOUNDARIES))
def test_each_library_stays_behind_its_boundary(library):
    offenders = sorted(mod for mod, targets in _imports().items()
                       if any(t == library or t.startswith(library + ".") for t in targets)
                       and not mod.startswith(BOUNDARIES[library]))
    assert offenders == [], f"{library} imported outside {BOUNDARIES[library]}: {offenders}"


def test_pure_modules_import_no_heavy_library_at_module_level():
    for mod in PURE:
        path = PKG.parent / (mod.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        heavy = {n for n in names if n.split(".")[0] in ("torch", "ray", "mlflow", "optuna")}
        assert not heavy, f"{mod} imports {heavy} at module level"
