"""The reference's parameter tables name exactly the parameters each public callable takes.

mkdocstrings renders an ``Args:`` section through griffe's Google parser: one table row per
``name: description`` line. A line that names two parameters (``a, b: ...``) or a made-up
name (``Others: ...``) gives a row no parameter has, and the parameters it stands for get
none. This parses every public function's and class's docstring the same way and compares
the rows with ``inspect.signature``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil

import pytest
from griffe import Docstring, DocstringSectionKind

import metaloop


def _public_modules() -> list[str]:
    """metaloop and each public module or subpackage under it that declares ``__all__``."""
    out = ["metaloop"]
    for m in pkgutil.iter_modules(metaloop.__path__):
        if m.name.startswith("_") or m.name == "cli":
            continue
        if getattr(importlib.import_module(f"metaloop.{m.name}"), "__all__", None):
            out.append(f"metaloop.{m.name}")
    return out


def _public_callables() -> dict[str, object]:
    """Every function and class named in a public ``__all__``, keyed by where it is defined."""
    out = {}
    for name in _public_modules():
        mod = importlib.import_module(name)
        for n in mod.__all__:
            obj = getattr(mod, n)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return dict(sorted(out.items()))


def _documented(obj) -> tuple[list[str], bool]:
    """The parameter rows griffe reads from ``obj``'s docstring (a class's merged with its
    ``__init__``'s, as ``merge_init_into_class`` renders them), and whether it has an
    ``Args:`` or, for a dataclass or named tuple, an ``Attributes:`` section."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and "__init__" in vars(obj) and obj.__init__.__doc__:
        doc += "\n\n" + inspect.getdoc(obj.__init__)
    fields = inspect.isclass(obj) and ("__dataclass_fields__" in vars(obj)
                                       or "_fields" in vars(obj))
    kinds = {DocstringSectionKind.parameters}
    if fields:
        kinds.add(DocstringSectionKind.attributes)
    logging.disable(logging.CRITICAL)  # griffe logs missing types; the config turns those off
    try:
        sections = Docstring(doc, parser="google").parse()
    finally:
        logging.disable(logging.NOTSET)
    names = [p.name for s in sections if s.kind in kinds for p in s.value]
    return names, any(s.kind in kinds for s in sections)


def _mismatch(obj) -> str | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = [p.name for p in sig.parameters.values() if p.name != "self"]
    named = [p.name for p in sig.parameters.values() if p.name != "self"
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    rows, has_section = _documented(obj)
    starred = {f"*{p}" for p in params} | {f"**{p}" for p in params}
    unknown = [r for r in rows if r not in params and r not in starred]
    missing = [p for p in named if p not in rows]
    if not named and not rows:
        return None
    if not has_section:
        return f"no Args section for {named}"
    if unknown or missing:
        return f"rows no parameter has: {unknown}; parameters without a row: {missing}"
    return None


CALLABLES = _public_callables()


def test_the_public_callables_are_found():
    assert len(CALLABLES) > 150 and "metaloop.meta.maml.MAML" in CALLABLES


@pytest.mark.parametrize("path", sorted(CALLABLES))
def test_every_parameter_has_its_own_row(path):
    problem = _mismatch(CALLABLES[path])
    assert problem is None, f"{path}: {problem}"


def test_a_line_naming_two_parameters_or_a_made_up_one_is_caught():
    def two(a, b, c):
        """Do.

        Args:
            a, b: two on one line.
            c: one.
        """

    def others(a, b):
        """Do.

        Args:
            a: one.
            Others: the rest.
        """

    def good(a, *rest, **kw):
        """Do.

        Args:
            a: one.
            *rest: more.
        """

    assert "'a, b'" in _mismatch(two) and "'a', 'b'" in _mismatch(two)
    assert "'Others'" in _mismatch(others) and "['b']" in _mismatch(others)
    assert _mismatch(good) is None
