"""What every meta-learner shares: the ``Learner`` protocol and per-task helpers."""

from __future__ import annotations

import copy
import math
import operator
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from metaloop._repr import safe_repr
from metaloop.adapt.learned_lr import split_lrs
from metaloop.adapt.sgd import SGDAdapter, autograd_usable, check_one_task_output, gradients_on
from metaloop.func.losses import accuracy, check_predictions, cross_entropy
from metaloop.func.params import (
    Params,
    detach,
    last_linear_module,
    mismatched,
    named_layers,
    tensor_names,
    unknown_names,
    updates_running_stats,
)
from metaloop.meta._threads import check_threadable
from metaloop.tasks.batch import TaskBatch, _unchecked_batch, values_trusted


class InnerRule(Protocol):
    """What the training loop and ``evaluate`` read of a learner's ``inner``: its default
    number of adaptation steps and its query loss."""

    steps: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class Learner(Protocol):
    """Everything ``metaloop.train`` and ``metaloop.evaluate`` use of a learner.

    Every meta-learner and baseline of ``metaloop.meta`` satisfies it (except ``Ensemble``,
    which only evaluates: it has no ``meta_loss`` or ``meta_gradient``), and so can a class
    of your own: nothing needs to inherit from it.

    ``isinstance(obj, Learner)`` checks for all of the members below (names only, not
    signatures), but no single use needs all of them, and ``train`` and ``evaluate`` check
    only what they use, so a class of your own can work with them and still not be an
    instance. What each use reads:

    - ``ml.train``: ``model`` and ``meta_gradient``; ``meta_trains`` if present (default
      True); with ``val_family``, also ``adapt_path``, ``predict`` and ``inner.steps``.
    - ``ml.evaluate``: ``adapt_path`` and ``predict``; ``inner.loss_fn`` unless ``loss=`` is
      given; ``model`` (if present: its device and dtype) and ``batching`` (if present,
      default ``"loop"``).
    - batched evaluation (``batching == "vmap"`` only): ``adapt_path_batched`` and
      ``predict_batched`` instead of ``adapt_path`` and ``predict``. A learner of your own
      that sets ``batching = "loop"`` needs neither; give them (for instance as methods
      raising ``NotImplementedError``) only for ``isinstance`` to hold.
    - ``meta_loss`` and ``adapt`` are the documented API (the design's), which neither
      ``train`` nor ``evaluate`` calls.

    ``inner`` (the type ``InnerRule`` of ``metaloop.meta._common``, not exported) is any
    object with ``steps``, an int: the adaptation steps validation scores at, and
    ``loss_fn``, a callable ``(pred, y) -> 0-dim tensor``: the query loss ``evaluate``
    reports (a ``types.SimpleNamespace(steps=1, loss_fn=metaloop.func.get_loss("ce"))``
    will do).

    Attributes:
        model: the module whose ``named_parameters()`` are the meta-parameters: the training
            loop's optimiser steps them, checkpoints store them, data-parallel ranks average
            their gradients.
        meta_trains: False for a learner with nothing to meta-train (``Scratch``): the loop
            then skips its iterations.
        batching: ``"loop"``, ``"vmap"`` or ``"threads"``; with ``"vmap"``, ``evaluate``
            scores a whole batch of tasks at once through ``adapt_path_batched`` and
            ``predict_batched``.
        inner: the adaptation rule, with ``inner.steps`` (int) the step count validation
            scores at and ``inner.loss_fn(pred, y)`` the query loss ``evaluate`` reports.
    """

    model: nn.Module
    meta_trains: bool
    batching: str
    inner: InnerRule

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean query loss over the batch's tasks after adaptation (differentiable in
        ``model``'s parameters) and its metrics ``{"loss", "accuracy"?}``: detached 0-dim
        tensors on the model's device (``float(v)`` reads one; the training loop reads them
        only when it logs, so a CUDA step has no host synchronisation)."""

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d parameter, name -> tensor over ``model.named_parameters()``
        (zeros where unused); ``(grads, metrics)`` with ``with_metrics``."""

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Adapted parameters for ONE task (support ``[S, ...]``, labels ``[S]`` or targets
        ``[S, out]``), detached."""

    def adapt_path(self, support_x: torch.Tensor, support_y: torch.Tensor,
                   steps: int | None = None) -> Iterator[Params]:
        """One task's detached parameters after 0, 1, ..., ``steps`` adaptation steps (a
        learner with a solved head may yield fewer; ``evaluate`` reuses the last)."""

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` on x ``[N, ...]`` with adapted ``params``."""

    def adapt_path_batched(self, support_x: torch.Tensor, support_y: torch.Tensor,
                           steps: int | None = None) -> list[Params]:
        """``adapt_path`` for B tasks at once (support ``[B, S, ...]``): a list over steps of
        params whose per-task entries carry a leading ``[B]`` dimension."""

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``predict`` for batched params and x ``[B, N, ...]`` -> ``[B, N, out]``."""


class AdaptsBySGD:
    """Test-time adaptation by the learner's ``inner`` SGDAdapter (composed, not inherited).

    Its constructor serves the learners without an inner loop in meta-training (``Pretrain``,
    ``Scratch``): ``inner`` is only their test-time fine-tuning rule.
    """

    _method: str        # set by a builder that names the learner otherwise ("ANIL")

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 loss="mse", adapt=None, head_init: str = "learned", batching: str = "auto"):
        self.model = model
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init)
        self.batching = resolve_batching(batching, model)   # for test-time adaptation
        # "auto" that chose vmap: the loop from the first call vmap cannot run (vmap_guard)
        self._auto_vmap = batching == "auto" and self.batching == "vmap"

    @property
    def _owner(self) -> str:
        """The learner's name in its error messages: its class's ("MAML", "Reptile"), or
        the builder's that made it ("ANIL")."""
        return getattr(self, "_method", None) or type(self).__name__

    @safe_repr
    def __repr__(self) -> str:
        """The method's name and its key settings, e.g. ``ANIL(inner_lr=0.01,
        inner_steps=1, first_order=False, head_init='learned', batching='loop')``."""
        shown: dict[str, object] = {"inner_lr": self.inner.lr, "inner_steps": self.inner.steps}
        if hasattr(self, "first_order"):
            shown["first_order"] = self.first_order
        if hasattr(self, "inner_optimizer"):
            shown["inner_optimizer"] = self.inner_optimizer
        if isinstance(self.inner.loss, str):
            shown["loss"] = self.inner.loss
        shown["head_init"] = self.inner.head_init
        shown["batching"] = self.batching
        return f"{self._owner}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Adapted parameters for ONE task, detached: the last of ``adapt_path``.

        Args:
            support_x: one task's support inputs ``[S, ...]``.
            support_y: its int64 class labels ``[S]`` or float targets ``[S, out]``.
            steps: inner steps; None: the learner's ``inner_steps``.

        Returns:
            name -> tensor for every parameter of the network (the adapted ones after
            ``steps`` steps, the others as they are), detached.

        Raises:
            ValueError: as ``adapt_path``.
        """
        *_, last = self.adapt_path(support_x, support_y, steps)
        return last

    def adapt_path(self, support_x, support_y, steps: int | None = None) -> Iterator[Params]:
        """Yield one task's detached params after 0..steps inner SGD steps (with a learned
        step-size table, ``metaloop.adapt.learned_lr``, steps past its rows reuse its last).

        Args:
            support_x: one task's support inputs ``[S, ...]``.
            support_y: its int64 class labels ``[S]`` or float targets ``[S, out]``.
            steps: inner steps; None: the learner's ``inner_steps``.

        Returns:
            an iterator over ``steps + 1`` params dicts (name -> tensor, as ``adapt``).

        Raises:
            ValueError: when called (not when the first value is drawn; ``check_task``):
                support_x or support_y not a tensor, or not ``[S, ...]`` with the same
                S >= 1 (an empty support set is named); a batch of tasks ``[B, S, ...]``
                with a built-in loss ("MAML adapts to ONE task"), as are class labels with
                ``loss="mse"`` and float targets with ``loss="ce"``; inputs in another
                float dtype (a float64 task for a float32 model) or on another device than
                the model; NaN or inf in either; ``steps`` not None or an int >= 0. When
                a step runs: with ``loss="ce"``, labels outside ``[0, C)`` (C: the model's
                outputs; ``cross_entropy``); a loss of the user's own that returns anything
                but a 0-dim floating tensor (``CheckedLoss``).
        """
        check_steps(steps)
        check_task(self._owner, self.inner.model, support_x, support_y,
                   self.inner.loss)
        net, lrs = split_lrs(self.model, dict(self.model.named_parameters()))
        self._check_late_head(support_x, net)
        return self.inner.test_path(net, support_x, support_y, steps, lr=lrs)

    def _check_late_head(self, support_x: torch.Tensor, net: Params | None = None) -> None:
        """Where the head is the default and adapts alone (ANIL) or starts at zero: once per
        learner, on one task's support set ``[S, ...]`` at ``net`` (None: the network's
        parameters, read only then), a head whose output another ``nn.Linear`` takes in is
        refused (``late_default_head``), and again at every later call."""
        if not (self._owner == "ANIL" or self.inner.head_init == "zero"):
            return
        if "_late_head" not in self.__dict__:
            if net is None:
                net = split_lrs(self.model, dict(self.model.named_parameters()))[0]
            self.__dict__["_late_head"] = late_default_head(
                self._owner, self.inner, net, support_x, getattr(self, "_head_named", None))
        if self.__dict__["_late_head"]:
            raise ValueError(self.__dict__["_late_head"])

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` of the network with ``params`` on ONE task's x
        ``[N, ...]``.

        Raises:
            ValueError: ``params`` with names the network does not have, or a tensor of
                another shape (but a zero head's class dimension), float dtype or device
                than the network's of that name (``check_params``); x on another device or
                in another float dtype than the network; with a built-in loss, predictions
                that are not ``[N, out]`` (x a batch of tasks: ``check_one_task_output``).
        """
        check_params(self._owner, self.inner.model, params, self._resizable())
        check_inputs(self._owner, self.inner.model, x=x)
        out = self.inner.fwd(params, x)
        check_one_task_output(self._owner, self.inner.loss, x, out)
        return out

    def _resizable(self) -> list[str]:
        """The adapted names whose class dimension may differ from the model's: the head of
        ``head_init="zero"``, sized to each task's ways."""
        return list(self.inner.head or []) if self.inner.head_init == "zero" else []

    def adapt_path_batched(self, support_x, support_y, steps: int | None = None) -> list[Params]:
        """All tasks of a batch at once under ``vmap``: params after 0..steps steps, each
        tensor with a leading task dim ``[B, ...]``. Inputs ``[B, S, ...]``. Detached.

        Raises:
            ValueError: inputs on another device or in another dtype than the network, with
                non-finite values (naming the tasks, ``check_finite_tasks``), or a network
                that vmap cannot run (``VmapUnsupported``: ``vmap_refusal``, or a forward
                pass that draws random numbers or changes a buffer in place); with
                ``batching="auto"`` the learner has then switched to the loop
                (``vmap_guard``): adapt the tasks one at a time (``ml.evaluate`` does).
        """
        check_inputs(self._owner, self.inner.model, support_x=support_x,
                     support_y=support_y)
        check_batched_support(self._owner, support_x, support_y)
        check_finite_tasks(self._owner, support_x=support_x, support_y=support_y)
        inner = labels_checked(self.inner, support_y)
        if len(support_x):
            self._check_late_head(support_x[0])
        with vmap_guard(self, self.inner.model):
            refusal = vmap_refusal(self.inner.model)
            if refusal:
                raise VmapUnsupported(refusal)
            with gradients_on():     # under no_grad / inference_mode too; ordinary tensors
                support_x, support_y = autograd_usable(support_x), autograd_usable(support_y)
                net, lrs = split_lrs(self.model, detach(dict(self.model.named_parameters())))
                start = self.inner.start(net, support_y)

                def run(sx, sy):
                    return list(inner.path(start, sx, sy, steps, create_graph=False,
                                           started=True, functional=True, lr=lrs))
                return [detach(p) for p in vmap_tasks(run, support_x, support_y)]

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``predict`` for ``[B, ...]``-batched params and x ``[B, N, ...]`` -> ``[B, N, out]``.

        Raises:
            VmapUnsupported: (a ValueError) a forward pass that vmap cannot run
                (``vmap_tasks``); with ``batching="auto"`` the learner has then switched to
                the loop (``vmap_guard``): score the tasks one at a time (``ml.evaluate``
                does).
        """
        with vmap_guard(self, self.inner.model):
            return vmap_tasks(self.predict, params, x)


class ScoresEitherWay:
    """The switch that Reptile and the solved heads share: ``transductive`` (True: a task's
    queries are normalised together by BatchNorm; False: each with its support set's
    statistics, ``metaloop.models.bn_stats``), changeable after construction, and the
    ``evaluation`` label that records and printed results carry.

    False is refused (ValueError naming the layers) for a ``model`` with torch BatchNorm
    layers that normalise with their batch's statistics (``batch_statistics_layers``): only
    metaloop's own ``BatchNorm`` takes the support set's, so the queries would still be
    scored together."""

    _transductive: bool = True

    @property
    def transductive(self) -> bool:
        """Whether a task's queries are scored together (see the class)."""
        return self._transductive

    @transductive.setter
    def transductive(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"transductive must be True or False, got {value!r}")
        layers = [] if value else batch_statistics_layers(getattr(self, "model", None))
        if layers:
            raise ValueError(f"transductive=False normalises the queries with the support "
                             f"set's statistics in metaloop.models.conv4.BatchNorm layers "
                             f"only, but {', '.join(layers[:3])}"
                             f"{' ...' if len(layers) > 3 else ''} would still normalise a "
                             f"task's queries together (each query's score would depend on "
                             f"the others); use metaloop's BatchNorm, or transductive=True")
        self._transductive = value

    @property
    def evaluation(self) -> str:
        """How queries are scored: "transductive" or "non-transductive"."""
        return "transductive" if self.transductive else "non-transductive"


