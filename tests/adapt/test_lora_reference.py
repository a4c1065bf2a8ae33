"""LoRA against the formula it implements: a target layer computes ``W x + b + (alpha / r) B A x``
(Hu et al. 2021), written out here in plain torch from the adapter tensors, for the adapted
predictor, the merged model and an adapter with dropout (off at prediction time)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaloop.adapt.lora import add_lora, lora_finetune, merge_lora

pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")

DT = torch.float64
L = "body.0."


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Linear(6, 5)

    def forward(self, x, head=True):
        f = self.body(x)
        return self.head(f) if head else f


def _reference(p, x, scale):
    """The network with its LoRA layer written out: logits [N, C] from the params dict."""
    A, B = p[L + "lora_A.default.weight"], p[L + "lora_B.default.weight"]     # [r, 4], [6, r]
    h = x @ p[L + "base_layer.weight"].T + p[L + "base_layer.bias"] + scale * (x @ A.T @ B.T)
    return torch.tanh(h) @ p["head.weight"].T + p["head.bias"]


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(9, 4, generator=g, dtype=DT), torch.arange(3).repeat(3)


@pytest.mark.parametrize("r,alpha", [(2, 6.0), (4, 1.0)])
def test_the_adapted_lora_predictor_computes_w_x_plus_alpha_over_r_b_a_x(r, alpha):
    model = Net().double()
    x, y = _task()
    lora = add_lora(model, r=r, alpha=alpha)
    a = lora_finetune(lora, x, y, steps=4, lr=0.1, head_lr=0.5)
    B = a.params[L + "lora_B.default.weight"]
    assert float(B.abs().max()) > 1e-3                     # the adapters moved
    xq = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    want = _reference(a.params, xq, alpha / r)
    torch.testing.assert_close(a(xq), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merge_lora(lora, a.params)(xq), want, rtol=1e-12, atol=1e-12)
    # the same predictor without the scale differs: the check above sees alpha / r
    assert (a(xq) - _reference(a.params, xq, 1.0)).abs().max() > 1e-6


def test_lora_dropout_trains_but_never_perturbs_predictions():
    """add_lora returns the model in eval mode: an adapter's dropout (here 0.5) is off when
    the adapted model predicts, so predictions are the formula's, the same at every call."""
    model = Net().double()
    x, y = _task(2)
    lora = add_lora(model, r=2, alpha=4.0, dropout=0.5)
    assert not lora.training
    a = lora_finetune(lora, x, y, steps=3, lr=0.1, head_lr=0.5)
    xq = torch.randn(64, 4, generator=torch.Generator().manual_seed(3), dtype=DT)
    torch.testing.assert_close(a(xq), _reference(a.params, xq, 2.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lora(xq), model(xq), rtol=0, atol=1e-12)
