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


def _modules() -> list[str]:
    """Public modules directly under metaloop (not packages) that declare ``__all__``: their
    names are documented on docs/api/metaloop.md."""
    out = []
    for m in pkgutil.iter_modules(metaloop.__path__):
        if not m.ispkg and not m.name.startswith("_") and m.name != "__main__":
            if getattr(importlib.import_module(f"metaloop.{m.name}"), "__all__", None):
                out.append(m.name)
    return out


def _listed_members(page: Path) -> dict[str, set[str] | None]:
    """``::: target`` -> the names of its ``members: [...]`` option (which may span lines);
    None where it has no ``members`` option (every member with a docstring is rendered), an
    empty set for ``members: false``."""
    out: dict[str, set[str] | None] = {}
    for m in re.finditer(r"^::: (\S+)\s*\n((?:[ \t]+.*\n)*)", page.read_text(), re.MULTILINE):
        listed = re.search(r"members:\s*\[([^\]]*)\]", m[2])
        out[m[1]] = {n.strip() for n in listed[1].split(",")} if listed else \
            (set() if re.search(r"members:\s*false", m[2]) else None)
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


def test_the_public_modules_with_all_are_the_ones_the_reference_expects():
    assert {"runs", "build", "config", "runlock"} <= set(_modules())


@pytest.mark.parametrize("mod_name", _modules())
def test_every_name_in_a_module_all_has_a_reference_entry(mod_name):
    """A name is covered by its own ``:::`` line (here or on a subpackage's page, also under
    the path where it is defined), by the ``members: [...]`` list of its module's line, or,
    for a function or class with a docstring, by a module line without a ``members`` option.
    Such a line renders only the names with docstrings: not ``config.SCHEMA`` and the other
    constants, which have none."""
    page = API / "metaloop.md"
    listed = _listed_members(page)
    have = set().union(*(_directives(p) for p in API.glob("*.md")))
    objs = {}
    for target in have:
        try:
            parent, _, leaf = target.rpartition(".")
            objs[id(getattr(importlib.import_module(parent), leaf))] = target
        except (ImportError, AttributeError, ValueError):
            pass
    mod = importlib.import_module(f"metaloop.{mod_name}")
    own = f"metaloop.{mod_name}"
    members = listed.get(own, set())

    def documented(obj) -> bool:
        return (inspect.isfunction(obj) or inspect.isclass(obj)) and bool(obj.__doc__)
    missing = [n for n in mod.__all__
               if f"metaloop.{mod_name}.{n}" not in have
               and _qualified(getattr(mod, n)) not in have
               and not (n in members if members is not None else
                        own in listed and documented(getattr(mod, n)))
               and not (id(getattr(mod, n)) in objs and not isinstance(
                   getattr(mod, n), (str, int, float, tuple, dict, frozenset)))]
    assert not missing, ("docs/api/metaloop.md renders none of "
                         + ", ".join(f"metaloop.{mod_name}.{n}" for n in missing)
                         + f": add a ::: line or list them in metaloop.{mod_name}'s members")


def test_the_design_page_calls_each_learner_with_arguments_it_takes():
    """docs/design.md shows each meta-learner's own call: every keyword it writes is one of
    that learner's parameters (Reptile has no ``first_order``; the convex-head learners have
    no ``inner_lr``)."""
    text = (REPO / "docs" / "design.md").read_text()
    calls = re.findall(r"ml\.meta\.(\w+)\(model, ([^)]*)\)", text)
    shown = {name for name, _ in calls}
    assert {"MAML", "ANIL", "Reptile", "R2D2", "MetaOptNet", "ProtoNet"} <= shown, shown
    for name, args in calls:
        params = inspect.signature(getattr(metaloop.meta, name)).parameters
        keywords = re.findall(r"(\w+)=", args)
        unknown = [k for k in keywords if k not in params]
        assert not unknown, f"docs/design.md calls ml.meta.{name} with {unknown}"
    assert "likewise" not in text and "(not Reptile)" not in text


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


