"""docs/migration.md: every Python block runs as written and gives what the page says; every
``ml.`` / ``metaloop.`` name on the page exists, and every keyword it gives ``MAML`` is one of
``MAML``'s parameters. (tests/test_docs_snippets.py runs chosen blocks of other pages only.)"""

import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def _block(marker: str) -> str:
    found = [b for b in _blocks() if marker in b]
    assert len(found) == 1, f"{len(found)} python blocks of docs/migration.md contain {marker!r}"
    return found[0]


def _run(src: str, name: str) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns = {"__name__": "doc"}
        exec(compile(src, f"docs/migration.md {name}", "exec"), ns)
        return ns
    finally:
        torch.set_num_threads(threads)


MARKERS = {"learn2learn": "learner.meta_loss(batch)", "higher": "ml.adapt.sgd_path(",
           "torchopt": "ml.adapt.sgd_path_func(", "own inner loop": "maml_meta_gradient("}


def test_every_python_block_is_one_the_tests_below_run():
    assert len(_blocks()) == len(MARKERS)
    for marker in MARKERS.values():
        _block(marker)


def _grads(model) -> dict:
    return {n: p.grad for n, p in model.named_parameters()}


def _close(a: dict, b: dict, tol: float = 1e-5) -> float:
    assert set(a) == set(b)
    err = max((a[k] - b[k]).abs().max().item() for k in a)
    return err / max(v.abs().max().item() for v in b.values())


def test_the_learn2learn_example_trains_and_adapts(capsys):
    ns = _run(_block(MARKERS["learn2learn"]), "example 1")
    assert set(ns["params"]) == {n for n, _ in ns["model"].named_parameters()}
    assert ns["pred"].shape == (6, 3)
    assert torch.isfinite(ns["loss"])


def test_the_higher_example_gives_the_per_layer_step_size_meta_gradient():
    """The model's .grad after the example equals a plain torch.autograd loop with one
    step size per layer (higher's SGD param groups)."""
    ns = _run(_block(MARKERS["higher"]), "example 2")
    model, sx, sy, qx, qy = (ns[k] for k in ("model", "sx", "sy", "qx", "qy"))
    p0 = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    rate = {"0.weight": 0.3, "0.bias": 0.3, "2.weight": 0.05, "2.bias": 0.05}
    p = dict(p0)
    for _ in range(2):
        loss = F.cross_entropy(torch.func.functional_call(model, p, (sx,)), sy)
        g = torch.autograd.grad(loss, list(p.values()), create_graph=True)
        p = {n: t - rate[n] * gn for (n, t), gn in zip(p.items(), g)}
    loss = F.cross_entropy(torch.func.functional_call(model, p, (qx,)), qy)
    ref = dict(zip(p0, torch.autograd.grad(loss, list(p0.values()))))
    assert _close(_grads(model), ref) < 1e-5


def test_the_torchopt_example_matches_the_learner(capsys):
    ns = _run(_block(MARKERS["torchopt"]), "example 3")
    assert float(capsys.readouterr().out.strip()) < 1e-5
    assert _close(_grads(ns["model"]), ns["grads"]) < 1e-5


def test_the_own_inner_loop_example_meta_learns_per_element_step_sizes():
    """With every step size at 0.3, the network's part of the gradient is MAML's with
    inner_lr=0.3 and two steps; each step size gets a gradient of its tensor's shape."""
    src = _block(MARKERS["own inner loop"])
    assert src.rstrip().endswith("opt.step()")
    ns = _run(src.rstrip()[:-len("opt.step()")], "own inner loop")
    net, grads = ns["net"], ns["grads"]
    assert set(grads) == set(net) | {f"lr.{n}" for n in net}
    assert all(grads[f"lr.{n}"].shape == t.shape for n, t in net.items())
    assert all(grads[f"lr.{n}"].abs().sum() > 0 for n in net)
    maml = ml.meta.MAML(ns["model"], inner_lr=0.3, inner_steps=2, loss="ce", batching="loop")
    assert _close({n: grads[n] for n in net}, maml.meta_gradient(ns["batch"])) < 1e-5
    assert len(ns["per_task"]) == ns["batch"].num_tasks


def _resolve(dotted: str):
    parts = dotted.split(".")
    obj = ml if parts[0] == "ml" else __import__("metaloop")
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = __import__(".".join(["metaloop", *parts[1:i + 1]]), fromlist=["_"])
    return obj


def test_every_name_on_the_page_exists():
    names = set(re.findall(r"\b(?:ml|metaloop)(?:\.\w+)+", PAGE.read_text()))
    assert "ml.meta.MAML" in names and "metaloop.meta.maml.maml_meta_gradient" in names
    for name in sorted(names):
        _resolve(name)              # AttributeError / ImportError names the missing one


@pytest.mark.parametrize("keyword", ["inner_lr", "inner_steps", "first_order", "loss",
                                     "learn_lr", "batching", "adapt", "head",
                                     "recompute_inner_loop"])
def test_the_maml_keywords_the_page_names_exist(keyword):
    assert f"{keyword}=" in PAGE.read_text()
    assert keyword in inspect.signature(ml.meta.MAML).parameters