class VmapUnsupported(ValueError):
    """``torch.func.vmap`` over tasks cannot run the model now: a layer it has no rule for or
    that it refuses in its current mode (``vmap_refusal``), or a forward pass that draws
    random numbers or changes a tensor it does not take as input in place
    (``vmap_tasks``, in place of torch's RuntimeError). The message names the problem and
    ``batching='loop'``. A learner whose batching is ``"auto"`` catches it, switches to the
    loop for this call and after (``vmap_guard``) and runs the call again there."""


def _vmap_size(args) -> int | None:
    """The size of the vmapped dimension: the first dimension of ``args``' first tensor."""
    for leaf in torch.utils._pytree.tree_leaves(args):
        if isinstance(leaf, torch.Tensor) and leaf.dim():
            return int(leaf.shape[0])
    return None


_BROADCAST = re.compile(r"output with shape \[([0-9, ]*)\] doesn't match the broadcast shape "
                        r"\[([0-9, ]*)\]")


def vmap_failure(error: RuntimeError, args=()) -> str | None:
    """The message of ``VmapUnsupported`` for torch's ``error`` raised under ``vmap_tasks``
    where it says that vmap cannot run the forward pass at all (the loop can), else None:

    * a random operation (``F.dropout`` called in ``forward``, ``torch.randn_like``, a
      dropout layer of the user's own): vmap's "randomness error mode";
    * an in-place change of a tensor the function does not take as input (a buffer such as
      a running average, ``self.ema.mul_(0.9)``): "would mutate a captured Tensor" under a
      grad transform, "inplace arithmetic" or "output with shape [D] doesn't match the
      broadcast shape [B, D]" (B the tasks) under vmap alone; an in-place or ``out=`` op
      into a tensor the tasks share ("use out-of-place operators": ``nn.Embedding(max_norm=
      ...)``; "out= or view ops": ``spectral_norm``'s power iteration in training mode).
    """
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    where = next((line for line in text.splitlines()[1:] if line.startswith("forward:")), "")
    said = f" (torch: {first}{'; ' + where if where else ''})"
    if "randomness error mode" in text or "called random operation" in text:
        return ("batching='vmap' cannot run the model's forward: it draws random numbers (a "
                "random operation such as F.dropout or torch.randn_like called in forward, "
                "not an nn.Dropout layer), which torch.func.vmap over tasks does not allow; "
                "use batching='loop' or 'auto' (the loop for such a model), or run the random "
                "operation only in training mode and put the model in eval mode" + said)
    if first.startswith("vmap: It looks like you're") and (
            "calling .item()" in first or "data-dependent control flow" in first):
        return ("batching='vmap' cannot run the model's forward: it reads a tensor's value "
                "(.item(), float(t), or a Python if/while on a tensor), which torch.func.vmap "
                "over tasks does not allow; use batching='loop' or 'auto' (the loop for such a "
                "model), or compute it with torch operations (torch.where)" + said)
    inplace = ("mutate a captured Tensor" in text or "inplace arithmetic" in text
               # an in-place op on a tensor shared by the tasks (nn.Embedding(max_norm=...)
               # renormalises its weight), an out= op into one (spectral_norm's power
               # iteration in training mode)
               or "use out-of-place operators" in first
               or "doesn't work on out= or view ops" in first)
    if not inplace:
        m = _BROADCAST.search(first)
        size = _vmap_size(args)
        if m and size is not None:
            out = [int(v) for v in m.group(1).replace(" ", "").split(",") if v]
            wide = [int(v) for v in m.group(2).replace(" ", "").split(",") if v]
            inplace = wide == [size, *out]          # a per-task value into one tensor
    if inplace:
        op = re.search(r"\((aten::[A-Za-z0-9_.]+)\)", first)
        return ("batching='vmap' cannot run the model's forward: it changes a tensor in place "
                "that it does not take as input or that the tasks share (a buffer, e.g. a "
                "running average updated with mul_/add_, or an nn.Embedding's weight "
                f"renormalised by max_norm{': ' + op.group(1) if op else ''}), one tensor "
                "for a whole "
                "batch of tasks, which torch.func.vmap over tasks does not allow; use "
                "batching='loop' or 'auto' (the loop for such a model)" + said)
    return None


