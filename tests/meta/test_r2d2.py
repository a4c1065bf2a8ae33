"""R2D2: meta-gradient against an independent per-task reference (primal normal equations by
torch.linalg.solve, the network spelled out with torch.nn.functional) and finite differences;
both gradient paths into the backbone; batching, determinism, shapes, errors, evaluate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta.r2d2 import R2D2
from metaloop.models import MLP, Conv4, ResNet12

sys.path.insert(0, str(Path(__file__).parent))
import _reference as shared  # noqa: E402

DT = torch.float64
WAYS, SHOTS, QUERIES = 3, 2, 3          # S = 6 support and Q = 9 query examples per task


def ridge_ref(fs, y_onehot, lam, intercept):
    """Primal normal equations with an unpenalised ones column, by torch.linalg.solve."""
    n, d = fs.shape
    if not intercept:
        return torch.linalg.solve(fs.T @ fs + lam * torch.eye(d, dtype=DT), fs.T @ y_onehot), 0
    A = torch.cat([fs, torch.ones(n, 1, dtype=DT)], 1)              # [S, D+1]
    pen = torch.diag(torch.cat([lam * torch.ones(d, dtype=DT), torch.zeros(1, dtype=DT)]))
    sol = torch.linalg.solve(A.T @ A + pen, A.T @ y_onehot)          # [D+1, C]
    return sol[:d], sol[d]


def reference_loss(p, batch, intercept=True, detach=None, prefix="backbone.",
                   transductive=True, lam=None):
    """Mean over tasks of the query cross-entropy, one task at a time; not ``transductive``:
    the queries normalised with the support set's BatchNorm statistics; ``lam``: a fixed
    ridge strength (default the learned ``exp(log_lam)``)."""
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        if transductive:
            fs, fq = shared.task_features_ref(p, sx, qx, prefix, detach)
        else:
            fs, fq = shared.support_normalised_features_ref(p, sx, qx, prefix)
        lam_i = p["log_lam"].exp() if lam is None else lam
        W, b = ridge_ref(fs, F.one_hot(sy, WAYS).to(DT), lam_i, intercept)
        losses.append(F.cross_entropy(p["log_scale"].exp() * (fq @ W + b), qy))
    return torch.stack(losses).mean()


def make_batch(B=3, seed=2, size=16):
    return shared.image_task_batch(B, seed, size, WAYS, SHOTS, QUERIES)


def make_learner(hidden=8, seed=1, resnet=False, **kw):
    torch.manual_seed(seed)
    net = ResNet12(1, 2, WAYS, image_size=16) if resnet else Conv4(1, hidden, WAYS, image_size=16)
    return R2D2(net.double(), lam=0.7, scale=3.0, **kw)


# hidden 8: D = 8 > S = 6 (Woodbury side of ridge_head); hidden 4: D = 4 < S (primal side)
@pytest.mark.parametrize("hidden", [8, 4])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("intercept", [True, False])
def test_meta_gradient_matches_per_task_normal_equations(hidden, batching, intercept):
    learner = make_learner(hidden, batching=batching, intercept=intercept)
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, intercept=intercept)
    got = learner.meta_gradient(batch)
    assert list(got) == [n for n, _ in learner.model.named_parameters()]
    shared.assert_close_rel(got, ref, rtol=1e-8)
    loss, metrics = learner.meta_loss(batch)
    ref_loss = reference_loss(dict(learner.model.named_parameters()), batch, intercept)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(ref_loss.detach()))
    # every meta-parameter the features use gets a gradient, including scale and lam
    for n in ("log_scale", "log_lam", "backbone.body.0.conv.weight", "backbone.body.3.bn.bias"):
        assert got[n].abs().max() > 0, n
    # Conv4's linear head is unused by the features: zero, not missing
    assert torch.equal(got["backbone.head.weight"], torch.zeros_like(got["backbone.head.weight"]))


@pytest.mark.parametrize("hidden", [8, 4])
@pytest.mark.parametrize("intercept,learn_lam", [(True, True), (False, False)])
def test_non_transductive_meta_gradient_matches_support_normalised_reference(hidden, intercept,
                                                                          learn_lam):
    """``transductive=False``: the queries go through BatchNorm with the support set's
    statistics, which stay in the graph; with and without the intercept and a learned lam."""
    learner = make_learner(hidden, transductive=False, intercept=intercept, learn_lam=learn_lam)
    assert learner.batching == "loop" and learner.evaluation == "non-transductive"
    batch = make_batch()
    lam = None if learn_lam else 0.7
    ref = shared.reference_grad(reference_loss, learner.model, batch, intercept=intercept,
                                transductive=False, lam=lam)
    got = learner.meta_gradient(batch)
    shared.assert_close_rel(got, ref, rtol=1e-8)
    assert ("log_lam" in got) == learn_lam and got["backbone.body.0.conv.weight"].abs().max() > 0
    loss = reference_loss(dict(learner.model.named_parameters()), batch, intercept,
                          transductive=False, lam=lam)
    torch.testing.assert_close(learner.meta_loss(batch)[0], loss, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("resnet", [False, True], ids=["conv4", "resnet12"])
def test_meta_gradient_matches_finite_differences(resnet):
    learner = make_learner(resnet=resnet)           # ResNet-12 width 2: D = 20 > S = 6
    eps = 1e-7 if resnet else 1e-6       # ResNet-12 of width 2 is sharply curved here
    fd, analytic = shared.directional_derivatives(learner, make_batch(), eps)
    assert fd == pytest.approx(analytic, rel=1e-6)


@pytest.mark.parametrize("path", ["support", "query"])
def test_gradient_reaches_backbone_through_each_path(path):
    """Cutting one path leaves exactly the other path's reference gradient, non-zero."""
    batch = make_batch()
    full = make_learner().meta_gradient(batch)
    cut = {"support": WAYS * QUERIES, "query": WAYS * SHOTS}[path]   # detach the OTHER set
    torch.manual_seed(1)
    gated = R2D2(shared.Gate(Conv4(1, 8, WAYS, image_size=16).double(), cut), lam=0.7, scale=3.0)
    got = gated.meta_gradient(batch)
    other = "query" if path == "support" else "support"
    ref = shared.reference_grad(reference_loss, gated.model, batch, detach=other,
                                prefix="backbone.net.")
    shared.assert_close_rel(got, ref, rtol=1e-8)
    for i in range(4):
        assert got[f"backbone.net.body.{i}.conv.weight"].abs().max() > 1e-6, (path, i)
    # the two paths add up to the full gradient
    other_cut = {"support": WAYS * SHOTS, "query": WAYS * QUERIES}[path]
    torch.manual_seed(1)
    rest = R2D2(shared.Gate(Conv4(1, 8, WAYS, image_size=16).double(), other_cut), lam=0.7,
                scale=3.0).meta_gradient(batch)
    for n, g in full.items():
        m = "backbone.net." + n[len("backbone."):] if n.startswith("backbone.") else n
        if n == "log_scale" or n == "log_lam":   # reached through both paths' shared logits
            continue
        torch.testing.assert_close(got[m] + rest[m], g, rtol=1e-8, atol=1e-12)


