"""Multi-layer perceptron (the MAML sinusoid network: 1-40-40-1 with ReLU)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class MLP(nn.Module):
    """``in_dim -> hidden... -> out_dim`` with ReLU between layers.

    The last layer is called ``head`` (parameters ``head.weight [out, h]``, ``head.bias
    [out]``), so head-only adaptation (ANIL, linear probes) selects it by name.

    Args:
        in_dim: input features.
        hidden: a sequence of hidden-layer widths, one per layer: ``(40, 40)`` for two
            layers of 40, ``(40,)`` for one, ``()`` for none (a linear model). A bare int
            is refused: unlike Conv4's ``hidden`` (one width for every layer) it would not
            say how many layers.
        out_dim: outputs.

    Shapes:
        x ``[N, in_dim]`` (any leading dims) -> ``[N, out_dim]``.

    Raises:
        ValueError: ``in_dim``, ``out_dim`` or a width that is not a positive int;
            ``hidden`` that is not a sequence of widths (an int, a string).
    """

    def __init__(self, in_dim: int = 1, hidden=(40, 40), out_dim: int = 1):
        super().__init__()
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            hint = f"; for one hidden layer pass ({hidden},)" if isinstance(hidden, int) else ""
            raise ValueError(f"MLP hidden must be a sequence of hidden-layer widths, e.g. "
                             f"(40, 40), got {hidden!r}{hint}")
        hidden = tuple(hidden)
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), *(("hidden", h) for h in hidden)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"MLP {name} must be a positive int, got {v!r}")
        dims = (in_dim, *hidden)
        self.in_dim = in_dim
        self.body = nn.Sequential()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            self.body.add_module(f"fc{i}", nn.Linear(a, b))
            self.body.add_module(f"relu{i}", nn.ReLU())
        self.feature_dim = dims[-1]
        self.head = nn.Linear(dims[-1], out_dim)

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """``[N, in_dim] -> [N, out_dim]``, or the features ``[N, feature_dim]`` if not head.

        Raises:
            ValueError: an input whose last dimension is not ``in_dim`` (e.g. images not
                flattened), a scalar, or an input that is not floating point.
        """
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"MLP expects inputs [..., in_dim={self.in_dim}], got shape "
                             f"{list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"MLP expects floating-point inputs, got {x.dtype}")
        h = self.body(x)
        return self.head(h) if head else h
