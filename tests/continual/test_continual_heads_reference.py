"""New heads start as ``nn.Linear`` layers of the same size do: weights and biases uniform
in +-1/sqrt(D), checked against torch's own initialisation and the uniform's moments."""

from __future__ import annotations

import math

import torch
from torch import nn

from metaloop.continual.heads import init_heads


def test_heads_are_initialised_as_nn_linear_is():
    c, d = 400, 50
    p = init_heads({"h": c}, d, torch.Generator().manual_seed(0))
    w, b = p["heads.h.weight"], p["heads.h.bias"]
    bound = 1 / math.sqrt(d)
    torch.manual_seed(0)
    ref = nn.Linear(d, c).weight.detach()                     # torch's own init of [C, D]
    assert float(ref.abs().max()) <= bound and float(ref.abs().max()) > 0.99 * bound
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert float(b.abs().max()) <= bound and float(b.abs().max()) > 0.95 * bound
    # U(-a, a) has variance a^2 / 3: 20,000 draws pin it to about 1%
    assert abs(float(w.var()) / (bound ** 2 / 3) - 1) < 0.05
    assert abs(float(w.var()) / float(ref.var()) - 1) < 0.05
    assert abs(float(w.mean())) < 4 * bound / math.sqrt(3 * c * d)
