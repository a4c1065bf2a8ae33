"""What one step of ``ml.train`` computes, against a hand-written loop on a float64 sinusoid
MLP: the same seeded meta-batches, fed to ``torch.optim`` directly."""

import math

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP

FAM = ml.tasks.Sinusoid(5, 5)
ITERS, BATCH, LR, SEED = 6, 3, 1e-2, 7


def _learner():
    torch.manual_seed(0)
    return MAML(MLP(1, (8, 8), 1).double(), 0.01, 1)


def _reference(optimizer="adam", schedule="constant", weight_decay=0.0, clip=0.0):
    """The loop written out: a ``torch.Generator(SEED)`` task stream, the learner's
    meta-gradient, the documented schedule and torch's own optimizer and clipping."""
    learner = _learner()
    params = list(learner.model.parameters())
    opt = {"adam": lambda: torch.optim.Adam(params, lr=LR),
           "adamw": lambda: torch.optim.AdamW(params, lr=LR, weight_decay=weight_decay),
           "sgd": lambda: torch.optim.SGD(params, lr=LR, weight_decay=weight_decay)}[optimizer]()
    g, lrs = torch.Generator().manual_seed(SEED), []
    for t in range(ITERS):
        b = FAM.sample(BATCH, generator=g)
        b = ml.TaskBatch(*(x.double() for x in (b.support_x, b.support_y, b.query_x,
                                                b.query_y)))
        grads = learner.meta_gradient(b)
        frac = t / ITERS
        lrs.append({"constant": LR, "cosine": LR * 0.5 * (1 + math.cos(math.pi * frac)),
                    "linear": LR * (1 - frac)}[schedule])
        for group in opt.param_groups:
            group["lr"] = lrs[-1]
        for n, p in learner.model.named_parameters():
            p.grad = grads[n].clone()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return dict(learner.model.named_parameters()), lrs


def _trained(monkeypatch=None, **kw):
    learner, lrs = _learner(), []
    if monkeypatch is not None:                     # the rate each optimizer step used
        for cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
            if "step" not in vars(cls):             # AdamW inherits Adam's (torch >= 2.7)
                continue
            step = cls.step
            monkeypatch.setattr(cls, "step", lambda self, *a, _s=step, **k: (
                lrs.append(self.param_groups[0]["lr"]), _s(self, *a, **k))[1])
    ml.train(learner, FAM, iterations=ITERS, meta_batch=BATCH, lr=LR, seed=SEED,
             progress=False, **kw)
    return dict(learner.model.named_parameters()), lrs


@pytest.mark.parametrize("ref, kw", [
    (dict(), dict()),
    (dict(schedule="cosine"), dict(lr_schedule="cosine")),
    (dict(optimizer="adamw", weight_decay=0.1), dict(weight_decay=0.1)),
    (dict(optimizer="sgd", weight_decay=0.1, schedule="linear"),
     dict(optimizer="sgd", weight_decay=0.1, lr_schedule="linear")),
])
def test_a_step_is_torchs_optimizer_on_the_seeded_meta_gradient(monkeypatch, ref, kw):
    want, want_lrs = _reference(**ref)
    got, lrs = _trained(monkeypatch, **kw)
    assert lrs == want_lrs
    for n in want:
        assert torch.equal(got[n], want[n]), n                       # bit for bit


def test_the_cosine_rate_at_the_first_middle_and_last_iteration(monkeypatch):
    _, lrs = _trained(monkeypatch, lr_schedule="cosine")
    assert lrs[0] == LR and lrs[ITERS // 2] == pytest.approx(LR / 2)
    assert lrs[-1] == pytest.approx(LR * (1 + math.cos(math.pi * (ITERS - 1) / ITERS)) / 2)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0


def test_clipping_is_torchs_global_norm_clipping():
    want, _ = _reference(clip=0.05)
    got, _ = _trained(clip_grad_norm=0.05)
    # torch divides by norm + 1e-6, metaloop by the norm: the same direction and bound
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6)
    unclipped, _ = _trained()
    assert any(not torch.allclose(got[n], unclipped[n], atol=1e-6) for n in got)


@pytest.mark.parametrize("key", ["lr", "clip_grad_norm", "weight_decay"])
def test_a_bool_is_not_taken_for_a_number(key):
    with pytest.raises(ValueError, match=f"{key} must be .*got True"):
        ml.train(_learner(), FAM, iterations=1, meta_batch=2, progress=False, **{key: True})
