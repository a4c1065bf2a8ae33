"""Approach 2: fine-tuning with a zero / random head, and LP-FT's head-first warm-up."""

from __future__ import annotations

import pytest
import torch

from metaloop.adapt.finetune import finetune, lpft
from metaloop.func.params import params_of
from metaloop.models import Conv4


@pytest.fixture
def task():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 28, 28, generator=g), torch.arange(3).repeat(2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Conv4(1, 8, out_dim=5)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_zero_head_gives_logits_exactly_zero_at_the_start(model, task):
    """A zero head's logits are exactly 0, so the first step sends no gradient to the body:
    after one SGD step every body tensor is bit-identical."""
    x, y = task
    before = _snapshot(model)
    a = finetune(model, x, y, steps=1, optimizer="sgd")
    for n, t in a.params.items():
        if not n.startswith("head."):
            assert torch.equal(t, before[n]), n
    assert not torch.equal(a.params["head.weight"], torch.zeros(3, model.feature_dim))
    assert a.trainable == sum(p.numel() for n, p in params_of(model).items()
                              if not n.startswith("head.")) + 3 * model.feature_dim + 3


def test_random_head_starts_from_nonzero_logits(model, task):
    """A random head's logits are not 0: the first step already moves the body."""
    x, y = task
    before = _snapshot(model)
    a = finetune(model, x, y, steps=1, optimizer="sgd", head_init="random",
                 generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a.params["body.0.conv.weight"], before["body.0.conv.weight"])
    assert float(a(x).abs().min()) > 0


@pytest.mark.parametrize("head_init", ["zero", "random"])
def test_steps_0_without_warmup_is_refused(model, task, head_init):
    """steps=0 without warmup returned the new head untrained (a zero head: uniform logits
    for every input) as if it were an adapted model; with warmup it is the warm-up phase
    alone (test_lpft_warmup_phase_leaves_the_backbone_bit_identical)."""
    with pytest.raises(ValueError, match=r"^finetune: steps=0 without warmup trains nothing: "
                                         rf"the new head stays as head_init='{head_init}' made "
                                         r"it .*give steps >= 1, or warmup="):
        finetune(model, *task, steps=0, head_init=head_init)
    with pytest.raises(ValueError, match=r"^lpft: steps=0 without warmup"):
        lpft(model, *task, steps=0, warmup=None, head_init=head_init)
    assert finetune(model, *task, steps=0, warmup="ridge").info["steps"] == 0


def test_lpft_warmup_phase_leaves_the_backbone_bit_identical(model, task):
    x, y = task
    before = _snapshot(model)
    warm = lpft(model, x, y, steps=0)               # the warm-up phase alone
    for n, t in warm.params.items():
        if not n.startswith("head."):
            assert torch.equal(t, before[n]), n
    assert (warm(x).argmax(-1) == y).all()         # the head was fitted on frozen features
    full = lpft(model, x, y, steps=3)                # then everything trains
    assert not torch.equal(full.params["body.0.conv.weight"], before["body.0.conv.weight"])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n        # nothing is mutated


def test_finetuning_learns_the_support_set_and_adapt_limits_what_moves(model, task):
    x, y = task
    before = _snapshot(model)
    a = finetune(model, x, y, steps=30, lr=1e-3, head_lr=1e-1)
    assert (a(x).argmax(-1) == y).all()
    only = finetune(model, x, y, steps=3, adapt=lambda n: n.startswith("body.3."))
    for n, t in only.params.items():
        moved = not torch.equal(t, before[n]) if t.shape == before[n].shape else True
        assert moved == (n.startswith("body.3.") or n.startswith("head.")), n


@pytest.mark.parametrize("kw,message", [
    ({"steps": -1}, "steps must be a non-negative int"),
    ({"lr": 0.0}, "lr must be a positive number"),
    ({"head_init": "ones"}, "head init must be one of"),
    ({"adapt": ["nope"]}, "unknown parameter names"),
])
def test_bad_options_are_named(model, task, kw, message):
    with pytest.raises(ValueError, match=message):
        finetune(model, *task, **kw)


def test_empty_support_set_is_an_error(model):
    with pytest.raises(ValueError, match="the support set is empty"):
        finetune(model, torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64))
