"""The public API of record (the design document's "public API" section), pinned.

Every documented name exists at its documented path, with the documented arguments: their
names, order, defaults and keyword-only-ness, so a rename, a reordered argument or a changed
default fails here. Arguments added since must come after the documented ones and have
defaults, so every documented call keeps working. The documented return types and shapes
are checked on small data made here.

The other way round: every name in ``metaloop.__all__`` and in each subpackage's
``__all__`` is importable and has a docstring, and every ``metaloop.*`` name that the guides,
the README or a docstring shows resolves and has an entry in the API reference
(``docs/api/*.md``).
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_image_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("adapt", "continual", "data", "evaluate", "func", "generative", "meta",
               "models", "recipes", "tasks", "train")

P = inspect.Parameter
POS, KW = P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY
REQ = P.empty          # a required argument
ANY = object()         # a default the contract does not fix

# ml.<name> -> [(argument, default, kind), ...] in the documented order.
SIGNATURES = {
    "TaskBatch": [("support_x", REQ, POS), ("support_y", REQ, POS), ("query_x", REQ, POS),
                  ("query_y", REQ, POS)],
    "tasks.Sinusoid": [("shots", 10, POS), ("queries", 10, POS)],
    "tasks.Omniglot": [("root", ANY, POS), ("split", "train", POS), ("ways", 5, POS),
                       ("shots", 1, POS), ("queries", 15, POS)],
    "tasks.Episodes": [("x", REQ, POS), ("y", REQ, POS), ("ways", 5, POS), ("shots", 1, POS),
                       ("queries", 15, POS), ("class_names", None, POS)],
    "tasks.Episodes.from_folder": [
        ("root", REQ, POS), ("ways", 5, POS), ("shots", 1, POS), ("queries", 15, POS),
        ("image_size", 28, KW), ("channels", 1, KW), ("class_depth", 1, KW)],
    "tasks.Episodes.from_dataset": [
        ("dataset", REQ, POS), ("ways", 5, POS), ("shots", 1, POS), ("queries", 15, POS)],
    "tasks.split_classes": [
        ("class_names", REQ, POS), ("fractions", (0.7, 0.1, 0.2), POS), ("seed", 0, POS)],
    "models.MLP": [("in_dim", 1, POS), ("hidden", (40, 40), POS), ("out_dim", 1, POS)],
    "models.Conv4": [("in_channels", 1, POS), ("hidden", 64, POS), ("out_dim", 5, POS)],
    "meta.MAML": [("model", REQ, POS), ("inner_lr", 0.01, POS), ("inner_steps", 1, POS),
                  ("first_order", False, POS), ("loss", "mse", POS)],
    "meta.ANIL": [("model", REQ, POS)],
    "meta.Reptile": [("model", REQ, POS)],
    "meta.R2D2": [("model", REQ, POS)],
    "meta.MetaOptNet": [("model", REQ, POS)],
    "meta.ProtoNet": [("model", REQ, POS)],
    "adapt.ridge_head": [("features", REQ, POS), ("targets", REQ, POS), ("lam", 1.0, POS)],
    "adapt.newton_head": [("features", REQ, POS), ("labels", REQ, POS),
                          ("n_classes", REQ, POS), ("lam", 1.0, POS), ("steps", 5, POS)],
    "generative.invert_classifier": [("classifier", REQ, POS), ("target", REQ, POS)],
}

# The TaskFamily protocol's sampler, on every built-in family.
FAMILIES = ("Sinusoid", "Omniglot", "FashionMNIST", "WordNet", "Episodes", "TextTable",
            "DeviceTasks", "Shifted")

# The Learner methods the design document names, on every meta-learner.
LEARNER_METHODS = {"meta_loss": ["batch"], "meta_gradient": ["batch"],
                   "adapt": ["support_x", "support_y"], "predict": ["params", "x"]}


def _params(obj) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]


def check_signature(obj, expected, what: str) -> None:
    """``obj``'s arguments keep the documented ones (name, position, default, kind); any
    other argument has a default (or is ``*args`` / ``**kwargs``)."""
    params = _params(obj)
    names = [p.name for p in params]
    for i, (name, default, kind) in enumerate(expected):
        assert name in names, f"{what}: the documented argument {name!r} is gone ({names})"
        p = params[names.index(name)]
        if kind is POS:
            assert names.index(name) == i, (f"{what}: {name!r} moved from position {i} to "
                                            f"{names.index(name)} ({names})")
        assert p.kind is kind, f"{what}: {name!r} is {p.kind.description}, not {kind.description}"
        if default is not ANY:
            assert p.default == default and type(p.default) is type(default), (
                f"{what}: {name!r} defaults to {p.default!r}, documented {default!r}")
    documented = {e[0] for e in expected}
    for p in params:
        if p.name not in documented and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            assert p.default is not P.empty, (f"{what}: the new argument {p.name!r} has no "
                                              f"default, so documented calls break")


def test_the_signature_checker_catches_a_rename_a_move_and_a_changed_default():
    def f(a, b=1, *, c=2):
        """f."""

    check_signature(f, [("a", REQ, POS), ("b", 1, POS), ("c", 2, KW)], "f")
    for bad in ([("x", REQ, POS)], [("b", 1, POS)], [("a", REQ, POS), ("b", 2, POS)],
                [("a", REQ, POS), ("b", True, POS)], [("a", REQ, POS), ("c", 2, POS)]):
        with pytest.raises(AssertionError):
            check_signature(f, bad, "f")

    def g(a, new, b=1):
        """g."""

    with pytest.raises(AssertionError, match="no default"):
        check_signature(g, [("a", REQ, POS)], "g")


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_documented_signature(name):
    obj, where = ml, "ml"
    for part in name.split("."):
        where += "." + part
        assert hasattr(obj, part), f"{where} is gone (documented: ml.{name})"
        obj = getattr(obj, part)
    check_signature(obj, SIGNATURES[name], f"ml.{name}")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_samples_n_tasks_with_an_optional_generator(family):
    cls = getattr(ml.tasks, family)
    check_signature(cls.sample, [("n", REQ, POS), ("generator", None, POS)],
                    f"ml.tasks.{family}.sample")
    check_signature(cls.with_shots, [("shots", REQ, POS), ("queries", None, POS)],
                    f"ml.tasks.{family}.with_shots")


def test_top_level_re_exports_are_the_subpackages_names():
    assert ml.TaskBatch is ml.tasks.TaskBatch
    assert ml.mean_ci is ml.evaluate.mean_ci
    assert ml.NonFiniteLossError is ml.train.NonFiniteLossError
    assert ml.load_run is ml.runs.load_run and ml.Run is ml.runs.Run
    # ml.train(...) and ml.evaluate(...) call the functions and show their signatures
    assert inspect.signature(ml.train) == inspect.signature(ml.train.train)
    assert inspect.signature(ml.evaluate) == inspect.signature(ml.evaluate.evaluate)


def test_the_text_encoder_wrapper_is_a_model_and_importing_it_needs_no_text_extra():
    from metaloop.models.text import TextEncoder

    assert ml.models.TextEncoder is TextEncoder
    assert "TextEncoder" in ml.models.__all__
    code = ("import sys, metaloop as ml; ml.models.TextEncoder; "
            "assert 'transformers' not in sys.modules and 'peft' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- documented behaviour: types and shapes ----------------------------------------------

def _vectors(classes=6, per_class=8, dim=8):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat_interleave(per_class)                     # [N]
    x = torch.randn(len(y), dim, generator=g) + torch.eye(dim)[y] * 3         # [N, D]
    return x, y


def _one(batch, i):
    return ml.TaskBatch(batch.support_x[i:i + 1], batch.support_y[i:i + 1],
                        batch.query_x[i:i + 1], batch.query_y[i:i + 1])


def test_sinusoid_tasks_are_regression_batches_in_the_documented_ranges():
    fam = ml.tasks.Sinusoid(shots=10, queries=10)
    b = fam.sample(32, generator=torch.Generator().manual_seed(0))
    assert isinstance(b, ml.TaskBatch) and isinstance(fam, ml.tasks.TaskFamily)
    assert b.support_x.shape == b.support_y.shape == (32, 10, 1)              # [B, S, out]
    assert b.query_x.shape == b.query_y.shape == (32, 10, 1)                  # [B, Q, out]
    assert b.support_y.is_floating_point()
    assert b.support_x.abs().max() <= 5 and b.support_y.abs().max() <= 5      # x U[-5, 5], A <= 5


def test_omniglot_tasks_are_28x28_and_every_documented_split_opens(omniglot_root):
    fam = ml.tasks.Omniglot(omniglot_root, split="train", ways=5, shots=1, queries=15)
    b = fam.sample(2, generator=torch.Generator().manual_seed(0))
    assert isinstance(fam, ml.tasks.TaskFamily)
    assert b.support_x.shape == (2, 5, 1, 28, 28) and b.query_x.shape == (2, 75, 1, 28, 28)
    assert b.support_y.dtype == b.query_y.dtype == torch.int64
    assert b.support_y.shape == (2, 5) and b.query_y.shape == (2, 75)
    classes = {s: ml.tasks.Omniglot(omniglot_root, split=s).num_classes
               for s in ("train", "val", "test", "trainval", "background", "evaluation")}
    assert classes["trainval"] == classes["train"] + classes["val"]
    assert classes["background"] + classes["evaluation"] == 1623                # no rotations
    assert classes["trainval"] + classes["test"] == 4 * 1623                    # x 4 rotations


def test_your_own_data_gives_task_families(tmp_path):
    x, y = _vectors()
    fams = {"tensors": ml.tasks.Episodes(x, y, ways=3, shots=2, queries=3,
                                         class_names=[f"c{k}" for k in range(6)]),
            "uint8 images": ml.tasks.Episodes(torch.randint(0, 256, (48, 1, 28, 28),
                                                            dtype=torch.uint8), y,
                                              ways=3, shots=2, queries=3),
            "folder": ml.tasks.Episodes.from_folder(write_image_folder(tmp_path / "imgs"),
                                                    ways=3, shots=2, queries=3, image_size=28,
                                                    channels=1, class_depth=1),
            "dataset": ml.tasks.Episodes.from_dataset([(x[i], int(y[i])) for i in range(48)],
                                                      ways=3, shots=2, queries=3)}
    for what, fam in fams.items():
        assert isinstance(fam, ml.tasks.TaskFamily), what
        b = fam.sample(4, generator=torch.Generator().manual_seed(0))
        assert b.support_x.shape == (4, 6, *fam.input_shape), what                 # [B, S, ...]
        assert b.query_x.shape == (4, 9, *fam.input_shape), what                   # [B, Q, ...]
        assert b.support_y.dtype == b.query_y.dtype == torch.int64, what
        assert b.support_y.shape == (4, 6) and b.query_y.shape == (4, 9), what
    assert fams["tensors"].class_names == [f"c{k}" for k in range(6)]
    assert fams["folder"].class_names == [f"class_{k:02d}" for k in range(6)]

    names = [f"n{k}" for k in range(20)]
    split = ml.tasks.split_classes(names, fractions=(0.7, 0.1, 0.2), seed=0)
    assert [len(s) for s in split] == [14, 2, 4]
    assert sorted(sum(split, [])) == sorted(names)
    assert ml.tasks.split_classes(names, fractions=(0.7, 0.1, 0.2), seed=0) == split


def _learners():
    mlp = ml.models.MLP(in_dim=1, hidden=(8,), out_dim=1)
    clf = ml.models.MLP(in_dim=8, hidden=(16,), out_dim=3)
    return {"MAML": ("regression", ml.meta.MAML(mlp, inner_lr=0.01, inner_steps=1,
                                                first_order=False, loss="mse")),
            "ANIL": ("regression", ml.meta.ANIL(mlp, loss="mse")),
            "Reptile": ("regression", ml.meta.Reptile(mlp, loss="mse")),
            "MAML-ce": ("classification", ml.meta.MAML(clf, inner_lr=0.4, loss="ce")),
            "R2D2": ("classification", ml.meta.R2D2(clf)),
            "MetaOptNet": ("classification", ml.meta.MetaOptNet(clf)),
            "ProtoNet": ("classification", ml.meta.ProtoNet(clf))}


@pytest.mark.parametrize("name", list(_learners()))
def test_learner_contract(name, float64):
    kind, learner = _learners()[name]
    learner.model.double()
    if kind == "regression":
        fam = ml.tasks.Sinusoid(shots=5, queries=5)
    else:
        x, y = _vectors()
        fam = ml.tasks.Episodes(x.double(), y, ways=3, shots=2, queries=3)
    b = fam.sample(2, generator=torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    for method, args in LEARNER_METHODS.items():
        check_signature(getattr(learner, method), [(a, REQ, POS) for a in args],
                        f"{name}.{method}")

    loss, metrics = learner.meta_loss(b)
    assert torch.is_tensor(loss) and loss.dim() == 0 and isinstance(metrics, dict)
    assert "loss" in metrics
    # scalar query loss averaged over tasks
    singles = [learner.meta_loss(_one(b, i))[0] for i in range(2)]
    torch.testing.assert_close(loss, (singles[0] + singles[1]) / 2)

    params = dict(learner.model.named_parameters())
    grads = learner.meta_gradient(b)
    assert isinstance(grads, dict) and grads.keys() == params.keys()
    assert all(grads[k].shape == params[k].shape for k in params)
    # averaged over tasks
    g0, g1 = (learner.meta_gradient(_one(b, i)) for i in range(2))
    for k in params:
        torch.testing.assert_close(grads[k], (g0[k] + g1[k]) / 2)
    if name != "Reptile":            # differentiable wrt the model's parameters
        auto = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for k, a in zip(params, auto):
            torch.testing.assert_close(torch.zeros_like(grads[k]) if a is None else a, grads[k])

    adapted = learner.adapt(b.support_x[0], b.support_y[0])                  # ONE task
    assert isinstance(adapted, dict)
    out = learner.predict(adapted, b.query_x[0])
    assert out.shape == (b.query_x.shape[1], 1 if kind == "regression" else 3)  # [Q, out]


def test_convex_heads_return_one_weight_matrix_per_task():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 10, 8, generator=g)                           # [B, N, D]
    targets = torch.randn(3, 10, 4, generator=g)                            # [B, N, C]
    assert ml.adapt.ridge_head(features, targets, lam=1.0).shape == (3, 8, 4)
    labels = torch.arange(5).repeat(2).expand(3, 10)                        # [B, N]
    W = ml.adapt.newton_head(features, labels, n_classes=5, lam=1.0, steps=5)
    assert W.shape == (3, 8, 5)                                             # [B, D, C]


def test_invert_classifier_makes_images_in_the_unit_interval():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3))
    imgs = ml.generative.invert_classifier(clf, 2, n=2, steps=3, image_shape=(1, 28, 28),
                                           generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 1, 28, 28) and 0 <= imgs.min() and imgs.max() <= 1


# ---- every public name: importable, documented, in the reference ------------------------

def _public():
    out = [("metaloop", n) for n in ml.__all__]
    for sub in SUBPACKAGES:
        mod = importlib.import_module(f"metaloop.{sub}")
        out += [(mod.__name__, n) for n in mod.__all__]
    return out


@pytest.mark.parametrize("module,name", _public())
def test_every_public_name_imports_and_has_a_docstring(module, name):
    ns: dict = {}
    exec(f"from {module} import {name}", ns)                                    # noqa: S102
    obj = ns[name]
    if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
        assert (getattr(obj, "__doc__", None) or "").strip(), f"{module}.{name} has no docstring"


def _reference() -> tuple[set[int], dict[int, object]]:
    """The objects the reference pages document: the ``:::`` targets, the public members of
    a module target (unless ``members: false``, or only those of ``members: [...]``)."""
    targets, members = set(), {}
    for page in (REPO / "docs" / "api").glob("*.md"):
        for m in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", page.read_text(), flags=re.M):
            obj = _resolve(m.group(1))
            targets.add(id(obj))
            if inspect.ismodule(obj) and "members: false" not in m.group(2):
                only = re.search(r"members: \[([^\]]*)\]", m.group(2))
                names = ([n.strip() for n in only.group(1).split(",")] if only else
                         [n for n in vars(obj) if not n.startswith("_")])
                for n in names:
                    members[id(getattr(obj, n))] = obj
    return targets, members


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


FILE_SUFFIXES = {"md", "toml", "py", "json", "jsonl", "yml", "yaml", "npz", "pt", "txt"}


def _cited() -> dict[str, set[str]]:
    """``metaloop.*`` names the guides, the README and the package's docstrings show ->
    where (``ml.x`` is ``metaloop.x``; ``from metaloop.x import a, b`` names x.a, x.b)."""
    texts = {p.relative_to(REPO).as_posix(): p.read_text()
             for p in [*(REPO / "docs").glob("*.md"), REPO / "README.md"]}
    for p in (REPO / "src" / "metaloop").rglob("*.py"):          # code uses ml. for other things
        texts[p.relative_to(REPO).as_posix()] = re.sub(r"\bml\.", "", p.read_text())
    out: dict[str, set[str]] = {}
    for where, text in texts.items():
        for m in re.finditer(r"\b(?:ml|metaloop)((?:\.[A-Za-z_]\w*)+)", text):
            out.setdefault("metaloop" + m.group(1), set()).add(where)
        for m in re.finditer(r"from (metaloop[\w.]*) import \(?([\w, ]+)", text):
            for n in m.group(2).split(","):
                n = n.strip().split(" as ")[0].strip()
                if n:
                    out.setdefault(f"{m.group(1)}.{n}", set()).add(where)
    return {k: v for k, v in out.items() if k.rsplit(".", 1)[-1] not in FILE_SUFFIXES}


def test_every_name_the_docs_show_exists():
    missing = []
    for path, where in sorted(_cited().items()):
        try:
            _resolve(path)
        except (ImportError, AttributeError):
            missing.append(f"{path} (in {', '.join(sorted(where))})")
    assert not missing, "named in the docs but not importable: " + "; ".join(missing)


def test_every_public_name_the_guides_show_has_a_reference_entry():
    targets, members = _reference()
    missing = []
    for path, where in sorted(_cited().items()):
        if any(w.startswith("src/") for w in where) and not any(
                w.startswith(("docs/", "README")) for w in where):
            continue                                         # docstrings: existence only
        if any(part.startswith("_") for part in path.split(".")):
            continue
        obj = _resolve(path)
        if inspect.ismodule(obj) or not (callable(obj) or inspect.isclass(obj)):
            continue
        owner = _resolve(path.rsplit(".", 1)[0])
        if id(obj) in targets or id(obj) in members or (
                inspect.isclass(owner) and (id(owner) in targets or id(owner) in members)):
            continue
        missing.append(f"{path} (in {', '.join(sorted(where))})")
    assert not missing, "shown in the guides but absent from docs/api: " + "; ".join(missing)
