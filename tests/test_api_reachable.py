"""The API reference names what a user can import: every ``:::`` heading on ``docs/api/*.md``
imports as written, and every name in the ``__all__`` of a module below a subpackage
(``metaloop.adapt.newton_head``, ``metaloop.evaluate.stats``, ...) is rendered on some page.

``tests/test_docs.py`` holds the ``__all__`` of the subpackages and of the modules directly
under ``metaloop`` to a ``:::`` line; ``tests/test_api_contract.py`` holds the names the
guides show. This file covers the rest: the deeper modules, and the headings themselves.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import metaloop

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api"
SCALARS = (bool, int, float, complex, str, bytes, tuple, frozenset, type(None))


def _blocks() -> list[tuple[str, str, str]]:
    """``(page, target, options)`` for each ``::: target`` line and its indented options."""
    out = []
    for page in sorted(API.glob("*.md")):
        for m in re.finditer(r"^::: (\S+)[ \t]*\n((?:[ \t]+.*\n)*)", page.read_text(),
                             flags=re.MULTILINE):
            out.append((page.name, m[1], m[2]))
    return out


def _import_as_written(target: str):
    """``from parent import leaf`` (``import target`` for a top-level name): the leaf must be
    an attribute or a submodule of the module ``parent``, not of a class or function."""
    parent, _, leaf = target.rpartition(".")
    if not parent:
        return importlib.import_module(target)
    ns: dict = {}
    exec(f"from {parent} import {leaf}", ns)                                     # noqa: S102
    return ns[leaf]


def _members(options: str) -> list[str] | None:
    """The names of a ``members: [...]`` option (which may span lines), [] for
    ``members: false``, None for no such option."""
    listed = re.search(r"members:\s*\[([^\]]*)\]", options)
    if listed:
        return [n.strip() for n in listed[1].split(",") if n.strip()]
    return [] if re.search(r"members:\s*false", options) else None


def _deeper_modules() -> list[str]:
    """Public modules two or more levels below ``metaloop`` that declare ``__all__`` (not the
    CLI, not a private module or package)."""
    out = []
    for m in pkgutil.walk_packages(metaloop.__path__, "metaloop."):
        parts = m.name.split(".")
        if len(parts) < 3 or parts[1] == "cli" or any(p.startswith("_") for p in parts):
            continue
        if getattr(importlib.import_module(m.name), "__all__", None):
            out.append(m.name)
    return out


@pytest.mark.parametrize("page,target", [(p, t) for p, t, _ in _blocks()])
def test_every_reference_heading_imports_as_written(page, target):
    try:
        _import_as_written(target)
    except ImportError as e:
        raise AssertionError(f"docs/api/{page}: `::: {target}` does not import as written "
                             f"({e}); name it where a user can import it") from None


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _rendered(mod_name: str, name: str) -> bool:
    """Whether ``mod_name.name`` has an entry: a ``:::`` line for the same object (a function
    or class, under whatever path), a ``:::`` line whose last part is ``name`` in a module
    that binds it to the same object (a constant), or a module's ``:::`` line that lists
    ``name`` in ``members: [...]`` or, without a ``members`` option, renders it (a function or
    class with a docstring; any name with ``show_if_no_docstring: true``)."""
    obj = getattr(importlib.import_module(mod_name), name)
    for _, target, options in _blocks():
        try:
            found = _import_as_written(target)
        except ImportError:
            continue
        parent, _, leaf = target.rpartition(".")
        if found is obj and not isinstance(obj, SCALARS):
            return True
        if leaf == name and parent and getattr(_module(parent), name, None) is obj:
            return True
        if inspect.ismodule(found) and getattr(found, name, None) is obj:
            members = _members(options)
            if members is not None and name in members:
                return True
            if members is None and ("show_if_no_docstring: true" in options
                                    or _has_docstring(found, name)):
                return True
    return False


def _has_docstring(module, name: str) -> bool:
    """A function or class with a docstring, or a module attribute followed by its docstring
    string (what mkdocstrings renders of a module without ``show_if_no_docstring``)."""
    obj = getattr(module, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return bool(obj.__doc__)
    body = ast.parse(inspect.getsource(module)).body
    for stmt, after in zip(body, body[1:]):
        targets = (stmt.targets if isinstance(stmt, ast.Assign) else
                   [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str))
    return False


@pytest.mark.parametrize("mod_name", _deeper_modules())
def test_every_name_in_a_deeper_module_all_is_rendered(mod_name):
    mod = importlib.import_module(mod_name)
    missing = [n for n in mod.__all__ if not _rendered(mod_name, n)]
    assert not missing, (f"{mod_name}.__all__ names what no docs/api page renders: "
                         + ", ".join(missing) + " (add a ::: line, or list it in the "
                         "members of its module's line)")


def test_the_checks_see_an_unrendered_name_and_a_heading_that_does_not_import():
    assert not _rendered("metaloop.adapt.newton_head", "_solve")
    with pytest.raises(ImportError):
        _import_as_written("metaloop.adapt.newton_head.newton_head.__wrapped__")
    with pytest.raises(ImportError):
        _import_as_written("metaloop.adapt.no_such_name")