def vmap_tasks(fn, *args):
    """``torch.func.vmap(fn)(*args)``, with torch's scaled-dot-product attention (in a model
    of your own) on its math kernel, which vmap batches: the fused kernels have no batching
    rule, so torch would loop over the tasks and warn of "a performance drop"; and with
    ``nn.MultiheadAttention``'s fused eval-mode path off (``no_mha_fastpath``). Models
    without attention are unaffected. The kernel choice is process-wide while the call
    runs. A torch without ``torch.nn.attention`` (before 2.3) runs the plain vmap: the
    same result, looped over the tasks for attention.

    Raises:
        VmapUnsupported: (a ValueError) in place of torch's RuntimeError where vmap cannot
            run the forward pass at all (``vmap_failure``: a random operation, an in-place
            change of a buffer, a value read), naming it and ``batching='loop'``; and in
            place of a loss of the user's own that read a value (``LossReadsValue``), with
            its message.
    """
    from metaloop.func.losses import LossReadsValue
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        math_kernel = sdpa_kernel([SDPBackend.MATH])
    except ImportError:                                    # an older torch
        math_kernel = None
    try:
        with no_mha_fastpath():
            if math_kernel is None:
                return torch.func.vmap(fn)(*args)
            with math_kernel:
                return torch.func.vmap(fn)(*args)
    except LossReadsValue as e:
        raise VmapUnsupported(str(e)) from e
    except RuntimeError as e:
        why = vmap_failure(e, args)
        if why is None:
            raise
        raise VmapUnsupported(why) from e


@contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """While active, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` in eval mode
    run their composite path, not torch's fused "fast path" (``torch.backends.mha``; set back
    after). Under vmap those layers cannot see that their weights require grad, take the
    fused kernels, which have no derivative ("derivative for
    aten::_native_multi_head_attention is not implemented" at the meta-gradient), and the
    composite path gives the loop's results. A torch without the switch runs as it is."""
    mha = getattr(torch.backends, "mha", None)
    # (not while torch.compile traces: the switch would break the graph at every call)
    if (mha is None or not hasattr(mha, "set_fastpath_enabled")
            or torch.compiler.is_compiling()):
        yield
        return
    with _MHA_LOCK:                 # the first of overlapping calls (threads) saves it,
        if _MHA_OFF[0] == 0:        # the last sets it back
            _MHA_OFF[1] = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
        _MHA_OFF[0] += 1
    try:
        yield
    finally:
        with _MHA_LOCK:
            _MHA_OFF[0] -= 1
            if _MHA_OFF[0] == 0:
                mha.set_fastpath_enabled(_MHA_OFF[1])


_MHA_LOCK = threading.Lock()
_MHA_OFF: list = [0, True]          # [calls inside no_mha_fastpath, the setting before them]


@contextmanager
def vmap_guard(learner, model: nn.Module) -> Iterator[None]:
    """Around a call of ``learner``'s that runs ``model`` under vmap. Where the learner's
    ``batching`` came from ``"auto"`` (its ``_auto_vmap``), a ``VmapUnsupported`` inside
    (``vmap_tasks``, or a ``vmap_refusal`` raised as one) first puts back the model's
    buffers that the failed attempt changed (in place, or a buffer attribute assigned
    anew: a forward that updates a running average before vmap stops it), then switches
    the learner to the loop for good (``learner.batching = "loop"``), and is raised on: the
    caller, seeing ``batching`` is no longer ``"vmap"``, runs the call again on the loop
    (``rerun_on_loop``). A failed vmap call draws no random numbers (vmap refuses the first
    random operation before it draws) and changes no parameter, so the rerun gives the
    loop's numbers. A vmap call that succeeds but changed a buffer (vmap runs the change
    once for the whole batch, the loop once per task, and a buffer assigned under vmap holds
    a tensor that escaped it) is undone and run again on the loop the same way.

    Cost: each buffer's slot and version counter are read at every call; their values are
    copied (to undo an in-place change) only until a call has run without changing any
    buffer (``learner._vmap_clean``), since a forward that changes buffers does so from its
    first call. With an explicit ``"vmap"`` nothing is read or checked and an error goes on
    as it is."""
    if not getattr(learner, "_auto_vmap", False):
        yield
        return
    copy_values = not getattr(learner, "_vmap_clean", False)
    slots = [(m._buffers, name, b, _version(b), b.clone() if copy_values else None)
             for m in _submodules(model) for name, b in m._buffers.items()
             if b is not None and _version(b) is not None]           # not inference tensors

    def changed() -> list[tuple]:
        return [s for s in slots if s[0].get(s[1]) is not s[2] or _version(s[2]) != s[3]]

    def back_to_loop(moved: list[tuple]) -> None:
        with torch.no_grad():
            for where, name, b, version, was in moved:
                where[name] = b                              # a buffer assigned anew
                if _version(b) != version and was is not None:
                    b.copy_(was)                             # changed in place
        learner.batching = "loop"
        learner._auto_vmap = False
    try:
        yield
    except VmapUnsupported:
        back_to_loop(changed())
        raise
    moved = changed()
    if moved:
        back_to_loop(moved)
        raise VmapUnsupported(f"batching='vmap' runs the change of the buffers "
                              f"{[name for _, name, *_ in moved][:3]} once for the whole "
                              f"batch of tasks, the loop once per task; use batching='loop' "
                              f"or 'auto'")
    learner._vmap_clean = True


def _version(t: torch.Tensor) -> int | None:
    """``t``'s version counter (bumped by every in-place change), None where it has none
    (an inference tensor)."""
    try:
        return t._version
    except RuntimeError:
        return None


def rerun_on_loop(learner, call, *args):
    """``call(*args)``, and once more where it raised ``VmapUnsupported`` after ``learner``'s
    "auto" batching switched to the loop (``vmap_guard``); raised on otherwise (an explicit
    ``batching="vmap"``)."""
    try:
        return call(*args)
    except VmapUnsupported:
        if getattr(learner, "batching", "loop") == "vmap":
            raise
    return call(*args)


def batch_statistics_layers(model: nn.Module | None) -> list[str]:
    """torch's BatchNorm layers of ``model`` that normalise with the statistics of the batch
    they are given (training mode, or no running statistics), as ``"name (Type)"``:
    non-transductive scoring cannot give them the support set's statistics
    (``metaloop.models.bn_stats`` does that for metaloop's own ``BatchNorm``)."""
    if not isinstance(model, nn.Module):
        return []
    return named_layers(model, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)
                        and (m.training or not m.track_running_stats))


# torch layers that torch.func.vmap cannot run at all ("Batching rule not implemented for
# aten::lstm.input"); nn.RNNCell and nn.GRUCell run (on a slow fallback).
NO_VMAP_RULE = (nn.RNNBase, nn.LSTMCell)


