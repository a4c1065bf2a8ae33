"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts only the head."""

from __future__ import annotations

from torch import nn

from metaloop.func.params import last_linear_names
from metaloop.meta.maml import MAML


def ANIL(model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
         first_order: bool = False, loss="mse", head=None, head_init: str = "learned",
         batching: str = "auto", checkpoint: bool = False, compile: bool = False,
         learn_lr: bool = False) -> MAML:
    """MAML with the inner loop restricted to the head ("almost no inner loop").

    The outer loop still meta-learns every parameter. For models with a linear ``head`` and
    ``forward(x, head=False)`` (MLP, Conv4) the body's support features are computed once per
    task, since the body does not change in the inner loop.

    Args:
        head: predicate or names of the adapted parameters; default the last ``nn.Linear``.
        Others: as ``MAML``.
    """
    head = last_linear_names(model) if head is None else head
    return MAML(model, inner_lr, inner_steps, first_order, loss, adapt=head, head_init=head_init,
                batching=batching, checkpoint=checkpoint, compile=compile, learn_lr=learn_lr)
