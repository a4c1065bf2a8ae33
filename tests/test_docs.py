"""The documentation site: the API reference covers every public name, the nav is whole.

Reads the reference pages (``docs/api/*.md``) and ``mkdocs.yml``; building the site itself
(``mkdocs build --strict``) is CI's job, with the ``docs`` extra installed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import metaloop

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api"


def _subpackages() -> list[str]:
    """Public subpackages of metaloop that declare ``__all__`` (the CLI is not a library)."""
    out = []
    for m in pkgutil.iter_modules(metaloop.__path__):
        if m.ispkg and not m.name.startswith("_") and m.name != "cli":
            if getattr(importlib.import_module(f"metaloop.{m.name}"), "__all__", None):
                out.append(m.name)
    return out


def _qualified(obj) -> str:
    """Where an object is defined: a function named like its own submodule (``finetune`` in
    ``metaloop.adapt.finetune``) is documented at that path."""
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def _directives(page: Path) -> set[str]:
    return set(re.findall(r"^::: (\S+)\s*$", page.read_text(), flags=re.MULTILINE))


def test_the_public_subpackages_are_the_ones_the_reference_expects():
    assert {"adapt", "meta", "tasks", "train", "evaluate"} <= set(_subpackages())


@pytest.mark.parametrize("sub", _subpackages())
def test_every_name_in_a_subpackage_all_has_a_reference_entry(sub):
    page = API / f"{sub}.md"
    assert page.exists(), f"no API page for metaloop.{sub}: add docs/api/{sub}.md and its nav entry"
    have = _directives(page)
    mod = importlib.import_module(f"metaloop.{sub}")
    missing = [n for n in mod.__all__ if not {f"metaloop.{sub}.{n}", _qualified(getattr(mod, n))}
               & have]
    assert not missing, (f"docs/api/{sub}.md lacks a ::: line for "
                         + ", ".join(f"metaloop.{sub}.{n}" for n in missing))


def test_every_top_level_name_has_a_reference_entry():
    page = API / "metaloop.md"
    text, have = page.read_text(), _directives(page)
    subs = set(_subpackages())
    for name in metaloop.__all__:
        if name in subs:
            assert f"]({name}.md)" in text, f"docs/api/metaloop.md does not link {name}.md"
        else:
            assert f"metaloop.{name}" in have, f"docs/api/metaloop.md lacks ::: metaloop.{name}"


def test_every_page_in_the_nav_exists_and_every_api_page_is_in_it():
    nav = re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(),
                     flags=re.MULTILINE)
    assert "index.md" in nav and "api/index.md" in nav
    missing = [p for p in nav if not (REPO / "docs" / p).exists()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    unlisted = [f"api/{p.name}" for p in API.glob("*.md") if f"api/{p.name}" not in nav]
    assert not unlisted, f"API pages missing from mkdocs.yml's nav: {unlisted}"