# the layers that ``vmap_refusal`` may refuse, by their kind alone (the rest never)
_VMAP_SUSPECTS = (*NO_VMAP_RULE, nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def _submodules(model: nn.Module) -> list[nn.Module]:
    """``list(model.modules())`` by a plain walk of the ``_modules`` registries (each
    module once), breadth first: about 2x cheaper than torch's recursive generators, for the
    checks that run at every meta-batch."""
    found = [model]
    seen = {id(model)}
    for m in found:                         # grows while it is read: breadth first
        for child in m._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                found.append(child)
    return found


def vmap_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot run under ``torch.func.vmap`` over tasks now, or None, naming the
    layers (torch's own error would name neither them nor what to do):

    * torch's BatchNorm/InstanceNorm layers in training mode with ``track_running_stats``
      update their running statistics in place on every call, which vmap refuses (one
      unbatched buffer for a batch of tasks);
    * dropout layers in training mode draw random numbers, which vmap refuses by default;
    * torch's recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.LSTMCell``,
      ``NO_VMAP_RULE``) have no vmap batching rule at all.

    The first two are read from the layers' current ``training`` flags (in eval mode neither
    applies). Nothing is cached: every call walks the model's registered submodules (its
    ``_modules``, as ``model.modules()`` does), so a layer added or switched to training
    since the last call is found; the walk is a plain loop and only the layers of those
    kinds (``_VMAP_SUSPECTS``) are looked at further.
    """
    def dropout_on(m: nn.Module) -> bool:
        return isinstance(m, nn.modules.dropout._DropoutNd) and m.training

    if not any(isinstance(m, NO_VMAP_RULE) or updates_running_stats(m) or dropout_on(m)
               for m in _submodules(model) if isinstance(m, _VMAP_SUSPECTS)):
        return None                                    # every meta-batch: the rule
    rnn = named_layers(model, lambda m: isinstance(m, NO_VMAP_RULE))
    stats = named_layers(model, updates_running_stats)
    drop = named_layers(model, dropout_on)
    if rnn:
        return (f"batching='vmap' cannot run {', '.join(rnn[:3])}"
                f"{' ...' if len(rnn) > 3 else ''}: torch.func.vmap has no batching rule for "
                f"torch's recurrent layers; use batching='loop' or 'auto' (the loop for such "
                f"a model)")
    if stats:
        return (f"batching='vmap' cannot run {', '.join(stats[:3])}"
                f"{' ...' if len(stats) > 3 else ''}: in training mode with "
                f"track_running_stats=True it updates its running statistics in place, which "
                f"torch.func.vmap over tasks does not allow; use batching='loop' or 'auto', "
                f"or build the layers with track_running_stats=False (batch statistics only, "
                f"as metaloop.models.conv4.BatchNorm)")
    if drop:
        return (f"batching='vmap' cannot run {', '.join(drop[:3])}"
                f"{' ...' if len(drop) > 3 else ''}: in training mode dropout draws random "
                f"numbers, which torch.func.vmap over tasks does not allow; use "
                f"batching='loop' or 'auto' (the loop for such a model), or put the dropout "
                f"layers in eval mode")
    return None


def check_meta_parameters(model: nn.Module) -> None:
    """Every parameter of ``model`` can be a meta-parameter: it is initialised (not a lazy
    module's ``UninitializedParameter``) and requires grad.

    Every learner meta-learns all of ``model.named_parameters()`` (the training loop's
    optimiser steps each of them) and chooses what adapts by name (``adapt``, ``head``),
    not by ``requires_grad``: a frozen parameter would fail deep in autograd (MAML, ANIL,
    the solved heads) or be adapted and meta-trained anyway (Reptile).

    Raises:
        ValueError: naming the parameters (at most three) and what to do.
    """
    named = list(model.named_parameters())
    lazy = [n for n, p in named if isinstance(p, nn.parameter.UninitializedParameter)]
    frozen = [n for n, p in named if n not in lazy and not p.requires_grad]

    def some(names: list[str]) -> str:
        return f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
    if lazy:
        raise ValueError(f"{type(model).__name__} has uninitialised parameters {some(lazy)} "
                         f"(a lazy module's, whose shapes come from the first input); run "
                         f"the model once on an example input, model(x), before building "
                         f"the learner")
    if frozen:
        raise ValueError(f"{type(model).__name__} has parameters with requires_grad=False: "
                         f"{some(frozen)}; a learner meta-learns every parameter and "
                         f"chooses what adapts by name, not by requires_grad: set "
                         f"requires_grad=True (adapt= chooses what the inner loop adapts), "
                         f"or make the frozen tensors buffers "
                         f"(metaloop.meta.lora_meta.trainable_only(model, keep))")


def resolve_batching(batching: str, model: nn.Module, threads: bool = False) -> str:
    """"loop", "vmap" or "threads" from "loop" | "vmap" | "threads" | "auto" (vmap for
    plain MLP-like models, else loop: for convolutions, normalisation layers, and what vmap
    cannot run, ``vmap_refusal``). "threads" only where the learner supports it
    (``threads``), for models without buffers or dropout in training mode
    (``check_threadable``); "vmap" not for what ``vmap_refusal`` names
    (torch BatchNorm layers that update running statistics, dropout in training mode,
    recurrent layers).
    Every learner resolves its batching when it is built, so this is also where a model
    whose parameters cannot be meta-parameters is refused (``check_meta_parameters``).
    What is known only when the model runs is decided there: a learner whose "auto" chose
    vmap switches to the loop at the first call that vmap cannot run exactly
    (``vmap_guard``: a forward that draws random numbers or changes a buffer in place, a
    dropout layer switched to training mode since), where "vmap" raises
    ``VmapUnsupported``.

    Raises:
        ValueError: an unknown ``batching``, one the model cannot run, or a parameter that
            cannot be a meta-parameter, naming why.
    """
    check_meta_parameters(model)
    allowed = ("loop", "vmap", "threads", "auto") if threads else ("loop", "vmap", "auto")
    if batching not in allowed:
        raise ValueError(f"batching must be one of {', '.join(map(repr, allowed))}, "
                         f"got {batching!r}")
    if batching == "threads":
        check_threadable(model)
    if batching == "vmap":
        refusal = vmap_refusal(model)
        if refusal:
            raise ValueError(refusal)
    if batching != "auto":
        return batching
    heavy = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.LayerNorm)
    plain = not any(isinstance(m, heavy) or "Norm" in type(m).__name__ for m in model.modules())
    return "vmap" if plain and vmap_refusal(model) is None else "loop"


def prefer_vmap(learner, model: nn.Module) -> None:
    """Switch ``learner``, built with ``batching="auto"`` around ``model``, to batch its tasks
    with vmap, keeping what "auto" does where vmap cannot run a call: the switch to the loop
    for good (``vmap_guard``; second-order MAML's ``_first_use`` for a normalisation kernel in
    the inner gradient). ``metaloop.build.build_learner`` does this on CUDA, where vmap is the
    faster for convolutions too, which the learners' own "auto" gives the loop (the CPU's
    faster choice). An explicit ``batching="vmap"`` raises in those cases instead.

    Nothing changes where vmap cannot run ``model`` now (``vmap_refusal``), where the learner
    refuses vmap for good (second-order MAML's ``_vmap_refusal``), or where its inner loop is
    recomputed (``recompute_inner_loop``, which has no vmap rule)."""
    if (vmap_refusal(model) is not None or getattr(learner, "_vmap_refusal", None)
            or getattr(learner, "recompute_inner_loop", False)):
        return
    learner.batching = "vmap"
    learner._auto_vmap = True           # after the setter, which sets it for "auto" only


@contextmanager
def state_kept(model: nn.Module, net: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Run a probing forward pass of ``model`` (at ``net``) that leaves no trace: torch's
    random state (CPU, and the CUDA devices ``net`` is on) is forked, and every buffer is put
    back as it was afterwards, one changed in place or assigned anew (dropout draws, a
    BatchNorm's running statistics)."""
    devices = sorted({t.device.index or 0 for t in net.values() if t.device.type == "cuda"})
    buffers = [(b, b.clone()) for b in model.buffers()]
    slots = [(m._buffers, name, b) for m in model.modules() for name, b in m._buffers.items()]
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for where, name, b in slots:
                where[name] = b
            for b, was in buffers:
                b.copy_(was)


def late_default_head(owner: str, adapter: SGDAdapter, net: Params, sx: torch.Tensor,
                      named: list[str] | None) -> str | None:
    """Why ``adapter``'s default head is not its model's output layer, or None: with no
    ``nn.Linear`` called ``head``, the default is the last ``nn.Linear`` *registered*
    (``last_linear_names``), and a model that registers its output layer first (``self.fc``
    before ``self.body``) would adapt (ANIL) or zero a hidden layer, silently. Read from one
    forward pass of one task's support set ``sx [S, ...]`` at ``net`` (outside vmap; the
    random state and the buffers left as they were), in which only the head's output
    carries a gradient: an ``nn.Linear`` whose input depends on it takes the head's output
    in, so the head is a hidden layer, and is named. A linear skip path beside the head
    (``out(body(x)) + skip(x)``) does not take it in and is not refused. A head named with
    ``head=`` (``named``) is the user's choice and never refused; a forward pass that fails
    is left to the call."""
    model = adapter.model
    if named is not None or isinstance(getattr(model, "head", None), nn.Linear):
        return None
    layer = last_linear_module(model)
    if layer is None:
        return None
    head, fed = model.get_submodule(layer), []

    def mark(module, inputs, out):          # the head's output: the one tensor with a grad
        return out.detach().requires_grad_(True) if isinstance(out, torch.Tensor) else out

    def check(name):
        def pre(module, inputs):
            if any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
                fed.append(name)
        return pre

    hooks = [head.register_forward_hook(mark)]
    hooks += [m.register_forward_pre_hook(check(n)) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and m is not head]
    try:
        with torch.enable_grad(), state_kept(model, net):
            adapter.fwd({n: t.detach() for n, t in net.items()}, autograd_usable(sx))
    except (ValueError, RuntimeError):
        return None
    finally:
        for h in hooks:
            h.remove()
    if not fed:
        return None
    out = fed[-1]
    names = [f"{out}.{k}" for k, _ in model.get_submodule(out).named_parameters()]
    current = [f"{layer}.{k}" for k, _ in head.named_parameters()]
    return (f"{owner} took {layer!r} as the head ({type(model).__name__} has no nn.Linear "
            f"called head, so the default is the last nn.Linear registered), but "
            f"{list(dict.fromkeys(fed))[:3]} take its output in: the head would be a hidden "
            f"layer, not the output layer. Name the head: head={names} (or head={current} "
            f"to keep {layer!r})")


def check_batch(batch, model: nn.Module | None = None, loss=None,
                params: Mapping[str, torch.Tensor] | None = None) -> TaskBatch:
    """``batch`` if it is a TaskBatch whose tensors suit ``model`` (``check_inputs``) and,
    for a built-in ``loss`` name, whose labels are that loss's kind: int64 class labels for
    "ce", float regression targets for "mse" (cross-entropy would read float targets ``[B,
    S, out]`` as class probabilities: with one output its value is 0 and every gradient
    zero, and meta-training would run without learning anything).

    ``params``: ``model``'s parameters as ``params_of(model)`` gives them, where the caller
    has them: a batch that plainly suits them (``_suits``) is then not checked again.

    Raises:
        ValueError: not a TaskBatch, one on another device or in another float dtype than
            the model's parameters, or labels of the other kind than ``loss`` takes.
    """
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"expected a metaloop.TaskBatch, got {type(batch).__name__}")
    if model is not None and not (params is not None and _suits(batch, params)):
        check_inputs("TaskBatch", model, support_x=batch.support_x, support_y=batch.support_y,
                     query_x=batch.query_x, query_y=batch.query_y)
    kind = {"ce": True, "cross_entropy": True, "mse": False}.get(loss) \
        if isinstance(loss, str) else None
    if kind is not None and batch.is_classification != kind:
        held = "int64 class labels" if batch.is_classification else \
            f"float regression targets {list(batch.support_y.shape)}"
        needs = "int64 class labels" if kind else "float regression targets"
        raise ValueError(f"loss={loss!r} needs {needs}, but this TaskBatch holds {held}; "
                         f"use loss={'mse' if kind else 'ce'!r}")
    return batch