def test_the_continual_results_describe_the_lora_strategy_the_command_runs():
    """docs/results.md's continual section names the body and where ``lora`` puts its
    adapters; ``metaloop forgetting``'s defaults and ``with_lora`` decide both."""
    pytest.importorskip("peft")
    import torch

    from metaloop.cli.main import build_parser
    from metaloop.continual import Experience, init_params
    from metaloop.continual.sequence import with_lora
    from metaloop.models import MLP
    from metaloop.recipes.forgetting import STRATEGY_DEFAULTS

    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    body = re.search(r"An MLP 784-([\d-]+) body", text)
    lora = re.search(r"`lora` is a rank-(\d+) adapter on each of the body's (\w+) linear "
                     r"layers", text)
    assert body and lora, "docs/results.md no longer describes the continual body and lora"
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    hidden = next(a for a in sub["forgetting"]._actions if a.dest == "hidden").default
    assert body[1] == "-".join(map(str, hidden))
    assert int(lora[1]) == STRATEGY_DEFAULTS["lora_rank"]
    model = MLP(784, tuple(hidden), 1)
    x, y = torch.zeros(4, 784), torch.tensor([0, 1, 0, 1])
    exps = [Experience(n, n, 2, (0, 1), (x, y), (x, y), (x, y)) for n in ("A", "B")]
    _, start = with_lora(model, init_params(model, exps, torch.Generator().manual_seed(0)),
                         int(lora[1]), torch.Generator().manual_seed(0))
    adapted = {k.split(".lora_A")[0] for k in start if ".lora_A." in k}
    words = {"one": 1, "two": 2, "three": 3, "four": 4}
    assert len(adapted) == words[lora[2]] == len(hidden), adapted


def test_the_design_page_tree_names_every_package_and_every_recipe_and_learner():
    """docs/design.md's architecture tree lists each subpackage and public module of
    ``src/metaloop``, and its ``recipes/`` and ``meta/`` entries name each of their modules."""
    text = (REPO / "docs" / "design.md").read_text()
    tree = re.search(r"```\nsrc/metaloop/\n(.*?)```", text, re.DOTALL)
    assert tree, "docs/design.md has no src/metaloop/ tree"
    entries = {m[1]: m[2] for m in re.finditer(r"^  (\S+)(.*(?:\n {4,}.*)*)", tree[1],
                                                re.MULTILINE)}
    src = REPO / "src" / "metaloop"
    top = [f"{p.name}/" for p in src.iterdir() if (p / "__init__.py").exists()]
    top += [p.name for p in src.glob("*.py") if not p.name.startswith("_")] + ["__init__.py"]
    missing = [n for n in top if n not in entries]
    for sub in ("recipes", "meta"):
        names = [p.stem for p in (src / sub).glob("*.py") if not p.name.startswith("_")]
        missing += [f"{sub}/{n}" for n in names
                    if not re.search(rf"\b{n}\b", entries.get(f"{sub}/", ""))]
    assert not missing, f"docs/design.md's architecture tree does not name {missing}"


def test_the_omniglot_guide_names_every_key_that_keeps_the_loop_on_a_gpu():
    """On CUDA ``batching = "auto"`` means vmap except where a method key needs the per-task
    loop; docs/omniglot.md names those keys, and ``build.batching_on`` decides."""
    from metaloop import config
    from metaloop.build import batching_on

    text = " ".join((REPO / "docs" / "omniglot.md").read_text().split())
    unless = re.search(r'`batching = "auto"` means `vmap` \(unless ([^)]*)\)', text)
    assert unless, "docs/omniglot.md no longer says when auto means vmap on a GPU"
    named = set(re.findall(r"`(\w+) = true`", unless[1]))
    base = config.validate({"family": {"name": "omniglot"}, "model": {"name": "conv4"}})
    assert batching_on(base["method"], "cuda") == "vmap"
    loop = {k for k in config.MAML_ONLY if config.SCHEMA["method"][k][0] is bool
            and batching_on({**base["method"], k: True}, "cuda") != "vmap"}
    assert named == loop, f"docs/omniglot.md names {sorted(named)}; the loop needs {sorted(loop)}"


def _quoted_pieces(quote: str) -> list[str]:
    """A quoted message's parts: what its ``(...)`` and ``...`` leave out is not quoted."""
    return [p for p in re.split(r"\s*\(\.\.\.\)|\.\.\.", quote) if p]


