"""Approach 1, the linear probe: a new head on the frozen backbone's features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaloop.adapt._fit import Adapted, check_support
from metaloop.adapt.heads import new_head_names, warm_head
from metaloop.func.params import detach, params_of


def linear_probe(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                 solver: str = "logistic", head: Sequence[str] | None = None,
                 **solver_kw) -> Adapted:
    """Fit a new linear head on frozen features; the backbone is untouched.

    The support features are computed once, without gradients, in eval mode (no dropout,
    torch BatchNorm normalising with its running statistics and never updating them),
    whatever the model's own mode, which is then restored; the head is then solved in
    closed form (``"ridge"``), by Newton steps (``"logistic"``) or by Adam (``"sgd"``), see
    ``metaloop.adapt.heads.fit_head``. A float16 / bfloat16 model's head is solved in
    float32 and returned in the model's dtype.

    Args:
        model: a network with ``forward(x, head=False)`` (Conv4, MLP, TextEncoder).
        support_x: ``[S, ...]`` one task's support inputs.
        support_y: int64 ``[S]`` labels.
        solver: ``"logistic"``, ``"ridge"`` or ``"sgd"``.
        head: head parameter names (default ``last_linear_names``: the ``head`` nn.Linear, else
            the last one).
        solver_kw: ``lam``, ``steps``, ``lr`` for ``fit_head`` (each only with a solver that
            uses it).

    Returns:
        ``Adapted`` with a ``[C, D]`` head; ``trainable`` counts the head's numbers.

    Raises:
        ValueError: an empty or inconsistent support set (one of a single class among
            them), inputs with NaN or inf or on another device / in another dtype than
            ``model``, an unknown solver or solver option or a bad value of one, or a head
            tied to another layer (``new_head_names``); each message names ``linear_probe``.
    """
    check_support("linear_probe", support_x, support_y, model)
    names = new_head_names(model, head)
    params = warm_head(model, detach(params_of(model)), support_x, support_y, names, solver,
                       who="linear_probe", **solver_kw)
    return Adapted(model, params, sum(params[n].numel() for n in names), names,
                   {"frozen_body": True, "solver": solver})