def _suits(batch: TaskBatch, params: Mapping[str, torch.Tensor]) -> bool:
    """True only where ``check_inputs`` passes ``batch`` for the model of ``params`` (its
    ``named_parameters()``): every tensor on the first parameter's device, the model in
    one float dtype and the inputs in it. False otherwise (``check_inputs`` then decides
    and names the problem), also where it would pass in another way (no parameters, int
    inputs to an embedding). The same reads as ``check_inputs`` without its walk of the
    model and its keyword arguments."""
    dtype = device = None
    for p in params.values():
        if device is None:
            device = p.device
        if p.is_floating_point():
            if dtype is None:
                dtype = p.dtype
            elif p.dtype != dtype:
                return False
    if dtype is None:
        return False
    for t in (batch.support_x, batch.query_x):
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.device != device:
            return False
    return all(isinstance(t, torch.Tensor) and t.device == device
               for t in (batch.support_y, batch.query_y))


def autograd_batch(batch: TaskBatch) -> TaskBatch:
    """``batch`` with ordinary copies of the inference tensors it holds (tensors made under
    ``torch.inference_mode()``, which autograd cannot save for a backward pass:
    ``autograd_usable``); ``batch`` itself when it holds none. Call it inside
    ``gradients_on()``."""
    fields = (batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.classes)
    if not any(isinstance(t, torch.Tensor) and t.is_inference() for t in fields):
        return batch
    return _unchecked_batch(*(autograd_usable(t) for t in fields))   # checked when made


