"""The learners under the caller's grad mode: ``torch.no_grad()`` and
``torch.inference_mode()`` give the values and gradients of the same call with gradients
enabled (the inner loop differentiates its support loss whatever the mode), ``meta_loss``
without a graph, and adapted parameters that are ordinary tensors."""

from contextlib import nullcontext

import pytest
import torch

import metaloop as ml
from metaloop.models import MLP, Conv4

WAYS = 3
MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def batch(tasks=2, image=False):
    g = torch.Generator().manual_seed(0)
    shape = (1, 16, 16) if image else (4,)
    y = torch.arange(WAYS).repeat(tasks, 2)                                # [B, 2 * WAYS]
    return ml.TaskBatch(torch.randn(tasks, 2 * WAYS, *shape, generator=g, dtype=torch.float64),
                        y, torch.randn(tasks, 2 * WAYS, *shape, generator=g,
                                       dtype=torch.float64), y,
                        classes=torch.arange(WAYS).repeat(tasks, 1))


class Family:
    """Float64 classification tasks (``batch``'s), drawn from the generator given."""

    def __init__(self, image):
        self.image = image

    def sample(self, n, generator=None):
        shape = (1, 16, 16) if self.image else (4,)
        y = torch.arange(WAYS).repeat(n, 2)                                # [n, 2 * WAYS]
        x = torch.randn(n, 4 * WAYS, *shape, generator=generator, dtype=torch.float64)
        return ml.TaskBatch(x[:, :2 * WAYS], y, x[:, 2 * WAYS:], y)


def mlp():
    torch.manual_seed(0)
    return MLP(in_dim=4, hidden=(8,), out_dim=WAYS).double()


def conv():
    torch.manual_seed(0)
    return Conv4(in_channels=1, hidden=4, out_dim=WAYS).double()


def backbone():
    torch.manual_seed(0)
    return MLP(in_dim=4, hidden=(8,), out_dim=5).double()


LEARNERS = {
    "maml-loop-conv": (lambda: ml.meta.MAML(conv(), inner_lr=0.1, loss="ce"), True),
    "maml-vmap": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, loss="ce", batching="vmap"), False),
    "maml-loop-mlp": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, loss="ce", batching="loop"),
                      False),
    "maml-threads": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, loss="ce", batching="threads"),
                     False),
    "maml-recompute": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, inner_steps=2, loss="ce",
                                            recompute_inner_loop=True), False),
    "maml-learn-lr": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, loss="ce", learn_lr=True),
                      False),
    "maml-zero-head": (lambda: ml.meta.MAML(mlp(), inner_lr=0.1, loss="ce",
                                            head_init="zero", batching="loop"), False),
    "anil-loop": (lambda: ml.meta.ANIL(conv(), inner_lr=0.1, loss="ce"), True),
    "anil-vmap": (lambda: ml.meta.ANIL(mlp(), inner_lr=0.1, loss="ce", batching="vmap"), False),
    "reptile": (lambda: ml.meta.Reptile(mlp(), inner_lr=0.1, inner_steps=2, loss="ce",
                                        batching="loop"), False),
    "reptile-vmap": (lambda: ml.meta.Reptile(mlp(), inner_lr=0.1, inner_steps=2, loss="ce",
                                             batching="vmap"), False),
    "reptile-adam": (lambda: ml.meta.Reptile(mlp(), inner_lr=0.1, inner_steps=2, loss="ce",
                                             inner_optimizer="adam", test_batch=3), False),
    "r2d2": (lambda: ml.meta.R2D2(backbone()), False),
    "protonet": (lambda: ml.meta.ProtoNet(backbone()), False),
    "metaoptnet": (lambda: ml.meta.MetaOptNet(backbone()), False),
    "pretrain": (lambda: ml.meta.Pretrain(mlp(), inner_lr=0.1, loss="ce"), False),
}
SGD_LEARNERS = [k for k in LEARNERS if k.split("-")[0] in ("maml", "anil", "reptile")]


def build(name):
    make, image = LEARNERS[name]
    return make(), batch(image=image)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LEARNERS)
def test_meta_loss_has_the_value_without_a_graph(name, mode):
    learner, b = build(name)
    want, want_metrics = learner.meta_loss(b)
    assert want.requires_grad
    with MODES[mode]():
        got, metrics = learner.meta_loss(b)
    assert not got.requires_grad
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    for k, v in want_metrics.items():
        torch.testing.assert_close(metrics[k], v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LEARNERS)
def test_meta_gradient_is_the_gradient_with_grad_enabled(name, mode):
    learner, b = build(name)
    want, want_metrics = learner.meta_gradient(b, with_metrics=True)
    assert any(bool(g.abs().sum() > 0) for g in want.values())
    with MODES[mode]():
        got, metrics = learner.meta_gradient(b, with_metrics=True)
    assert sorted(got) == sorted(want)
    for n in want:
        assert not got[n].is_inference()
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)
    for k, v in want_metrics.items():
        torch.testing.assert_close(metrics[k], v, rtol=1e-12, atol=1e-12)