def test_batched_tasks_equal_single_task_calls():
    """BatchNorm statistics are per task and per set, in both batching modes."""
    batch = make_batch(B=4)
    for batching in ("loop", "vmap"):
        learner = make_learner(batching=batching)
        loss, _ = learner.meta_loss(batch)
        singles = [learner.meta_loss(batch.slice(i, i + 1))[0] for i in range(4)]
        torch.testing.assert_close(loss, torch.stack(singles).mean(), rtol=1e-12, atol=1e-12)
        for i in range(4):
            sx, sy, qx, qy = batch.task(i)
            out = learner.predict(learner.adapt(sx, sy), qx)
            torch.testing.assert_close(F.cross_entropy(out, qy), singles[i].detach(),
                                       rtol=1e-12, atol=1e-12)
    a = make_learner(batching="loop").meta_gradient(batch)
    b = make_learner(batching="vmap").meta_gradient(batch)
    shared.assert_close_rel(a, b, rtol=1e-8)


def test_deterministic():
    a = make_learner().meta_gradient(make_batch())
    b = make_learner().meta_gradient(make_batch())
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_shapes_and_purity():
    learner = make_learner()
    batch = make_batch()
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    sx, sy, qx, _ = batch.task(0)
    params = learner.adapt(sx, sy)
    assert params["W"].shape == (8, WAYS) and params["b"].shape == (WAYS,)
    assert not params["W"].requires_grad
    assert list(learner.adapt_path(sx, sy, 5)) and len(list(learner.adapt_path(sx, sy, 5))) == 1
    assert learner.predict(params, qx).shape == (WAYS * QUERIES, WAYS)
    learner.meta_gradient(batch)
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())
    assert learner.meta_trains and learner.inner.loss_fn is not None
    assert {"log_scale", "log_lam"} <= {n for n, _ in learner.model.named_parameters()}
    assert float(learner.model.lam) == pytest.approx(0.7)
    assert float(learner.model.scale) == pytest.approx(3.0)