def check_flag(name: str, value: object) -> bool:
    """``value`` as a bool: True, False, a numpy bool, an integer 0 / 1 (numpy's too), or a
    one-element bool or integer tensor holding one of those (a string such as ``"False"``
    would otherwise read as True).

    Raises:
        ValueError: naming ``name`` and the value.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not (
            value.is_floating_point() or value.is_complex()):
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if not isinstance(value, (str, bytes)):
        try:
            index = operator.index(value)  # type: ignore[arg-type]  # int, numpy ints
        except TypeError:
            index = None
        if index in (0, 1):
            return bool(index)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def check_steps(steps: object) -> None:
    """``steps`` for ``adapt`` / ``adapt_path``: None (the learner's default) or an int >= 0,
    as the SGD learners take it (``SGDAdapter.path``), also where it is not used (a solved
    head).

    Raises:
        ValueError: a negative number, a float or a bool, naming the value.
    """
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                              or steps < 0):
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")


def check_inputs(owner: str, model: nn.Module, **tensors: torch.Tensor) -> None:
    """Each named tensor must be on the device of ``model``'s parameters, and a floating
    input (a name ending in ``x``) in their dtype (the forward pass would otherwise fail
    deep inside torch). Inputs must be floating point, as a TaskBatch's are (uint8 images
    or int token ids would fail in the first layer), unless the model has an embedding
    layer of its own. Labels and targets are checked for their device only; a model
    without parameters, or with several float dtypes, is not checked for dtype.

    Raises:
        ValueError: naming ``owner``, the tensor, and both devices or dtypes; or a
            ``model`` that is not a ``torch.nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"{owner}: model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    if not params:
        return
    device = params[0].device
    dtypes = {p.dtype for p in params if p.is_floating_point()}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{owner}: {name} is on {t.device} but the model's parameters are "
                             f"on {device}; move one of them (batch.to(device) or "
                             f"model.to(device))")
        if name.endswith("x") and not t.is_floating_point() and (t.is_complex() or not any(
                isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())):
            raise ValueError(f"{owner}: {name} is {t.dtype} but inputs must be real floating "
                             f"point, in the model's dtype {'/'.join(map(str, dtypes))} "
                             f"(e.g. {name}.float() / 255 for uint8 images)")
        if name.endswith("x") and t.is_floating_point() and len(dtypes) == 1 \
                and t.dtype not in dtypes:
            (dtype,) = dtypes
            raise ValueError(f"{owner}: {name} is {t.dtype} but the model's parameters are "
                             f"{dtype}; cast one of them (batch.to(dtype={dtype}) or "
                             f"model.to({t.dtype}))")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_batched_support(owner: str, support_x: torch.Tensor, support_y: torch.Tensor
                          ) -> None:
    """Support sets ``[B, S, ...]`` and their labels ``[B, S]`` or targets ``[B, S, out]``
    for ``adapt_path_batched``: the same B >= 1 and S >= 1 (only shapes are read).

    Raises:
        ValueError: naming both shapes (vmap's own error names neither argument).
    """
    if support_x.dim() < 2 or support_y.dim() < 2 \
            or support_x.shape[:2] != support_y.shape[:2]:
        raise ValueError(f"{owner}: adapt_path_batched needs support_x [B, S, ...] and "
                         f"support_y [B, S] (labels) or [B, S, out] (targets) with the same B "
                         f"and S, got {_shape(support_x)} and {_shape(support_y)} (for ONE "
                         f"task use adapt)")
    if support_x.shape[0] == 0 or support_x.shape[1] == 0:
        raise ValueError(f"{owner}: adapt_path_batched got no tasks or an empty support set: "
                         f"support_x {_shape(support_x)} needs B >= 1 and S >= 1")


def check_finite_tasks(owner: str, **tensors: torch.Tensor) -> None:
    """Batched support tensors ``[B, S, ...]`` (float ones) with finite values, for
    ``adapt_path_batched``: one ``isfinite().all()`` over each whole batch; the tasks are
    found only when it fails. Inside ``valid_by_construction()`` no value is read.

    Raises:
        ValueError: as ``check_task``'s, naming the argument, its shape and the tasks (index
            in the batch) with NaN or inf.
    """
    if values_trusted():                  # valid by construction: no read back to the host
        return
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
            tasks = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            raise ValueError(f"{owner}: {name} {_shape(t)} has non-finite values (NaN or "
                             f"inf) in task{'s' if len(bad) > 1 else ''} {tasks} of the "
                             f"batch; the adapted parameters would be NaN")


_FINITE_GUARDED: ContextVar[bool] = ContextVar("metaloop_finite_guarded", default=False)


@contextmanager
def finite_guarded() -> Iterator[None]:
    """Within it, ``check_finite_batch`` reads nothing: ``metaloop.train`` enters it for its
    steps, whose own non-finite guard stops a run on a NaN or inf meta-loss or meta-gradient
    (from the data or from a divergence alike), naming the iteration and keeping the last
    good checkpoint (``NonFiniteLossError``)."""
    token = _FINITE_GUARDED.set(True)
    try:
        yield
    finally:
        _FINITE_GUARDED.reset(token)


def check_finite_batch(owner: str, batch: TaskBatch) -> None:
    """A meta-batch's float tensors (inputs, regression targets) with finite values, for
    ``meta_loss`` / ``meta_gradient`` (MAML's family, Reptile): one NaN in one task's
    support set would make the whole meta-gradient NaN without a word. Read where it costs
    no host synchronisation: tensors on the CPU only (on a GPU the training step reads
    nothing back, and this check would; there the values are not checked), not inside
    ``valid_by_construction()`` or ``finite_guarded()``.

    Raises:
        ValueError: naming the tensor, its shape and the tasks (index in the batch) with
            NaN or inf.
    """
    if values_trusted() or _FINITE_GUARDED.get():
        return
    for name in ("support_x", "support_y", "query_x", "query_y"):
        t = getattr(batch, name)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type == "cpu" \
                and t.dim() >= 1 and not math.isfinite(t.sum().item()) \
                and not bool(torch.isfinite(t).all()):  # a finite sum: all finite (one pass)
            bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero().flatten()
            tasks = ", ".join(map(str, bad[:5].tolist())) + (", ..." if len(bad) > 5 else "")
            raise ValueError(f"{owner}: the TaskBatch's {name} {_shape(t)} has non-finite "
                             f"values (NaN or inf) in task{'s' if len(bad) > 1 else ''} "
                             f"{tasks}; the meta-loss would be NaN (and, from a support set "
                             f"or MAML's queries, every meta-gradient entry)")