def _quotes_agree(quote: str, message: str) -> bool:
    """``quote`` is ``message`` as far as it quotes it: its parts in order, from the start,
    and to the end unless the quote ends in what it leaves out."""
    pieces, at = _quoted_pieces(quote), 0
    if not message.startswith(pieces[0]):
        return False
    if not quote.endswith("...)") and not quote.endswith("...") and \
            not message.endswith(pieces[-1]):
        return False
    for piece in pieces:
        found = message.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def test_the_reliability_page_quotes_the_tensor_file_and_out_errors_as_raised(tmp_path,
                                                                             monkeypatch):
    import numpy as np
    import torch

    from metaloop import runlock
    from metaloop.tasks.episodes import read_tensor_file

    monkeypatch.chdir(tmp_path)
    np.savez("d.npz", x=np.zeros((4, 1, 8, 8), np.uint16), y=np.arange(4) % 2)
    np.savez("f.npz", x=np.linspace(0, 255, 4 * 64, dtype=np.float32).reshape(4, 1, 8, 8),
             y=np.arange(4) % 2)
    Path("f").write_text("mine\n")

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3)
            self.out.weight = self.inp.weight

        def forward(self, x):
            return self.out(self.inp(x))

    raisers = {
        "tensor file d.npz: x must be uint8": lambda: read_tensor_file("d.npz"),
        "tensor file f.npz: float pixels": lambda: read_tensor_file("f.npz"),
        "cannot create output directory f/run:": lambda: runlock.check_links("f/run"),
        "cannot create output directory f:": lambda: runlock.check_links("f"),
        "the selector chooses": lambda: metaloop.meta.MAML(
            Tied(), adapt=lambda n: n.startswith("out")),
    }
    quotes = [a or b for a, b in re.findall(r"``(.+?)``|`([^`]+)`",
                                            (REPO / "docs" / "reliability.md").read_text())]
    for start, call in raisers.items():
        shown = [q for q in quotes if q.startswith(start)]
        assert len(shown) == 1, (start, shown)
        with pytest.raises(ValueError) as got:
            call()
        assert _quotes_agree(shown[0], str(got.value)), (shown[0], str(got.value))


def test_the_vae_guide_names_the_tensor_dtypes_every_command_refuses(tmp_path):
    import numpy as np
    import torch

    from metaloop.generative.data import load_user
    from metaloop.tasks.episodes import read_tensor_file

    text = " ".join((REPO / "docs" / "generative.md").read_text().split())
    said = re.search(r"a tensor file `\.npz` or `\.pt` with `x` \((.*?)\) and `y`", text)
    assert said, "docs/generative.md no longer describes the tensor file's x"
    assert "uint8 pixels 0..255 or floats in [0, 1], or bool read as 0/1" in said.group(1)
    refused = re.search(r"([\w, ]+) arrays and 0\.\.255 floats are refused", said.group(1))
    assert refused, said.group(1)
    names = [n.strip() for n in re.split(r",| and ", refused.group(1)) if n.strip()]
    assert names == ["uint16", "int64"]
    for name in names:
        np.savez(tmp_path / f"{name}.npz", x=np.zeros((4, 1, 8, 8), name), y=np.arange(4) % 2)
        with pytest.raises(ValueError, match=r"x must be uint8 images \(0\.\.255\) or floating"):
            read_tensor_file(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "f.npz", x=np.full((4, 1, 8, 8), 255.0), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match=r"float pixels x must lie in \[0, 1\], got range"):
        read_tensor_file(tmp_path / "f.npz")
    np.savez(tmp_path / "b.npz", x=np.ones((4, 1, 8, 8), bool), y=np.arange(4) % 2)
    assert torch.equal(read_tensor_file(tmp_path / "b.npz")[0], torch.ones(4, 1, 8, 8))
    assert "standardised floats, with negative values, by the vae alone" in said.group(1)
    np.savez(tmp_path / "z.npz", x=np.full((4, 1, 8, 8), -0.5), y=np.arange(4) % 2)
    assert read_tensor_file(tmp_path / "z.npz")[0].min() == -0.5
    with pytest.raises(ValueError, match=r"float pixels x must lie in \[0, 1\] for the vae"):
        load_user(tmp_path / "z.npz", "train")
