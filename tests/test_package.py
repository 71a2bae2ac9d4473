"""The package's import graph: no import cycle between the modules of `vad_repro`, and no stale import.

The rule, checked on the source with `ast` (nothing is imported to build the graph):

* an edge `a -> b` is an `import` / `from ... import` in module `a` that names module `b` of
  `vad_repro` (relative imports resolved; `from pkg import name` is an edge to `pkg.name` when that
  is a module, else to `pkg`, i.e. its `__init__`). Importing `pkg.sub` also runs `pkg/__init__`
  first; that implicit edge is not counted (a package's `__init__` re-exporting its submodules is
  not a cycle). Imports under `if TYPE_CHECKING:` never run and are not counted.
* **module-level** edges are the imports that run when `a` is imported (top level, `if` / `try`
  blocks and class bodies); **lazy** edges are the imports inside a function, which run when it is
  called.
* Module-level cycles are forbidden: a module must import completely without first importing
  itself again half-initialised.
* Lazy imports may not close a cycle either: the graph of module-level *and* lazy edges is acyclic
  too, so the package reads as layers (e.g. the engine: config -> data -> trainer / inference; the
  trainer reaches `evaluate_model` of inference lazily, and inference imports nothing of the
  trainer). No exception is allowed today; one would be listed in `LAZY_BACK_EDGES` with its reason.
* Imports made by name at run time (`importlib.import_module`, `vad_repro.models.discover`) are not
  edges.

A failure prints the cycle, each edge with the file and line of its import.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vad_repro"

LAZY_BACK_EDGES: set[tuple[str, str]] = set()   # (importer, imported) lazy edges allowed to close a cycle


def package_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    "Dotted module name -> (file, is a package `__init__`) for every `.py` file under `root`."
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def import_edges(name: str, path: Path, is_pkg: bool, mods: dict) -> list[tuple[str, bool, int, str]]:
    "The imports of module `name` that name modules of `mods`: (target, lazy, line, source text of the import)."
    top = name.split(".")[0]
    package = name if is_pkg else name.rpartition(".")[0]
    text = path.read_text(encoding="utf-8")
    edges = []

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name in mods]
        if node.level:                                          # from .x import y / from .. import y
            base = package.split(".")
            if node.level - 1 >= len(base):
                raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
            base = base[:len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module.split(".")[0] != top: return []
        out = []
        for a in node.names:
            if f"{module}.{a.name}" in mods: out.append(f"{module}.{a.name}")
            elif module in mods: out.append(module)
        return out

    def walk(node, lazy: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse: walk(ast.Module(body=[c], type_ignores=[]), lazy)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in targets(child):
                    if t != name: edges.append((t, lazy, child.lineno, ast.get_source_segment(text, child) or ""))
            walk(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(text, filename=str(path)), False)
    return edges


def import_graph(root: Path, lazy: bool) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    "Module -> the modules it imports (module-level only, or with the lazy imports too), and where each edge is."
    mods = package_modules(root)
    graph, where = {m: set() for m in mods}, {}
    for m, (path, is_pkg) in mods.items():
        for target, is_lazy, line, src in import_edges(m, path, is_pkg, mods):
            if is_lazy and not lazy: continue
            if is_lazy and (m, target) in LAZY_BACK_EDGES: continue
            graph[m].add(target)
            where.setdefault((m, target), f"{path.relative_to(root.parent)}:{line}: {' '.join(src.split())}")
    return graph, where


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One cycle of `graph` as [a, b, ..., a], or None if it is acyclic (iterative depth-first search)."
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE: continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK; stack.pop()
            elif colour.get(child, BLACK) == GREY:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(graph[child]))))
    return None


def describe(cycle: list[str], where: dict) -> str:
    return " -> ".join(cycle) + "\n" + "\n".join(f"  {where[(a, b)]}" for a, b in zip(cycle, cycle[1:]))


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy-imports"])
def test_no_import_cycle(lazy):
    graph, where = import_graph(ROOT, lazy)
    assert len(graph) > 50 and graph["vad_repro.engine.trainer"], "the graph was not built"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in vad_repro:\n" + describe(cycle, where)


def test_engine_imports_one_way():
    "The engine's data module is below the trainer and inference, and inference imports nothing of the trainer."
    graph, _ = import_graph(ROOT, lazy=True)
    assert "vad_repro.engine.data" in graph["vad_repro.engine.trainer"]
    assert "vad_repro.engine.data" in graph["vad_repro.engine.inference"]
    assert "vad_repro.engine.trainer" not in graph["vad_repro.engine.inference"]
    assert not {"vad_repro.engine.trainer", "vad_repro.engine.inference"} & graph["vad_repro.engine.data"]


def test_finds_a_cycle(tmp_path):
    "The checker on a small package of its own: a relative module-level cycle is found, a lazy one only with lazy edges."
    pkg = tmp_path / "pkg"; (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\ndef f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.sub.b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph, where = import_graph(pkg, lazy=False)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.a"},
                     "pkg.c": {"pkg.sub.b"}}
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.a"], cycle
    assert "pkg/sub/b.py:1: from .. import a" in describe(cycle, where)
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.c import g\n")
    assert find_cycle(import_graph(pkg, lazy=False)[0]) is None
    assert find_cycle(import_graph(pkg, lazy=True)[0]) == ["pkg.sub.b", "pkg.c", "pkg.sub.b"]


def test_imported_names_exist():
    "Every `from vad_repro... import name` (module-level or lazy) names a module or an attribute that exists."
    mods = package_modules(ROOT)
    missing = []
    for m, (path, is_pkg) in mods.items():
        package = m if is_pkg else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom): continue
            base = package.split(".")
            module = (".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            if module.split(".")[0] != "vad_repro": continue
            if module not in mods:
                missing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: no module {module}"); continue
            target = importlib.import_module(module)
            for a in node.names:
                if a.name != "*" and f"{module}.{a.name}" not in mods and not hasattr(target, a.name):
                    missing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {module} has no {a.name!r}")
    assert not missing, "stale imports:\n" + "\n".join(missing)