def check_task(owner: str, model: nn.Module, support_x, support_y, loss=None) -> None:
    """ONE task's support set for ``adapt``: tensors ``[S, ...]`` with the same S >= 1, on
    the model's device and in its dtype, finite; with a built-in ``loss`` ("ce"/"mse"), labels
    int64 ``[S]`` or targets float ``[S, out]``.

    Raises:
        ValueError: naming the argument and its shape, dtype or device; a batch of tasks
            (``[B, S, ...]``) is named as such.
    """
    check_inputs(owner, model, support_x=support_x, support_y=support_y)
    if support_x.dim() == 0 or support_y.dim() == 0:
        raise ValueError(f"{owner}: support_x and support_y must be [S, ...], got "
                         f"{_shape(support_x)} and {_shape(support_y)}")
    if support_x.shape[0] != support_y.shape[0]:
        raise ValueError(f"{owner}: support_x {_shape(support_x)} and support_y "
                         f"{_shape(support_y)} differ in the number of examples S")
    if support_x.shape[0] == 0:
        raise ValueError(f"{owner}: the support set is empty (S = 0): nothing to adapt to")
    for name, t in (("support_x", support_x), ("support_y", support_y)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{owner}: {name} {_shape(t)} has non-finite values (NaN or "
                             f"inf); the adapted parameters would be NaN")
    want = {"ce": 1, "cross_entropy": 1, "mse": 2}.get(loss) if isinstance(loss, str) else None
    if want is not None and support_y.dim() != want:
        what = "int64 labels [S]" if want == 1 else "float targets [S, out]"
        raise ValueError(f"{owner} adapts to ONE task: support_y must be {what}, got "
                         f"{_shape(support_y)} (for a TaskBatch use batch.task(i), or "
                         f"adapt_path_batched for all its tasks)")


def labels_checked(adapter: SGDAdapter, *labels: torch.Tensor) -> SGDAdapter:
    """``adapter`` for a ``torch.func.vmap`` over tasks whose class labels (``[B, S]``,
    ``[B, Q]``) are checked as on the loop path.

    ``cross_entropy`` refuses labels outside ``[0, C)`` (C: the model's outputs) only outside
    a ``torch.func`` transform, where it can read them; under vmap an out-of-range label
    would fail deep inside torch ("index 3 is out of bounds for dimension 2"). So the labels'
    range is read here, before vmap, once for the whole batch (the loop reads it per task
    and step), and the returned adapter's loss compares it with C, a static shape, on its
    first call. Same conditions as ``cross_entropy``'s check: the built-in cross-entropy
    loss, labels on the CPU (elsewhere the read would cost a device synchronisation), and
    not inside ``valid_by_construction()``.

    Returns:
        ``adapter`` itself where nothing is to check (another loss, regression targets, a
        zero head, which is sized to the labels); else a shallow copy with a checking loss.

    Raises:
        ValueError (from the returned adapter's loss): ``cross_entropy``'s "labels must lie
            in [0, C=...)", naming the offending label.
    """
    if adapter.loss_fn is not cross_entropy or adapter.head_init == "zero" or values_trusted():
        return adapter
    ys = [y for y in labels if isinstance(y, torch.Tensor) and not y.is_floating_point()
          and y.numel() and y.device.type == "cpu"]
    if not ys:
        return adapter
    lo, hi = min(int(y.min()) for y in ys), max(int(y.max()) for y in ys)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_predictions("cross_entropy", logits)
        c = logits.shape[-1]                        # static under vmap: no data-dependent flow
        if lo < 0 or hi >= c:
            raise ValueError(f"cross_entropy: labels must lie in [0, C={c}) (C: the model's "
                             f"outputs), found {lo if lo < 0 else hi}")
        return cross_entropy(logits, y)

    checked = copy.copy(adapter)
    checked.loss_fn = loss_fn
    return checked


def check_params(owner: str, model: nn.Module, params, resizable: Sequence[str] = ()) -> None:
    """``params`` for ``predict``: a dict whose names are all ``model``'s parameters or
    buffers (the model's own tensors fill in the rest, so a misnamed entry, e.g. with a
    wrapper's prefix, would be ignored without a word), each of the shape, float dtype and
    device of the model's tensor of that name (torch would broadcast a mis-shaped bias and
    return wrong predictions without a word).

    Args:
        owner: the learner's name in the messages.
        model: the network.
        params: name -> tensor, as ``adapt`` returns them.
        resizable: names whose first (output) dimension may differ from the model's: a zero
            head (``head_init="zero"``) has one row per class of the task, not of the model.
            They must agree with each other on it (weight ``[C, D]``, bias ``[C]``).

    Raises:
        ValueError: not a mapping, names the model does not have, or a tensor on another
            device, in another float dtype or of another shape than the model's tensor of
            that name (naming both).
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{owner}: params must be a dict name -> tensor (from adapt), got "
                         f"{type(params).__name__}")
    unknown = unknown_names(model, params.keys())    # the names forward's check caches
    if unknown:
        known = sorted(tensor_names(model))
        raise ValueError(f"{owner}: params has names the model does not have: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}; pass the dict from adapt() "
                         f"(the model's names include {known[:3]})")
    mismatch = mismatched(model, params, shapes=False)
    if mismatch:
        raise ValueError(f"{owner}: {mismatch}; pass the dict from adapt() unchanged, or cast "
                         f"the model (model.to(...))")
    own: dict[str, torch.Tensor] = dict(model.named_parameters())
    own.update(model.named_buffers())
    rows: dict[str, int] = {}                 # resizable name -> its first (class) dimension
    for name, t in params.items():
        ref = own.get(name)
        if not isinstance(t, torch.Tensor) or ref is None:
            continue
        if name in resizable and t.dim() == ref.dim() >= 1 and t.shape[1:] == ref.shape[1:]:
            rows[name] = t.shape[0]
        elif t.shape != ref.shape:
            free = " (but its first dimension, the task's classes)" if name in resizable else ""
            raise ValueError(f"{owner}: params[{name!r}] is {_shape(t)} but the model's "
                             f"tensor of that name is {_shape(ref)}, and must have its "
                             f"shape{free}; pass the dict from adapt() unchanged")
    if len(set(rows.values())) > 1:
        raise ValueError(f"{owner}: the head's tensors disagree on the number of classes: "
                         f"{', '.join(f'{n} has {c} rows' for n, c in rows.items())}; pass "
                         f"the dict from adapt() unchanged")


def task_metrics(out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """loss, and accuracy for classification (out ``[Q, C]``, y int64 ``[Q]``), as detached
    0-dim tensors on the model's device: reading them is left to whoever logs them, so a
    CUDA training step needs no host synchronisation (``float(v)`` gives the number)."""
    m = {"loss": loss.detach()}
    if not y.is_floating_point():
        m["accuracy"] = accuracy(out.detach(), y)
    return m


def batch_metrics(out: torch.Tensor, y: torch.Tensor, losses: torch.Tensor,
                  mean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``mean_metrics`` of every task's ``task_metrics`` at once, for tasks run together
    (``vmap``): out ``[B, Q, C]`` (or ``[B, Q, out]``), y ``[B, Q]`` (or ``[B, Q, out]``),
    losses ``[B]``, and their ``mean`` where the caller has it (one operation less per
    step). Each task has Q queries, so the accuracy over all B * Q is the mean of the
    tasks' accuracies; no per-task tensors are made (a Python loop over B tasks cost more
    than a small network's whole step)."""
    m = {"loss": (losses.mean() if mean is None else mean).detach()}
    if not y.is_floating_point():
        m["accuracy"] = accuracy(out.detach(), y)
    return m


def mean_metrics(per_task: list[dict]) -> dict:
    """The mean of each metric over tasks (tensors stay tensors, on their device)."""
    return {k: sum(m[k] for m in per_task) / len(per_task) for k in per_task[0]}


def grads_to_dict(names, grads, params) -> dict[str, torch.Tensor]:
    """autograd.grad output (None for unused) -> name -> tensor with zeros for None.

    Contiguous like the parameters (with channels-last inputs, e.g. a user's, conv weight
    gradients come back in a channels-last layout).
    """
    return {n: torch.zeros_like(params[n]) if g is None else g.contiguous()
            for n, g in zip(names, grads)}


def accumulate(total: dict | None, grads: dict, scale: float) -> dict:
    if total is None:
        return {k: g * scale for k, g in grads.items()}
    for k, g in grads.items():
        total[k].add_(g, alpha=scale)
    return total