def test_the_meta_gradient_under_no_grad_matches_finite_differences():
    """An independent check: the second-order MAML meta-gradient taken under no_grad, along a
    random direction, against central differences of the meta-loss."""
    learner, b = build("maml-loop-conv")
    with torch.no_grad():
        grads = learner.meta_gradient(b)
    params = dict(learner.model.named_parameters())
    g = torch.Generator().manual_seed(1)
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    eps = 1e-6

    def loss_at(sign):
        with torch.no_grad():
            for n, p in params.items():
                p.add_(direction[n], alpha=sign * eps)
            value = float(learner.meta_loss(b)[0])
            for n, p in params.items():
                p.sub_(direction[n], alpha=sign * eps)
        return value
    numeric = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = float(sum((grads[n] * direction[n]).sum() for n in params))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", SGD_LEARNERS)
def test_adapt_under_inference_mode_gives_ordinary_tensors(name):
    learner, b = build(name)
    sx, sy, qx, _ = b.task(0)
    want = learner.adapt(sx, sy, steps=2)
    with torch.inference_mode():
        got = learner.adapt(sx.clone(), sy.clone(), steps=2)        # inference tensors in
        inside = learner.predict(got, qx)
    assert sorted(got) == sorted(want)
    for n in want:
        assert not got[n].is_inference() and not got[n].requires_grad, n
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12, msg=n)
    out = learner.predict(got, qx)                                   # usable outside too
    torch.testing.assert_close(out, learner.predict(want, qx).detach(), rtol=0, atol=0)
    torch.testing.assert_close(inside, out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("mode", [None, *MODES])
@pytest.mark.parametrize("name", ["maml-loop-mlp", "maml-vmap", "reptile-adam"])
def test_adapt_path_leaves_the_callers_grad_mode_alone(name, mode):
    learner, b = build(name)
    sx, sy, _, _ = b.task(0)
    outer = MODES[mode]() if mode else nullcontext()
    seen = []
    with outer:
        expected = torch.is_grad_enabled()
        for _ in learner.adapt_path(sx, sy, steps=2):
            seen.append(torch.is_grad_enabled())
        assert torch.is_grad_enabled() == expected
    assert seen == [expected] * 3


@pytest.mark.parametrize("name", ["maml-loop-conv", "maml-vmap", "anil-loop", "reptile",
                                  "reptile-vmap", "r2d2"])
def test_evaluate_under_inference_mode_scores_as_without_it(name):
    learner, _ = build(name)
    family = Family(image=LEARNERS[name][1])
    want = ml.evaluate(learner, family, tasks=3, steps=(0, 2))
    with torch.inference_mode():
        got = ml.evaluate(learner, family, tasks=3, steps=(0, 2))
    assert len(want["per_task"]["loss"][1]) == 3
    for key in ("loss", "accuracy"):
        for g, w in zip(got["per_task"][key], want["per_task"][key]):
            assert g == pytest.approx(w, rel=1e-12, abs=1e-12)


def test_the_large_logistic_head_solves_float64_features_under_inference_mode():
    """``fit_head``'s L-BFGS solver (beyond ``NEWTON_MAX`` unknowns) on float64 features made
    under inference_mode: the same head as outside it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    y = torch.arange(150).repeat(2)
    assert 17 * 150 > ml.adapt.heads.NEWTON_MAX
    want = ml.adapt.fit_head(x, y, 150, "logistic", lam=0.1)
    with torch.inference_mode():
        got = ml.adapt.fit_head(x.clone(), y.clone(), 150, "logistic", lam=0.1)
    for a, b in zip(got, want):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("make", [
    lambda: ml.meta.MAML(ml.models.Conv4(in_channels=1, hidden=4, out_dim=3), loss="ce"),
    lambda: ml.meta.R2D2(ml.models.Conv4(in_channels=1, hidden=4, out_dim=3)),
    lambda: ml.meta.ProtoNet(ml.models.Conv4(in_channels=1, hidden=4, out_dim=3))])
def test_meta_loss_with_gradients_on_takes_a_batch_made_under_inference_mode(make):
    """``meta_gradient`` took a batch sampled under ``inference_mode``; ``meta_loss`` with
    gradients on failed on it ("Inference tensors cannot be saved for backward")."""
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 1, 28, 28), torch.arange(3).expand(2, 3).clone()
    learner = make()
    want = learner.meta_loss(ml.TaskBatch(x, y, x, y))[0]
    with torch.inference_mode():
        batch = ml.TaskBatch(x.clone(), y.clone(), x.clone(), y.clone())
    got = learner.meta_loss(batch)[0]
    assert got.requires_grad and torch.equal(got.detach(), want.detach())
    got.backward()
