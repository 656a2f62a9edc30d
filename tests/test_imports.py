"""The import graph of `pipeline/` (issue 34): no cycles, nothing imported upward, never gradio.

Every `import` / `from ... import` in every module is read with `ast`, function-local ones included (a cycle
hidden in a function still breaks a refactor that moves the import up). An edge points at the deepest
pipeline module an import names (`from . import x` of a module x points at x, of a name at the package).

Definitions checked here:

- *cycle*: a strongly connected set of two or more modules, counted twice: between modules, and between
  units, where a unit is one root module (pipeline/x.py) or one sub-package (pipeline/diffusion/, sam/,
  sweep/, all its modules as one node). The second catches a sub-package and a root module that reach
  each other through different modules of the sub-package.
- *upward*: a module inside a sub-package (pipeline/X/y.py) importing the package root (pipeline/__init__)
  or a root module that is not in FOUNDATION. FOUNDATION is the allow-list of root modules the
  sub-packages build on; each of them must itself import no sub-package and nothing outside FOUNDATION,
  so the layering is: FOUNDATION < sub-packages < the rest of the root (CLIs, benches, browse, ...).
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pipeline"

# root modules the sub-packages may import: small leaf utilities and the data layer
FOUNDATION = {"arms", "augment", "config", "data", "errors", "eta", "fileio", "gpu", "hybrid", "locks", "masks", "measure",
              "metrics", "phantom", "process", "readable", "results", "runs", "unet", "validate"}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(pipeline edges module -> modules, every top-level name each module imports)."""
    mods = _modules()

    def deepest(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges, tops = {}, {}
    for m, (p, is_pkg) in mods.items():
        pkg = m if is_pkg else m.rpartition(".")[0]
        out, top = set(), set()
        for n in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(n, ast.Import):
                for a in n.names:
                    top.add(a.name.split(".")[0])
                    if a.name.split(".")[0] == "pipeline":
                        out.add(deepest(a.name))
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                    full = ".".join(base) + (f".{n.module}" if n.module else "")
                else:
                    full = n.module or ""
                top.add(full.split(".")[0])
                if full.split(".")[0] != "pipeline":
                    continue
                for a in n.names:
                    out.add(f"{full}.{a.name}" if f"{full}.{a.name}" in mods else deepest(full))
        out.discard(m)
        edges[m], tops[m] = out, top
    return edges, tops


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more nodes (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def _unit(m: str) -> str:
    return ".".join(m.split(".")[:2])


def _is_root_module(m: str) -> bool:
    return m.count(".") == 1 and not _modules()[m][1]


def test_no_import_cycle_between_pipeline_modules():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_import_cycle_between_root_modules_and_sub_packages():
    edges, _ = _graph()
    units: dict[str, set[str]] = {}
    for m, out in edges.items():
        units.setdefault(_unit(m), set()).update(_unit(b) for b in out if _unit(b) != _unit(m))
    assert _cycles(units) == []


def test_no_upward_import_from_a_sub_package():
    edges, _ = _graph()
    mods = _modules()
    upward = sorted(f"{m} -> {b}" for m, out in edges.items() if m.count(".") >= 2 or (m.count(".") == 1 and mods[m][1])
                    for b in out if _unit(b) != _unit(m)
                    and (b == "pipeline" or (_is_root_module(b) and b.split(".")[1] not in FOUNDATION)))
    assert upward == []


def test_the_foundation_imports_only_the_foundation():
    edges, _ = _graph()
    assert {f"pipeline.{f}" for f in FOUNDATION} <= set(edges), "FOUNDATION names a module that is not there"
    bad = sorted(f"{m} -> {b}" for m in (f"pipeline.{f}" for f in FOUNDATION) for b in edges[m]
                 if not (_is_root_module(b) and b.split(".")[1] in FOUNDATION))
    assert bad == []


def test_pipeline_never_imports_gradio():
    _, tops = _graph()
    assert sorted(m for m, top in tops.items() if "gradio" in top or "gradio_client" in top) == []
