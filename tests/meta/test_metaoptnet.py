"""MetaOptNet: meta-gradient against an independent reference (each task's convex problem
solved by L-BFGS on the primal objective, differentiated by the implicit function theorem with
an autograd Hessian; the network spelled out with torch.nn.functional) and finite differences;
both gradient paths into the backbone; batching, determinism, shapes, errors, evaluate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta.metaoptnet import MetaOptNet
from metaloop.models import MLP, Conv4, ResNet12

sys.path.insert(0, str(Path(__file__).parent))
import _reference as shared  # noqa: E402

DT = torch.float64
WAYS, SHOTS, QUERIES = 3, 2, 3          # S = 6 support and Q = 9 query examples per task
LAM = 0.5


def objective(W, fs, sy, head):
    """sum_i loss(W^T phi_i, y_i) + LAM / 2 ||W||^2, written out directly."""
    z = fs @ W                                                       # [S, C]
    if head == "logistic":
        data = F.cross_entropy(z, sy, reduction="sum")
    else:
        z_true = z.gather(1, sy[:, None])                            # [S, 1]
        margins = torch.relu(1 + z - z_true)                         # [S, C]
        data = (margins.square() * (1 - F.one_hot(sy, WAYS).to(DT))).sum()
    return data + 0.5 * LAM * W.square().sum()


def solve_ref(fs, sy, head):
    """W* by L-BFGS, polished by plain Newton steps with an autograd Hessian (no line
    search, no representer trick), then ``W* - H^{-1} grad``: the same value, with the
    implicit-function-theorem Jacobian dW*/dfs."""
    f = fs.detach()
    W = torch.zeros(fs.shape[1], WAYS, dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([W], lr=1, max_iter=200, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(W, f, sy, head)
        value.backward()
        return value
    opt.step(closure)
    W_star, d = W.detach(), W.numel()
    for _ in range(4):
        H = torch.autograd.functional.hessian(lambda w: objective(w, f, sy, head), W_star)
        g = torch.autograd.functional.jacobian(lambda w: objective(w, f, sy, head), W_star)
        W_star = W_star - torch.linalg.solve(H.reshape(d, d), g.reshape(d)).reshape(W.shape)
    H = torch.autograd.functional.hessian(lambda w: objective(w, f, sy, head), W_star)
    g = torch.autograd.grad(objective(W_star.requires_grad_(), fs, sy, head), W_star,
                            create_graph=True)[0]                    # ~0, depends on fs
    assert g.detach().abs().max() < 1e-10                            # converged
    return W_star.detach() - torch.linalg.solve(H.reshape(d, d), g.reshape(d)).reshape(W.shape)


def reference_loss(p, batch, head, detach=None, prefix="backbone.", transductive=True):
    """Mean over tasks of the query cross-entropy; not ``transductive``: the queries
    normalised with the support set's BatchNorm statistics."""
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        if transductive:
            fs, fq = shared.task_features_ref(p, sx, qx, prefix, detach)
        else:
            fs, fq = shared.support_normalised_features_ref(p, sx, qx, prefix)
        W = solve_ref(fs, sy, head)
        losses.append(F.cross_entropy(p["log_scale"].exp() * (fq @ W), qy))
    return torch.stack(losses).mean()


def make_batch(B=2, seed=2, size=16):
    return shared.image_task_batch(B, seed, size, WAYS, SHOTS, QUERIES)


def make_learner(head="svm", grad="implicit", hidden=8, seed=1, backbone=None, **kw):
    torch.manual_seed(seed)
    net = backbone if backbone is not None else Conv4(1, hidden, WAYS, image_size=16).double()
    return MetaOptNet(net, head=head, lam=LAM, steps=kw.pop("steps", 25), grad=grad,
                      scale=2.0, **kw)


# hidden 8: D = 8 > S = 6 (representer-space Newton); hidden 4: D = 4 < S (primal Newton)
@pytest.mark.parametrize("head", ["logistic", "svm"])
@pytest.mark.parametrize("grad", ["implicit", "unrolled"])
@pytest.mark.parametrize("hidden", [8, 4])
def test_meta_gradient_matches_lbfgs_ift_reference(head, grad, hidden):
    learner = make_learner(head, grad, hidden)
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, head)
    got = learner.meta_gradient(batch)
    assert list(got) == [n for n, _ in learner.model.named_parameters()]
    shared.assert_close_rel(got, ref, rtol=1e-6)
    loss, metrics = learner.meta_loss(batch)
    ref_loss = reference_loss(dict(learner.model.named_parameters()), batch, head).detach()
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-9, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(ref_loss))
    for n in ("log_scale", "backbone.body.0.conv.weight", "backbone.body.3.bn.bias"):
        assert got[n].abs().max() > 0, n
    assert "log_lam" not in got                                      # lam is fixed


@pytest.mark.parametrize("head", ["logistic", "svm"])
def test_vmap_meta_gradient_matches_lbfgs_ift_reference(head):
    """The vmapped backbone (Conv4's BatchNorm on each task's own set) against the per-task
    L-BFGS/IFT reference directly, not only against the loop."""
    learner = make_learner(head, "implicit", batching="vmap")
    assert learner.batching == "vmap"
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, head)
    shared.assert_close_rel(learner.meta_gradient(batch), ref, rtol=1e-6)


