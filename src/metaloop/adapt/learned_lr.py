"""Meta-learned inner step sizes, one per adapted tensor and inner step (MAML++'s LSLR).

Antoniou et al. 2019 ("How to train your MAML", "learning per-layer per-step learning
rates") and Li et al. 2017 (Meta-SGD, per-parameter) learn the inner step size alpha in the
outer loop; here it is one scalar per adapted tensor and step, ``alpha[k, j]`` for step k and
the j-th adapted tensor, the adapted tensors counted in the network's ``named_parameters()``
order whatever order the names that choose them are given in (``InnerLRs.columns`` names
them). The outer gradient reaches alpha exactly: theta_{k+1} = theta_k -
alpha[k] * g_k is differentiable in alpha, and d theta_{k+1} / d alpha[k, j] = -g_{k, j}.

The rates live in a wrapper module beside the network, so that the training loop's Adam
step, checkpoints, resumption and data-parallel all-reduce treat them like any weight.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from metaloop.func.params import Params

NET = "net."


class InnerLRs(nn.Module):
    """A network and its meta-learned inner step sizes.

    Args:
        net: the network; ``forward`` calls it unchanged.
        adapted: how many tensors the inner loop adapts (the columns of the table).
        steps: inner steps in meta-training (the rows of the table).
        init: the initial step size of every entry (the configured ``inner_lr``), a finite
            number > 0.
        columns: the adapted tensors' names, one per column in the order the inner loop
            takes them (``named_parameters()`` order), kept as ``self.columns``; None
            (the default) leaves them unnamed.

    Parameters: ``net.*`` (the network's own) and ``inner_lr`` ``[steps, adapted]``, in the
    dtype and device of the network's first floating-point parameter.

    Raises:
        ValueError: a ``net`` that is not a module, ``adapted`` or ``steps`` < 1, a bad
            ``init``, or ``columns`` that are not ``adapted`` names.
    """

    def __init__(self, net: nn.Module, adapted: int, steps: int, init: float,
                 columns: list[str] | tuple[str, ...] | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"InnerLRs: net must be an nn.Module, got {type(net).__name__}")
        for name, v in (("adapted", adapted), ("steps", steps)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"InnerLRs: {name} must be a positive int, got {v!r}")
        if isinstance(init, bool) or not isinstance(init, numbers.Real) \
                or not 0 < float(init) < math.inf:
            raise ValueError(f"InnerLRs: init (the initial inner_lr) must be a finite number "
                             f"> 0, got {init!r}")
        first = next((p for p in net.parameters() if p.is_floating_point()), None)
        kw: dict[str, Any] = ({"dtype": first.dtype, "device": first.device}
                              if first is not None else {})
        if columns is not None and (len(columns) != adapted
                                    or not all(isinstance(c, str) for c in columns)):
            raise ValueError(f"InnerLRs: columns must be {adapted} parameter names (one per "
                             f"adapted tensor), got {columns!r}")
        self.columns: tuple[str, ...] | None = None if columns is None else tuple(columns)
        self.net: nn.Module = net
        self.inner_lr = nn.Parameter(torch.full((steps, adapted), float(init), **kw))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.net(x, *args, **kwargs)


def split_lrs(model: nn.Module, params: Params) -> tuple[Params, torch.Tensor | None]:
    """(the network's params, the step-size table or None) from ``model``'s params dict.

    For an ``InnerLRs`` model: ``net.*`` entries without the prefix, and ``inner_lr``
    ``[steps, adapted]``. For any other model: ``params`` itself and None.
    """
    if not isinstance(model, InnerLRs):
        return params, None
    net = {k[len(NET):]: v for k, v in params.items() if k.startswith(NET)}
    return net, params["inner_lr"]


def step_lr(lr: float | torch.Tensor, step: int):
    """The step size(s) of inner step ``step`` (0-based): the float itself, or the row of a
    ``[rows, adapted]`` table; steps past the last row (longer test-time adaptation than
    in training) reuse the last row."""
    if isinstance(lr, torch.Tensor):
        return lr[min(step, lr.shape[0] - 1)]
    return lr
