"""Losses (means over examples) and metrics, by name."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metaloop.tasks.batch import values_trusted

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_predictions(fn: str, pred: object) -> None:
    """The model's output must be one tensor: a model of the user's own whose forward returns
    a tuple or dict (``(logits, features)``, a Hugging Face ``ModelOutput``) would otherwise
    fail with an AttributeError deep in the loss."""
    if not isinstance(pred, torch.Tensor):
        raise ValueError(f"{fn}: the model's output must be one tensor of predictions [N, "
                         f"out], got {type(pred).__name__}; make the model's forward return "
                         f"its predictions alone (wrap it in a module that picks them)")


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements: pred, target ``[N, out]``.

    Raises:
        ValueError: pred not a tensor (a model returning a tuple or dict); target not a
            float tensor of pred's shape (torch would broadcast ``[N, 1]`` against ``[N]`` to
            ``[N, N]`` and return a wrong number); no elements (the mean would be NaN).
    """
    check_predictions("mse", pred)
    if not isinstance(target, torch.Tensor) or not target.is_floating_point():
        got = target.dtype if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"mse: targets must be float [N, out] like the predictions "
                         f"{_shape(pred)}, got {got}; for class labels use loss='ce'")
    if pred.shape != target.shape:
        raise ValueError(f"mse: predictions {_shape(pred)} and targets {_shape(target)} "
                         f"differ in shape (regression targets are [N, out], with out the "
                         f"model's output size)")
    if pred.numel() == 0:
        raise ValueError(f"mse: no examples (predictions {_shape(pred)}); the mean over "
                         f"nothing would be NaN")
    return F.mse_loss(pred, target)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: logits ``[N, C]``, labels int64 ``[N]`` in ``[0, C)`` (or float
    class probabilities ``[N, C]``).

    Raises:
        ValueError: logits not a float tensor (a model returning a tuple or dict), with
            no examples (N = 0: the mean would be NaN) or with one class (C = 1: the loss
            would be 0 whatever the model predicts, e.g. for regression targets ``[N, 1]``
            read as class probabilities); labels that are not int64 ``[N]``
            (nor float ``[N, C]``), or, for labels on the CPU outside a
            ``torch.func`` transform, labels outside ``[0, C)`` (checked there only:
            elsewhere reading them would cost a device synchronisation; under
            ``torch.compile`` the check stops the graph and runs eager; inside
            ``metaloop.tasks.batch.valid_by_construction()``, as metaloop's compiled vmapped
            tasks run, it reads nothing, as every other check there).
    """
    check_predictions("cross_entropy", logits)
    if not logits.is_floating_point():
        raise ValueError(f"cross_entropy: logits must be float [N, C], got {logits.dtype}")
    if logits.dim() == 0 or logits.shape[0] == 0:
        raise ValueError(f"cross_entropy: no examples (logits {_shape(logits)}); the mean "
                         f"over nothing would be NaN")
    if logits.dim() == 2 and logits.shape[1] == 1:
        raise ValueError(f"cross_entropy: logits {_shape(logits)} have one class (C = 1): the "
                         f"loss is 0 whatever the model predicts; classification needs C >= 2 "
                         f"outputs (for regression targets use loss='mse')")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"cross_entropy: labels must be an int64 tensor [N], "
                         f"got {type(labels).__name__}")
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise ValueError(f"cross_entropy: labels must be int64 class indices [N], got "
                             f"{labels.dtype} {_shape(labels)} for logits {_shape(logits)} "
                             f"(float labels are read as class probabilities [N, C]); "
                             f"call .long() on class indices")
    elif labels.dtype != torch.int64:
        raise ValueError(f"cross_entropy: labels must be int64 class indices, got "
                         f"{labels.dtype}; call .long()")
    elif logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits must be [N, C] and labels [N], got logits "
                         f"{_shape(logits)} and labels {_shape(labels)}")
    elif (labels.numel() and labels.device.type == "cpu" and not values_trusted()
          and torch._C._functorch.maybe_current_level() is None):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"cross_entropy: labels must lie in [0, C={logits.shape[1]}) "
                             f"(C: the model's outputs), found {lo if lo < 0 else hi}")
    return F.cross_entropy(logits, labels)


LOSSES: dict[str, Loss] = {"mse": mse, "ce": cross_entropy, "cross_entropy": cross_entropy}


# The start of torch's error for reading a value under vmap (.item(), float(), a Python
# branch on a tensor).
_VMAP_READS_VALUE = "vmap: It looks like you're either (1) calling .item() on a Tensor"


class LossReadsValue(ValueError):
    """A loss of the user's own read a tensor's value under ``torch.func.vmap`` (``CheckedLoss``):
    the tasks one by one can run it. A learner whose batching is ``"auto"`` switches to the
    loop on it (``metaloop.meta._common.vmap_tasks`` raises it on as ``VmapUnsupported``)."""


class CheckedLoss:
    """A loss of the user's own, ``loss(pred, y)``, whose result is checked on every call:
    it must be one floating tensor of one element, the mean that the inner loop
    differentiates (a per-example vector or a Python float would fail deep inside autograd
    or torch.func); a one-element ``[1]`` result is returned as 0-dim, as autograd reads it.

    Only the result's type, shape and dtype are read, never its value: the check costs a
    few attribute reads, and works under ``torch.func.vmap`` and ``torch.func.grad``, where
    the shape is the per-task one. Under vmap a loss that reads a value itself
    (``float(t)``, ``t.item()``, a Python ``if`` on a tensor) fails inside the loss, before
    its result exists; torch's error there is re-raised as a ValueError naming the loss.

    Raises:
        ValueError: when called, a result that is not a 0-dim floating tensor, naming the
            loss and what it returned; under ``torch.func.vmap``, a loss that reads a
            tensor's value (torch's RuntimeError kept as the cause; the tasks run one by
            one with ``batching="loop"`` take a loss that branches on values).
    """

    def __init__(self, loss: Loss):
        self.loss = loss
        functools.update_wrapper(self, loss, updated=())    # its __name__, __qualname__, __doc__

    def __call__(self, pred, y) -> torch.Tensor:
        try:
            out = self.loss(pred, y)
        except RuntimeError as e:
            # Under vmap a loss that reads a value (``float(t)``, ``t.item()``, ``if t > 0``)
            # fails inside the user's function, before its result can be checked: name it.
            if (torch._C._functorch.maybe_current_level() is None
                    or not str(e).startswith(_VMAP_READS_VALUE)):
                raise
            raise LossReadsValue(
                f"loss {_loss_name(self.loss)} must return the mean loss as a 0-dim "
                f"floating tensor computed with torch operations, but it read a tensor's "
                f"value (float(), .item(), or a Python if/while on a tensor), which "
                f"torch.func.vmap cannot run (for predictions "
                f"{_shape(pred) if isinstance(pred, torch.Tensor) else '?'} of one task); "
                f"reduce it with .mean() and compute it with torch operations, or, for a loss "
                f"that must branch on values, run the tasks one by one (batching='loop' or "
                f"'auto')"
            ) from e
        if isinstance(out, torch.Tensor) and out.dim() and out.numel() == 1:
            out = out.reshape(())                # [1], [1, 1]: one number, as autograd takes it
        if not isinstance(out, torch.Tensor) or out.dim() != 0 or not out.is_floating_point():
            got = (f"a {out.dtype} tensor of shape {_shape(out)}"
                   if isinstance(out, torch.Tensor) else f"a {type(out).__name__}")
            raise ValueError(f"loss {_loss_name(self.loss)} must return the mean loss as a "
                             f"0-dim floating tensor, but returned {got} (for predictions "
                             f"{_shape(pred) if isinstance(pred, torch.Tensor) else '?'}); "
                             f"reduce it with .mean() and compute it with torch operations")
        if (isinstance(pred, torch.Tensor) and pred.requires_grad and not out.requires_grad
                and torch.is_grad_enabled()
                and torch._C._functorch.maybe_current_level() is None):
            raise ValueError(f"loss {_loss_name(self.loss)} returned a tensor cut off from "
                             f"the predictions' graph (predictions {_shape(pred)} need a "
                             f"gradient, the loss has none): a value read with .item() or "
                             f"float() and made a tensor again, or a loss computed under "
                             f"torch.no_grad() or on .detach()ed predictions; compute it with "
                             f"torch operations on the predictions")
        return out

    def __repr__(self) -> str:
        return f"CheckedLoss({self.loss!r})"

    def __eq__(self, other) -> bool:        # the same loss, wrapped or not
        return self.loss == (other.loss if isinstance(other, CheckedLoss) else other)

    def __hash__(self) -> int:
        return hash(self.loss)


def _loss_name(loss) -> str:
    name = getattr(loss, "__qualname__", None) or getattr(loss, "__name__", None)
    return name if isinstance(name, str) else repr(loss)


def checked_loss(loss) -> Loss:
    """A built-in loss (``mse``, ``cross_entropy``) as it is; any other callable wrapped in
    ``CheckedLoss``, once.

    Raises:
        ValueError: ``loss`` not callable.
    """
    if not callable(loss):
        raise ValueError(f"loss must be a callable (pred, y) -> scalar, got "
                         f"{type(loss).__name__}")
    if any(loss is f for f in LOSSES.values()) or isinstance(loss, CheckedLoss):
        return loss
    return CheckedLoss(loss)


def get_loss(loss: str | Loss) -> Loss:
    """Resolve a loss name ("mse", "ce"), or a callable ``(pred, y) -> scalar``, which is
    returned wrapped in ``CheckedLoss`` (its result checked on every call).

    Args:
        loss: ``"mse"``, ``"ce"``, or a callable ``(pred, y) -> scalar``.

    Returns:
        The loss function ``(pred, y) -> 0-dim tensor``.

    Raises:
        ValueError: an unknown loss name (listing the known ones); (when the returned loss
            is called) a callable that returns anything but a 0-dim floating tensor.
    """
    if callable(loss):
        return checked_loss(loss)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to labels: logits ``[N, C]``, labels ``[N]``
    (or ``[..., N, C]`` and ``[..., N]``: the mean over all of them).

    Args:
        logits: ``[N, C]`` (or ``[..., N, C]``).
        labels: int64 ``[N]`` (or ``[..., N]``).

    Returns:
        a 0-dim tensor in the dtype of ``logits``, at least float32 (bf16 or float16 logits
            give a float32 fraction, exact to the count), on its device: nothing is read
            back. NaN where any logit is NaN (a diverged model has no accuracy; argmax would
            pick an arbitrary class); -inf logits, e.g. masked classes, are scored as usual.

    Raises:
        ValueError: logits not a float tensor ``[..., N, C]`` with C >= 1; labels not an
            integer tensor of logits' shape without C; no labels (N = 0: the accuracy of
            nothing is undefined). Only shapes and dtypes are checked, never values.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"accuracy: logits and labels must be tensors, got "
                         f"{type(logits).__name__} and {type(labels).__name__}")
    if not logits.is_floating_point() or logits.dim() < 2 or logits.shape[-1] == 0:
        raise ValueError(f"accuracy: logits must be float [N, C] with C >= 1, got "
                         f"{logits.dtype} {_shape(logits)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"accuracy: labels must be integer class indices [N], got "
                         f"{labels.dtype} (accuracy is for classification)")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"accuracy: labels {_shape(labels)} must be logits {_shape(logits)} "
                         f"without its last (class) dimension")
    if labels.numel() == 0:
        raise ValueError(f"accuracy: no examples (logits {_shape(logits)}, labels "
                         f"{_shape(labels)}); the accuracy of nothing is undefined")
    dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 would round 13/50
    acc = (logits.argmax(-1) == labels).to(dtype).mean()
    # argmax takes a NaN for the largest logit: all-NaN logits would score the fraction of
    # class-0 labels. NaN in, NaN out, decided on the device (nothing is read back).
    return torch.where(logits.isnan().any(), torch.full_like(acc, math.nan), acc)