@pytest.mark.parametrize("head,grad", [("logistic", "unrolled"), ("svm", "implicit")])
def test_non_transductive_meta_gradient_matches_lbfgs_ift_reference(head, grad):
    """``transductive=False``: the queries normalised with the support set's BatchNorm
    statistics, which stay in the graph."""
    learner = make_learner(head, grad, transductive=False)
    assert learner.batching == "loop" and learner.evaluation == "non-transductive"
    batch = make_batch()
    ref = shared.reference_grad(reference_loss, learner.model, batch, head, transductive=False)
    shared.assert_close_rel(learner.meta_gradient(batch), ref, rtol=1e-6)
    loss = reference_loss(dict(learner.model.named_parameters()), batch, head,
                          transductive=False).detach()
    torch.testing.assert_close(learner.meta_loss(batch)[0].detach(), loss, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("resnet", [False, True], ids=["conv4", "resnet12"])
@pytest.mark.parametrize("head", ["logistic", "svm"])
def test_meta_gradient_matches_finite_differences(head, resnet):
    torch.manual_seed(1)
    net = ResNet12(1, 2, WAYS, image_size=16).double() if resnet else None
    learner = make_learner(head, "unrolled", backbone=net)
    fd, analytic = shared.directional_derivatives(learner, make_batch(), eps=1e-6)
    assert fd == pytest.approx(analytic, rel=1e-6)


@pytest.mark.parametrize("path", ["support", "query"])
def test_gradient_reaches_backbone_through_each_path(path):
    batch = make_batch()
    cut = {"support": WAYS * QUERIES, "query": WAYS * SHOTS}[path]   # detach the OTHER set
    torch.manual_seed(1)
    gated = make_learner(backbone=shared.Gate(Conv4(1, 8, WAYS, image_size=16).double(), cut))
    got = gated.meta_gradient(batch)
    other = "query" if path == "support" else "support"
    ref = shared.reference_grad(reference_loss, gated.model, batch, "svm", detach=other,
                                prefix="backbone.net.")
    shared.assert_close_rel(got, ref, rtol=1e-6)
    for i in range(4):
        assert got[f"backbone.net.body.{i}.conv.weight"].abs().max() > 1e-6, (path, i)


def test_batched_tasks_equal_single_task_calls():
    batch = make_batch(B=3)
    for batching in ("loop", "vmap"):
        learner = make_learner("logistic", batching=batching)
        loss, _ = learner.meta_loss(batch)
        singles = [learner.meta_loss(batch.slice(i, i + 1))[0].detach() for i in range(3)]
        torch.testing.assert_close(loss.detach(), torch.stack(singles).mean(), rtol=1e-12,
                                   atol=1e-12)
        for i in range(3):
            sx, sy, qx, qy = batch.task(i)
            out = learner.predict(learner.adapt(sx, sy), qx)
            torch.testing.assert_close(F.cross_entropy(out, qy), singles[i], rtol=1e-12,
                                       atol=1e-12)
    a = make_learner("logistic", batching="loop").meta_gradient(batch)
    b = make_learner("logistic", batching="vmap").meta_gradient(batch)
    shared.assert_close_rel(a, b, rtol=1e-8)


def test_deterministic_and_shapes():
    a = make_learner().meta_gradient(make_batch())
    b = make_learner().meta_gradient(make_batch())
    assert all(torch.equal(a[n], b[n]) for n in a)
    learner = make_learner()
    sx, sy, qx, _ = make_batch().task(0)
    params = learner.adapt(sx, sy)
    assert params["W"].shape == (8, WAYS) and "b" not in params
    assert len(list(learner.adapt_path(sx, sy, 3))) == 1
    assert learner.predict(params, qx).shape == (WAYS * QUERIES, WAYS)
    assert learner.meta_trains and learner.inner.steps == 25


def test_mlp_backbone_runs_under_vmap():
    torch.manual_seed(0)
    learner = MetaOptNet(MLP(4, (6,), 2).double(), head="logistic", steps=8)
    batch = shared.vector_task_batch()
    assert learner.batching == "vmap"
    assert learner.meta_gradient(batch)["backbone.body.fc0.weight"].abs().max() > 0


@pytest.mark.parametrize("kw,message", [
    ({"lam": 0.0}, "lam must be a finite number > 0"),
    ({"lam": -2.0}, "lam must be a finite number > 0"),
    ({"scale": -1.0}, "scale must be a finite number > 0"),
    ({"head": "hinge"}, "head must be one of"),
    ({"grad": "fd"}, "grad must be one of"),
    ({"steps": 0}, "steps must be an int >= 1"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        MetaOptNet(Conv4(1, 4, WAYS, image_size=16), **kw)


@pytest.mark.parametrize("head", ["logistic", "svm"])
def test_bad_labels(head):
    learner = make_learner(head, ways=WAYS)
    sx, sy, qx, qy = make_batch().task(0)
    with pytest.raises(ValueError, match=r"support_y labels must lie in \[0, ways=3\), found 3"):
        learner.adapt(sx, sy + 1)
    with pytest.raises(ValueError, match="found -1"):
        learner.adapt(sx, sy - 1)
    missing = torch.where(sy == 1, torch.zeros_like(sy), sy)         # class 1 has no example
    with pytest.raises(ValueError, match="every class needs at least one support example"):
        learner.adapt(sx, missing)
    qmissing = torch.where(qy == 1, torch.zeros_like(qy), qy)     # no query of class 1 either
    batch = ml.TaskBatch(sx[None], missing[None], qx[None], qmissing[None])
    with pytest.raises(ValueError, match=r"task 0 class 1"):
        learner.meta_loss(batch)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_evaluate_roundtrip(batching):
    learner = make_learner(batching=batching, steps=10)
    fam = shared.RandomImages(make_batch)
    r = ml.evaluate(learner, fam, tasks=4, steps=(0, 2), seed=3)
    manual = shared.mean_query_loss(learner, fam, tasks=4, seed=3)
    assert r["loss"]["mean"][0] == pytest.approx(manual, rel=1e-10)
    assert r["loss"]["mean"] == [r["loss"]["mean"][0]] * 2
    assert 0 <= r["accuracy"]["mean"][0] <= 1