def test_mlp_backbone_and_fixed_lam():
    torch.manual_seed(0)
    learner = R2D2(MLP(4, (6,), 2).double(), lam=0.5, learn_lam=False)
    batch = shared.vector_task_batch()
    assert learner.batching == "vmap"
    grads = learner.meta_gradient(batch)
    assert "log_lam" not in grads and grads["backbone.body.fc0.weight"].abs().max() > 0


@pytest.mark.parametrize("kw,message", [
    ({"lam": 0.0}, "lam must be a finite number > 0"),
    ({"lam": -1.0}, "lam must be a finite number > 0"),
    ({"lam": float("nan")}, "lam must be a finite number > 0"),
    ({"scale": 0.0}, "scale must be a finite number > 0"),
    ({"batching": "threads"}, "batching must be"),
    ({"ways": 1}, "ways must be None or an int >= 2"),
    ({"intercept": "yes"}, "intercept must be a bool"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        R2D2(Conv4(1, 4, WAYS, image_size=16), **kw)


def test_bad_labels():
    learner = make_learner(ways=WAYS)
    sx, sy, qx, qy = make_batch().task(0)
    with pytest.raises(ValueError, match=r"support_y labels must lie in \[0, ways=3\), found 3"):
        learner.adapt(sx, sy + 1)
    with pytest.raises(ValueError, match=r"found -1"):
        learner.adapt(sx, sy - 1)
    with pytest.raises(ValueError, match="int64 class labels"):
        learner.adapt(sx, sy.float())
    wide = ml.TaskBatch(sx[None], sy[None] + 1, qx[None], qy[None] + 1)   # labels 1..3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, ways=3\)"):
        learner.meta_loss(wide)
    regression = ml.tasks.Sinusoid(5, 5).sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="classification TaskBatch"):
        learner.meta_loss(regression)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_evaluate_roundtrip(batching):
    learner = make_learner(batching=batching)
    fam = shared.RandomImages(make_batch)
    r = ml.evaluate(learner, fam, tasks=5, steps=(0, 3), seed=11)
    manual = shared.mean_query_loss(learner, fam, tasks=5, seed=11)
    assert r["loss"]["mean"][0] == pytest.approx(manual, rel=1e-10)
    assert r["loss"]["mean"][1] == r["loss"]["mean"][0]      # a solved head: no later steps
    assert r == ml.evaluate(make_learner(batching=batching), fam, tasks=5, steps=(0, 3),
                            seed=11)
    other = ml.evaluate(make_learner(batching={"loop": "vmap", "vmap": "loop"}[batching]), fam,
                        tasks=5, steps=(0, 3), seed=11)
    assert other["loss"]["mean"][0] == pytest.approx(r["loss"]["mean"][0], rel=1e-10)


def test_train_reduces_loss_and_updates_scale_and_lam():
    learner = make_learner()
    before = learner.model.log_scale.detach().clone(), learner.model.log_lam.detach().clone()
    out = ml.train(learner, shared.RandomImages(make_batch), iterations=3, meta_batch=2, lr=1e-2,
                   progress=False)
    assert out["iteration"] == 3 and "accuracy" in out["last"]
    assert learner.model.log_scale.detach() != before[0]
    assert learner.model.log_lam.detach() != before[1]


def test_a_class_without_support_examples_is_named_not_a_phantom_softmax_column():
    learner = R2D2(MLP(in_dim=4, hidden=(8,), out_dim=8))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.tensor([2, 3, 4, 2, 3, 4])  # no 0 or 1
    with pytest.raises(ValueError, match=r"R2D2: every class needs at least one support "
                                         r"example, .*task 0 class 0, task 0 class 1\)"):
        learner.adapt(x, y)
    batch = ml.TaskBatch(x[None], y[None], x[None], y[None])
    with pytest.raises(ValueError, match="every class needs at least one support example"):
        learner.meta_loss(batch)
