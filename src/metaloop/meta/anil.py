"""ANIL (Raghu et al. 2020): MAML whose inner loop adapts only the head.

The parameters are partitioned by name: the head (default ``last_linear_names``) adapts in
the inner loop, the body does not; the outer loop still meta-learns both. Since the body is
fixed within a task, ``head_only_path`` computes its support features once per task and runs
the inner SGD on the linear head alone, for metaloop's MLP, Conv4, ResNet-12 and
TextEncoder, whose output is their linear ``head`` on ``forward(x, head=False)``. Other
models run MAML's inner loop on the whole network with the same adapted names: the same
numbers, slower.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt.sgd import SGDAdapter, default_head
from metaloop.func.params import Params, forward, partition
from metaloop.meta.maml import MAML

HEAD = ("head.weight", "head.bias")


def linear_head(head: Mapping[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    """The head on body features: ``[S, D] -> [S, out]``."""
    return F.linear(feats, head["head.weight"], head["head.bias"])      # [S, out]


def head_only_path(adapter: SGDAdapter, loop, params: Params, x: torch.Tensor, y: torch.Tensor,
                   steps: int, create_graph: bool, lr) -> Iterator[Params]:
    """ANIL's inner loop: SGD on the head over body features computed once.

    An ``SGDAdapter.path_fn``: ``loop`` is the plain SGD path (``sgd_path``, or
    ``sgd_path_func`` under vmap), ``params`` the task's start. Yields the whole params
    after 0..steps steps, the body unchanged (the same tensors).
    """
    head, _body = partition(params, adapter.names)      # head.weight [C, D], head.bias [C]
    feats = forward(adapter.model, params, x, head=False)             # [S, D], once
    for h in loop(linear_head, adapter.loss_fn, head, adapter.names, feats, y, lr, steps,
                  create_graph):
        yield {**params, **h}


def features_once(model: nn.Module, adapted) -> bool:
    """Whether ``head_only_path`` applies: the adapted names are exactly ``head.weight`` and
    ``head.bias`` of a linear ``head``, in a model whose ``forward`` is that of metaloop's
    MLP, Conv4, ResNet-12 or TextEncoder, so that ``model(x) == head(model(x, head=False))``.
    A user's model with a ``head`` and ``forward(x, head=False)`` may do more after its head
    (scale the logits, add a bias): it runs the whole network in the inner loop, which is
    exact for any forward."""
    from metaloop.models import MLP, Conv4, ResNet12, TextEncoder
    ours = (MLP.forward, Conv4.forward, ResNet12.forward, TextEncoder.forward)
    return (sorted(adapted) == sorted(HEAD) and isinstance(getattr(model, "head", None), nn.Linear)
            and type(model).forward in ours)


def _zeroed(model: nn.Module, head):
    """What ``head_init="zero"`` zeroes of ANIL's ``head``: the model's default head
    (``default_head``) where the head takes it in (a head of several layers ends in it),
    else the head itself (its output layer named alone). Names are checked by MAML."""
    default = default_head(model) if isinstance(model, nn.Module) else None
    if default is None:
        return head
    try:
        names = set(partition(dict(model.named_parameters()), head)[0])
    except (ValueError, TypeError):
        return head                             # MAML names what is wrong with it
    return default if set(default) <= names else head


def ANIL(model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
         first_order: bool = False, loss="mse", head=None, head_init: str = "learned",
         batching: str = "auto", recompute_inner_loop: bool | None = None, compile: bool = False,
         learn_lr: bool = False, checkpoint: bool | None = None) -> MAML:
    """MAML with the inner loop restricted to the head ("almost no inner loop").

    The outer loop still meta-learns every parameter. For metaloop's MLP, Conv4, ResNet-12
    and TextEncoder the body's support features are computed once per task
    (``head_only_path``), since the body does not change in the inner loop; other models run
    the whole network.

    Args:
        model: the network (its parameters are theta_0; all of them are meta-learned).
        inner_lr: inner SGD step size of the head (as ``MAML``).
        inner_steps: inner steps at training (as ``MAML``).
        first_order: drop second derivatives (as ``MAML``).
        loss: "mse" or "ce" (or a callable).
        head: predicate or names of the head's parameters: what adapts, and, with
            ``head_init="zero"``, what starts each task at zero. Default the model's
            ``head`` ``nn.Linear``, else its last one (``last_linear_names``); a model
            whose output layer is no ``nn.Linear`` (a 1x1 convolution, a bare
            ``nn.Parameter``) names it here.
        head_init: "learned" or "zero" (as ``MAML``).
        batching: "auto", "loop", "vmap" or "threads" (as ``MAML``).
        recompute_inner_loop: recompute each inner step's activations in the backward
            pass (as ``MAML``).
        compile: run meta-training through ``torch.compile``: the vmapped tasks as one
            function, or each looped task's query pass (as ``MAML``, which says more: a
            C++ compiler is needed on the CPU; torch compiles a function at most
            ``torch._dynamo.config.recompile_limit`` (8) times, counted per learner where
            ``torch.compile`` takes ``isolate_recompiles`` (torch 2.13), else per process
            across every learner and setting, then runs it eager with one
            ``RecompileLimitWarning``; raise that limit or call ``torch._dynamo.reset()``
            between the settings of a sweep).
        learn_lr: meta-learn the inner step sizes (as ``MAML``).
        checkpoint: the older name of ``recompute_inner_loop`` (as ``MAML``).

    Returns:
        A ``MAML`` whose inner loop adapts ``head`` only; its errors and its ``repr`` name
        it ANIL.

    Raises:
        ValueError: as ``MAML``; no ``head`` for a model without an ``nn.Linear``; at first
            use (``meta_gradient``, ``meta_loss``, ``adapt``, ``adapt_path_batched``), a
            head the forward pass never uses (it would get no inner gradient: the default,
            the last ``nn.Linear``, may be an unused one), naming it.
    """
    named = head is not None
    if head is None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        head = default_head(model)
        if head is None:
            raise ValueError(f"ANIL adapts the head, but {type(model).__name__} has no "
                             f"nn.Linear to take as its head: name the head's parameters "
                             f"with head=[...] (e.g. "
                             f"{[n for n, _ in model.named_parameters()][-2:]})")
    learner = MAML.__new__(MAML)
    learner._method = "ANIL"        # its errors name ANIL, not MAML, from construction on
    learner.__init__(  # type: ignore[misc]  # MAML's own __init__, on the instance __new__ made
        model, inner_lr, inner_steps, first_order, loss, adapt=head, head_init=head_init,
        batching=batching, recompute_inner_loop=recompute_inner_loop, compile=compile,
        learn_lr=learn_lr, checkpoint=checkpoint, head=_zeroed(model, head))
    if features_once(model, learner.inner.names):
        learner.inner.path_fn = head_only_path
    # the head as named with head= (None: the default), which MAML's messages about the
    # head read (``MAML._head_origin``)
    vars(learner)["_head_named"] = list(learner.inner.names) if named else None
    return learner
