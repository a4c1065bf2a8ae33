"""No module of metaloop imports another in a circle, at import time or inside a function.

The graph is read from the source (``import`` and ``from ... import`` statements anywhere in
a module); a package's ``__init__`` re-exporting its own submodules is not an edge of a
circle, since the submodules never import the package's namespace back.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "metaloop").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path, modules: dict) -> set[str]:
    """The metaloop modules ``path`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("metaloop"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("metaloop"))
    return {m for m in out if m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if w.startswith(v + "."):        # a package's __init__ importing its submodule
                continue
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"a.b"}, "a.b": set()}) is None


def test_no_module_imports_another_in_a_circle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    assert "metaloop.config" in graph["metaloop.build"]        # the graph is read at all
    circle = _cycle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_no_module_of_metaloop_uses_pyplot():
    """Plots are drawn on an Agg canvas (``matplotlib.figure.Figure``): pyplot keeps global
    figures, switches backends, and costs every command most of a second to import."""
    users = [name for name, p in _modules().items()
             if any((isinstance(n, ast.ImportFrom) and n.module == "matplotlib.pyplot")
                    or (isinstance(n, ast.ImportFrom) and n.module == "matplotlib"
                        and any(a.name == "pyplot" for a in n.names))
                    or (isinstance(n, ast.Import)
                        and any(a.name == "matplotlib.pyplot" for a in n.names))
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert not users, users
    # nor reaches it through another module (``report.plt``)
    named = [name for name, p in _modules().items() if re.search(r"\bplt\b", p.read_text())]
    assert not named, named
