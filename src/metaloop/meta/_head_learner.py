"""What R2D2, MetaOptNet and ProtoNet share: a feature extractor whose head is *solved* per
task.

The meta-parameters live in one ``nn.Module``, :class:`HeadNet`: the backbone, a learnable
output scale (``log_scale``) and, optionally, a learnable ridge strength (``log_lam``). Both
are stored as logarithms so that they stay positive under Adam, and because ``ml.train``
optimises ``learner.model.parameters()``, every meta-parameter is one of them.

:class:`HeadLearner` is the learner; the head solver (``inner``) is the only thing that
differs between R2D2 (ridge regression on one-hot targets, ``r2d2.py``), MetaOptNet
(logistic regression or a squared-hinge SVM by Newton steps, ``metaoptnet.py``) and ProtoNet
(class means, ``protonet.py``).

BatchNorm. Conv4 normalises with the statistics of the batch it is given. Each task's
support set and query set go through the backbone *separately*, as in MAML and as at test
time, where ``adapt`` sees the support set only and ``predict`` the query set only:

* the features a task is trained on are the features it is evaluated on;
* query statistics never leak into the support features (no transduction across sets).

Two ways to run the backbone over a meta-batch, with the same numbers (tested):

* ``batching="loop"``: one backbone call per task and set (2B calls), each with the fused
  BatchNorm kernel. Faster for Conv4 on the CPU: 2.0 s against 3.2 s for 8 Omniglot 5-way
  1-shot tasks with 15 queries per class (wall clock, 1 thread, loaded machine, median of 5
  interleaved).
* ``batching="vmap"``: ``torch.func.vmap`` over the task dimension; its convolution rule
  folds the tasks into one ``[B*N, C, H, W]`` convolution, while Conv4's ``BatchNorm``
  switches to plain mean/variance arithmetic under vmap and reduces over each task's own
  examples.

Transductive or not. By default (``transductive=True``) a task's queries go through the
backbone as one batch, so BatchNorm normalises them with their own statistics and each
query's score depends on the others. With ``transductive=False`` the queries are normalised
with the statistics of their task's support set (``metaloop.models.bn_stats``), in
meta-training as at test time, so each query is scored on its own; the support statistics
travel with the solved head under ``STATS`` keys. That mode runs one task at a time
(``batching`` is then ``"loop"``).

``"auto"`` (the default) picks as MAML does: vmap for models without convolutions,
normalisation layers, recurrent layers or dropout in training mode. Only first derivatives
flow through the backbone, so the wrong double backward of the fused BatchNorm kernel under
vmap (pytorch/functorch#534, which Conv4's ``BatchNorm`` works around) does not matter here.
The head solves and the query loss are batched over all tasks in either mode.

Evaluation (``adapt``, and ``predict`` without gradients recorded, with the params ``adapt``
returned) calls the network itself; meta-training, and params of anyone else's, go through
``torch.func.functional_call``. The logits are the same bit for bit (tested).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaloop._repr import safe_repr
from metaloop.adapt.proto_head import REFINE_TEMPERATURE, REFINE_WEIGHT
from metaloop.adapt.ridge_head import head_logits
from metaloop.adapt.sgd import gradients_on
from metaloop.func.params import Params, detach, forward
from metaloop.meta._common import (
    ScoresEitherWay,
    VmapUnsupported,
    autograd_batch,
    check_batch,
    check_finite_batch,
    check_finite_tasks,
    check_flag,
    check_inputs,
    check_params,
    check_steps,
    check_task,
    rerun_on_loop,
    resolve_batching,
    vmap_guard,
    vmap_refusal,
    vmap_tasks,
)
from metaloop.models.bn_stats import (
    STATS,
    batchnorm_layers,
    fixed_stats,
    recorded_stats,
    split_stats,
)
from metaloop.tasks.batch import TaskBatch, values_trusted

HEAD_KEYS = ("W", "b")   # the solved head in an adapted params dict: W [D, C], b [C] (optional)


def check_positive(owner: str, name: str, value: Any) -> float:
    """value as a float; ValueError unless it is a finite real > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (math.isfinite(float(value)) and float(value) > 0.0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


class HeadNet(nn.Module):
    """Backbone + learnable output scale (+ learnable ridge strength): all meta-parameters.

    Args:
        backbone: feature extractor. If its ``forward`` takes a ``head`` keyword (metaloop's
            Conv4 and MLP), it is called as ``backbone(x, head=False)``, otherwise as
            ``backbone(x)``; it must return one tensor of ``[N, D]`` features (ValueError
            otherwise, when it is called). Parameters it does not use
            for the features (e.g. Conv4's linear ``head``) get zero meta-gradients.
        scale: initial output scale s > 0; logits are ``s * (features @ W + b)``.
        lam: initial (``learn_lam``) or fixed ridge strength lam > 0.
        learn_lam: meta-learn lam as ``exp(log_lam)``; otherwise lam is a constant.
        learn_scale: meta-learn the scale as ``exp(log_scale)`` (default); otherwise
            ``log_scale`` is a buffer, kept in the state dict and checkpoints, that no
            optimiser moves (Snell et al.'s plain distances with ``scale=1``).

    Parameters: ``backbone.*``, ``log_scale`` (0-dim; a buffer without ``learn_scale``) and,
    with ``learn_lam``, ``log_lam`` (0-dim), in the dtype of the backbone's parameters.

    Raises:
        ValueError: a backbone that is not an ``nn.Module``, scale or lam not a finite
            number > 0, or ``learn_lam`` or ``learn_scale`` not True or False
            (``check_flag``).
    """

    def __init__(self, backbone: nn.Module, scale: float = 1.0, lam: float = 1.0,
                 learn_lam: bool = False, learn_scale: bool = True):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"HeadNet: backbone must be an nn.Module, "
                             f"got {type(backbone).__name__}")
        scale = check_positive("HeadNet", "scale", scale)
        lam = check_positive("HeadNet", "lam", lam)
        first = next((p for p in backbone.parameters() if p.is_floating_point()), None)
        kw: dict[str, Any] = ({"dtype": first.dtype, "device": first.device}
                              if first is not None else {})
        self.backbone = backbone
        self.learn_scale = check_flag("learn_scale", learn_scale)
        log_scale = torch.tensor(math.log(scale), **kw)
        if self.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.learn_lam = check_flag("learn_lam", learn_lam)
        if self.learn_lam:
            self.log_lam = nn.Parameter(torch.tensor(math.log(lam), **kw))
        else:
            self.fixed_lam = lam
        try:
            takes_head = "head" in inspect.signature(backbone.forward).parameters
        except (TypeError, ValueError):   # builtins without a signature: plain call
            takes_head = False
        self._kwargs = {"head": False} if takes_head else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[N, D]`` of ``x [N, ...]`` (BatchNorm: the statistics of these N)."""
        h = self.backbone(x, **self._kwargs)                       # [N, D]
        if not isinstance(h, torch.Tensor):
            raise ValueError(f"HeadNet: the backbone must return one tensor of features [N, "
                             f"D], got {type(h).__name__}; wrap it in a module whose forward "
                             f"returns the features alone")
        if h.dim() != 2:
            raise ValueError(f"HeadNet: the backbone must return features [N, D], got shape "
                             f"{list(h.shape)} for input {list(x.shape)}")
        return h

    def lam_from(self, params: Params) -> float | torch.Tensor:
        """lam from a params dict: ``exp(log_lam)`` (a tensor) or the fixed float."""
        return params["log_lam"].exp() if self.learn_lam else self.fixed_lam

    def scale_from(self, params: Params) -> torch.Tensor:
        """The output scale ``exp(log_scale)`` (0-dim) from a params dict, or from the
        module's buffer when the scale is not learned."""
        return (params["log_scale"] if self.learn_scale else self.log_scale).exp()

    @property
    def scale(self) -> torch.Tensor:
        """The current output scale ``exp(log_scale)``, detached (for inspection)."""
        return self.log_scale.detach().exp()

    @property
    def lam(self) -> float | torch.Tensor:
        """The current ridge strength, detached: ``exp(log_lam)`` or the fixed float."""
        return self.log_lam.detach().exp() if self.learn_lam else self.fixed_lam


Solver = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


# the builder that makes a HeadLearner with each solver: the name its repr shows
_METHODS = {"RidgeSolver": "R2D2", "NewtonSolver": "MetaOptNet", "PrototypeSolver": "ProtoNet"}


class HeadLearner(ScoresEitherWay):
    """A meta-learner whose inner loop is a convex head solved on the support features.

    For each task: ``Phi_s = f(x_s) [S, D]``, ``Phi_q = f(x_q) [Q, D]``, ``(W, b) =
    inner(Phi_s, y_s)``, logits ``= scale * (Phi_q W + b) [Q, C]``, and the meta-loss is the
    query cross-entropy averaged over tasks. Gradients reach the backbone through both
    ``Phi_q`` and, via the differentiable solve, ``Phi_s``; and reach ``log_scale`` and
    ``log_lam``.

    Build it with :func:`metaloop.meta.R2D2`, :func:`metaloop.meta.MetaOptNet` or
    :func:`metaloop.meta.ProtoNet`.

    Args:
        model: the :class:`HeadNet` holding every meta-parameter.
        inner: the head solver: ``inner(features [B, N, D], labels [B, N], ways, lam) ->
            (W [B, D, C], b [B, C] or None)``, with attributes ``loss_fn`` (the query loss,
            used by ``evaluate``) and ``steps``.
        ways: classes per task; None infers ``max(support_y) + 1`` per batch / task.
        batching: ``"loop"`` (one backbone call per task and set), ``"vmap"`` (all tasks in
            one vmapped call per set) or ``"auto"``; same results.
        transductive: True: each task's queries are normalised together (BatchNorm on their
            batch statistics). False: with their support set's statistics, in training and
            at test time, so each query is scored on its own (``evaluation`` names the mode;
            it may be changed after construction, e.g. to score a transductively trained
            model the other way). False needs the backbone's batch normalisation to be
            metaloop's ``BatchNorm``: torch BatchNorm layers that use their batch's
            statistics are refused by name.
        refine: rounds of soft k-means that pull the solved prototypes toward the task's
            unlabelled queries before they are scored (``inner.refine``, ProtoNet's
            :func:`metaloop.adapt.refine_prototypes`); transductive by nature, so it needs
            ``transductive=True``. 0 (the default): off. It may be set after construction,
            and applies wherever queries are scored, meta-training included.
        refine_temperature: multiplies the logits that assign queries to classes while
            refining (> 0).
        refine_weight: the query set's weight against the support set's while refining (> 0).

    Raises:
        ValueError: a model in float16 or bfloat16 (named with the learner: call
            ``model.float()``, and use ``precision="bf16"`` autocast for half-precision
            speed), besides the bad arguments named above.
    """

    meta_trains = True

    def __init__(self, model: HeadNet, inner: Solver, ways: int | None = None,
                 batching: str = "auto", transductive: bool = True, refine: int = 0,
                 refine_temperature: float = REFINE_TEMPERATURE,
                 refine_weight: float = REFINE_WEIGHT):
        if not isinstance(model, HeadNet):
            raise ValueError(f"HeadLearner: model must be a HeadNet, got {type(model).__name__}")
        if ways is not None and (not isinstance(ways, int) or isinstance(ways, bool)
                                 or ways < 2):
            raise ValueError(f"ways must be None or an int >= 2, got {ways!r}")
        method = _METHODS.get(type(inner).__name__, "HeadLearner")
        dtype = model.log_scale.dtype
        if dtype in _HALF:
            raise ValueError(_half_refusal(method, dtype))
        self.model, self.inner, self.ways = model, inner, ways
        self.batching = batching
        self._bn = batchnorm_layers(model)
        self.transductive = transductive
        self.refine_temperature, self.refine_weight = refine_temperature, refine_weight
        self.refine = refine

    @safe_repr
    def __repr__(self) -> str:
        """The method (named by its builder, from the solver) and its key settings, e.g.
        ``R2D2(scale=10, lam=1, ways=None, batching='loop', transductive=True)``."""
        name = _METHODS.get(type(self.inner).__name__, type(self).__name__)
        shown: dict[str, object] = {}
        if name == "MetaOptNet":
            shown["head"] = getattr(self.inner, "head", None)
        shown["scale"] = float(f"{float(self.model.scale):.4g}")
        if name != "ProtoNet":
            shown["lam"] = float(f"{float(self.model.lam):.4g}")
        shown.update(ways=self.ways, batching=self.batching, transductive=self.transductive)
        if self.refine:
            shown["refine"] = self.refine
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def refine_temperature(self) -> float:
        """Multiplies the logits that assign queries to classes while refining (> 0)."""
        return self._refine_temperature

    @refine_temperature.setter
    def refine_temperature(self, value: float) -> None:
        self._refine_temperature = check_positive("HeadLearner", "refine_temperature", value)

    @property
    def refine_weight(self) -> float:
        """The query set's weight against the support set's while refining (> 0)."""
        return self._refine_weight

    @refine_weight.setter
    def refine_weight(self, value: float) -> None:
        self._refine_weight = check_positive("HeadLearner", "refine_weight", value)

    @property
    def refine(self) -> int:
        """Soft k-means rounds over the queries before scoring them (0: off; see the class)."""
        return self._refine

    @refine.setter
    def refine(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"refine must be an int >= 0 (soft k-means rounds, 0 = off), "
                             f"got {value!r}")
        if value and not hasattr(self.inner, "refine"):
            raise ValueError(f"refine = {value}: {type(self.inner).__name__} has no prototypes "
                             f"to refine with the queries; only protonet's head has")
        if value and not self.transductive:
            raise ValueError(f"refine = {value} scores a task's queries together, but this "
                             f"learner scores each on its own (transductive = False)")
        self._refine = value

    @property
    def transductive(self) -> bool:
        """Whether a task's queries are scored together (see ``ScoresEitherWay``)."""
        return self._transductive

    @transductive.setter
    def transductive(self, value: bool) -> None:
        if value is False and getattr(self, "_refine", 0):  # type: ignore[arg-type]  # typeshed
            raise ValueError(f"transductive = False scores each query on its own, but refine "
                             f"= {self._refine} refines the prototypes with all of a task's "
                             f"queries; set refine = 0 first")
        ScoresEitherWay.transductive.fset(self, value)  # type: ignore[attr-defined]  # property

    @property
    def evaluation(self) -> str:
        """How queries are scored: "transductive" or "non-transductive", and with
        ``refine``, how the prototypes were refined with them."""
        if not self.refine:
            return ScoresEitherWay.evaluation.fget(self)  # type: ignore[attr-defined]  # property
        return (f"transductive, prototypes refined with the queries ({self.refine} soft "
                f"k-means steps, temperature {self.refine_temperature:g}, query weight "
                f"{self.refine_weight:g})")

    @property
    def batching(self) -> str:
        """``"loop"`` or ``"vmap"``: as constructed, but ``"loop"`` when queries are scored
        non-transductively with BatchNorm layers (statistics are recorded per task)."""
        return "loop" if not self.transductive and self._bn else self._batching

    @batching.setter
    def batching(self, value: str) -> None:
        self._batching = resolve_batching(value, self.model.backbone)
        # "auto" that chose vmap: the loop from the first call vmap cannot run (vmap_guard)
        self._auto_vmap = value == "auto" and self._batching == "vmap"

    # -- shared pieces -------------------------------------------------------------------
    def _features(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Per-task features ``[B, N, D]`` of ``x [B, N, ...]``, each task's BN on its own N.

        Raises:
            VmapUnsupported: (a ValueError) ``batching="vmap"`` for layers that vmap cannot
                run now (``vmap_refusal``: e.g. dropout switched to training mode since the
                learner was built), naming them, or a forward pass that draws random
                numbers or changes a buffer in place (``vmap_tasks``); with "auto" the
                learner has then switched to the loop (``vmap_guard``) and its callers run
                again there (``rerun_on_loop``).
        """
        net = self._network(_body(params))
        if self.batching == "loop":
            return torch.stack([net(xi) for xi in x])
        with vmap_guard(self, self.model):
            refusal = vmap_refusal(self.model)
            if refusal:
                raise VmapUnsupported(refusal)
            return vmap_tasks(net, x)                                      # [B, N, D]

    def _network(self, body: Params) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network with the tensors ``body`` (``[N, ...] -> [N, D]``): the model itself
        where ``body`` holds the model's own parameters (they, or ``detach``'s views of them
        as ``adapt`` returns) and no gradient is recorded, as in evaluation: the same
        numbers without ``torch.func.functional_call`` swapping every tensor in and out on
        each call. Anything else, meta-training included, runs through ``functional_call``."""
        if not torch.is_grad_enabled() and _own_parameters(self.model, body):
            return self.model
        return lambda xi: forward(self.model, body, xi)

    def _ways(self, support_y: torch.Tensor, *others: torch.Tensor,
              classes: torch.Tensor | None = None) -> int:
        """C, after checking that the labels are int64 and in [0, C). Inside
        ``valid_by_construction()``, C is ``ways`` or the width of the batch's ``classes``
        ``[B, C]`` when either is known, and no label is read."""
        for name, y in (("support_y", support_y), *(("query_y", o) for o in others)):
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
                got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"{name} must be int64 class labels, got {got} "
                                 f"({self.name} is a classifier)")
        if values_trusted():
            known = self.ways if self.ways is not None else (
                classes.shape[-1] if classes is not None else None)
            if known is not None:
                return known
        ways = self.ways if self.ways is not None else int(support_y.max()) + 1
        for name, y in (("support_y", support_y), *(("query_y", o) for o in others)):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= ways:
                raise ValueError(f"{name} labels must lie in [0, ways={ways}), found "
                                 f"{lo if lo < 0 else hi}")
        if ways < 2:
            raise ValueError(f"tasks need at least 2 classes, got labels in [0, {ways})")
        return ways

    def _support_features(self, params: Params, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Features ``[B, S, D]`` of support sets ``x [B, S, ...]`` and, when not
        transductive, each BatchNorm layer's statistics on each task's set, stacked ``[B,
        C]`` under ``STATS`` keys (else ``{}``)."""
        if self.transductive or not self._bn:
            return self._features(params, x), {}
        net = self._network(_body(params))
        feats, stats = [], []
        for xi in x:
            with recorded_stats(self._bn, {}) as rec:
                feats.append(net(xi))                                # [S, D]
            stats.append(rec)
        return torch.stack(feats), {k: torch.stack([r[k] for r in stats]) for k in stats[0]}

    def _query_features(self, params: Params, x: torch.Tensor, stats: dict) -> torch.Tensor:
        """Features ``[B, N, D]`` of ``x [B, N, ...]``: BatchNorm on each task's own batch,
        or with ``stats`` (``[B, C]`` per key, from ``_support_features``) when given."""
        if not stats:
            return self._features(params, x)
        net = self._network(_body(params))
        feats = []
        for i, xi in enumerate(x):
            with fixed_stats(self._bn, {k: v[i] for k, v in stats.items()}):
                feats.append(net(xi))                                # [N, D]
        return torch.stack(feats)

    def _solve(self, params: Params, support_x, support_y, ways) -> Params:
        """The solved heads ``{"W": [B, D, C], "b": [B, C]?}`` for ``[B, S, ...]`` support,
        with the support statistics (``STATS`` keys, ``[B, C]``) when not transductive."""
        feats, stats = self._support_features(params, support_x)    # [B, S, D]
        with _full_precision(feats):
            feats = _upcast(feats, self.model.log_scale.dtype)
            W, b = self.inner(feats, support_y, ways, self.model.lam_from(params))
        head = {"W": W} if b is None else {"W": W, "b": b}
        return {**head, **stats}

    def _logits(self, params: Params, head: Params, x: torch.Tensor) -> torch.Tensor:
        """``scale * (features @ W + b)`` ``[B, N, C]`` for x ``[B, N, ...]``; ``head``'s
        ``STATS`` entries, if any, normalise the queries."""
        feats, W, b, scale = self._query_parts(params, head, x)
        with _full_precision(feats):
            if self.refine:                                            # with these N queries
                W, b = self.inner.refine(  # type: ignore[attr-defined]  # checked by the setter
                    W, b, feats, scale, self.refine, self.refine_temperature, self.refine_weight)
            return scale * head_logits(feats, W, b)

    def _query_parts(self, params: Params, head: Params, x: torch.Tensor) -> tuple:
        """The query features ``[B, N, D]``, the solved head ``W [B, D, C]``, ``b [B, C]`` (or
        None) and the output scale, before any refinement."""
        _, stats = split_stats(head)
        feats = _upcast(self._query_features(params, x, stats),         # [B, N, D]
                        self.model.log_scale.dtype)
        return feats, head["W"], head.get("b"), self.model.scale_from(params)

    def query_parts(self, params: Params, x: torch.Tensor) -> tuple:
        """What :meth:`predict_batched` scores, unrefined: ``(features [B, N, D], W [B, D,
        C], b [B, C] or None, scale)`` for x ``[B, N, ...]`` and ``adapt_path_batched``'s
        params. ``metaloop.meta.Ensemble`` refines its members' prototypes jointly from
        these; the logits are ``scale * head_logits(features, W, b)``."""
        return self._query_parts(*_body_and_head(params), x)

    def batched(self, params: Params) -> Params:
        """One task's adapted params (``adapt``) as a batch of one (``adapt_path_batched``)."""
        return {**params, **{k: v[None] for k, v in params.items() if _per_task(k)}}

    @property
    def name(self) -> str:
        """The method's name for messages: ``inner.method`` ("ProtoNet", "MetaOptNet",
        "R2D2"), else the solver's class name."""
        return getattr(self.inner, "method", None) or type(self.inner).__name__

    def _params(self) -> Params:
        return dict(self.model.named_parameters())

    # -- the Learner protocol (metaloop.meta.Learner) -------------------------------------
    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over tasks of the query cross-entropy; differentiable wrt ``model``'s params.

        Returns:
            the scalar loss and ``{"loss", "accuracy"}`` (means over tasks).
        """
        return rerun_on_loop(self, self._meta_loss, batch)

    def _meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = check_batch(batch)
        if not batch.is_classification:
            raise ValueError(f"{self.name} needs a classification TaskBatch (int64 labels), "
                             f"got float regression targets")
        check_batch(batch, self.model)
        check_finite_batch(self.name, batch)    # on the CPU: no host synchronisation
        if torch.is_grad_enabled():     # a batch made under inference_mode: copied to use
            batch = autograd_batch(batch)
        ways = self._ways(batch.support_y, batch.query_y, classes=batch.classes)
        params = self._params()
        head = self._solve(params, batch.support_x, batch.support_y, ways)
        logits = self._logits(params, head, batch.query_x)            # [B, Q, C]
        B, Q, C = logits.shape
        per_task = F.cross_entropy(logits.reshape(B * Q, C), batch.query_y.reshape(B * Q),
                                   reduction="none").view(B, Q).mean(1)   # [B]
        loss = per_task.mean()
        with torch.no_grad():
            acc = (logits.argmax(-1) == batch.query_y).to(logits.dtype).mean()
        return loss, {"loss": loss.detach(), "accuracy": acc}     # 0-dim, no host sync

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d params as name -> tensor over ``model.named_parameters()``
        (zeros for parameters the features do not use); with metrics if asked. The same
        gradients under ``torch.no_grad()`` and ``torch.inference_mode()``."""
        with gradients_on():
            loss, metrics = self.meta_loss(autograd_batch(check_batch(batch)))
            params = self._params()
            names = list(params)
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            total = {n: torch.zeros_like(params[n]) if g is None else g
                     for n, g in zip(names, grads)}
        return (total, metrics) if with_metrics else total

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Solve the head on ONE task's support set ``[S, ...]``, labels int64 ``[S]``.

        Returns:
            detached params: the model's (shared storage) plus the head ``"W" [D, C]`` and,
            for R2D2, ``"b" [C]``. ``steps`` is ignored (the head is solved, not stepped),
            but checked as the SGD learners check it.

        Raises:
            ValueError: support_x or support_y not a tensor; not ``[S, ...]`` and ``[S]``
                with the same S (a batch of tasks ``[B, S, ...]`` is named as such); an
                empty support set (S = 0); labels that are not int64 (float targets);
                inputs on another device or in another float dtype than the model (a
                float64 task for a float32 model); NaN or inf in support_x; labels outside
                ``[0, ways)``; ``steps`` not None or an int >= 0.
        """
        *_, last = self.adapt_path(support_x, support_y, steps)
        return last

    def adapt_path(self, support_x, support_y, steps: int | None = None) -> Iterator[Params]:
        """Yield the adapted params once: a solved head has no intermediate steps
        (``evaluate`` scores every requested step count with it).

        Raises:
            ValueError: as ``adapt``, when called (not when the first value is drawn).
        """
        check_steps(steps)
        for name, t in (("support_x", support_x), ("support_y", support_y)):
            if not isinstance(t, torch.Tensor):        # before t[None] (a list's TypeError)
                raise ValueError(f"{self.name}: {name} must be a torch.Tensor, got "
                                 f"{type(t).__name__}")
        self._check_support(support_x[None], support_y[None])  # shapes, named as for a batch
        check_task(self.name, self.model, support_x, support_y, "ce")    # and finite values
        batched = rerun_on_loop(self, self._adapt_checked, support_x[None], support_y[None])
        return iter([{k: v[0] if _per_task(k) else v for k, v in batched.items()}])

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` for x ``[N, ...]`` with an adapted params dict.

        Raises:
            ValueError: ``params`` not a dict from ``adapt`` (names the model does not have,
                or no solved head), or x on another device or in another float dtype than
                the model (naming both).
        """
        self._check_predict(params, x)
        return rerun_on_loop(self, self._logits, *_body_and_head(self.batched(params)),
                             x[None])[0]

    def _check_predict(self, params, x) -> None:
        """``predict``'s checks, as ``check_params`` and ``check_inputs`` for MAML's: only
        shapes, dtypes, devices and names, no value is read."""
        body = {k: v for k, v in params.items() if not _per_task(k)} \
            if isinstance(params, Mapping) else params
        check_params(self.name, self.model, body)
        check_inputs(self.name, self.model, x=x)

    def adapt_path_batched(self, support_x, support_y, steps: int | None = None) -> list[Params]:
        """``adapt_path`` for B tasks at once (support ``[B, S, ...]``): a one-element list
        of params whose head entries carry the task dim (``W [B, D, C]``, ``b [B, C]``);
        the backbone entries are shared. Used by ``evaluate`` when ``batching == "vmap"``.

        Raises:
            ValueError: support sets that are empty, differ from their labels in size, sit on
                another device or in another float dtype than the model, or hold non-finite
                values (naming the tasks, as ``adapt`` names its one), labels that are not
                int64 in ``[0, ways)``, or ``steps`` not None or an int >= 0.
        """
        check_steps(steps)
        self._check_support(support_x, support_y)
        check_finite_tasks(self.name, support_x=support_x)      # one read for the batch
        return [self._adapt_checked(support_x, support_y)]

    def _adapt_checked(self, support_x, support_y) -> Params:
        """``adapt_path_batched``'s params for support sets already checked
        (``_check_support``); only the labels' range is read (``_ways``)."""
        ways = self._ways(support_y)
        params = detach(self._params())
        with torch.no_grad():
            head = self._solve(params, support_x, support_y, ways)
        return {**params, **detach(head)}

    def _check_support(self, support_x, support_y) -> None:
        """Batched support sets ``[B, S, ...]`` and labels ``[B, S]``, S >= 1, on the model's
        device and in its float dtype (no value is read)."""
        check_inputs(self.name, self.model, support_x=support_x, support_y=support_y)
        if support_y.dim() != 2 or support_x.dim() < 3 or support_x.shape[:2] != support_y.shape:
            raise ValueError(f"{self.name}: support_x and support_y must be [S, ...] and [S] "
                             f"for one task (adapt) or [B, S, ...] and [B, S] for a batch, got "
                             f"{list(support_x.shape)[1:]} and {list(support_y.shape)[1:]} "
                             f"(batched: {list(support_x.shape)} and {list(support_y.shape)})")
        if support_y.shape[0] == 0:
            raise ValueError(f"{self.name}: no tasks (B = 0): support_x "
                             f"{list(support_x.shape)} needs B >= 1")
        if support_y.shape[1] == 0:
            raise ValueError(f"{self.name}: the support set is empty (S = 0): there is no head "
                             f"to solve")

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N, C]`` for x ``[B, N, ...]`` with ``adapt_path_batched``'s params.

        Raises:
            ValueError: as ``predict``.
        """
        self._check_predict(params, x)
        return self._logits(*_body_and_head(params), x)


_HALF = (torch.bfloat16, torch.float16)


def _half_refusal(method: str, dtype: torch.dtype) -> str:
    """The error for a model whose parameters are in half precision."""
    return (f"{method}: the model's parameters are {dtype}, but the per-task head is computed "
            f"in the model's dtype, which must be float32 or float64; call "
            f"model.float() first. For half-precision speed keep the model float32 and "
            f"train with precision=\"bf16\" (metaloop train --precision bf16): the backbone "
            f"then runs under bf16 autocast and the head in float32")


def _upcast(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Features computed in reduced precision (bf16 / fp16 autocast of the backbone) in the
    model's own ``dtype``: the head solves need float32 or float64.

    Raises:
        ValueError: a model cast to half precision after the learner was built."""
    if dtype in _HALF:
        raise ValueError(_half_refusal("HeadLearner", dtype))
    if features.dtype in _HALF:
        return features.to(dtype)
    return features


def _full_precision(features: torch.Tensor):
    """Autocast off on the features' device while the head is solved and applied: the
    backbone, where the time goes, runs in the autocast dtype (``--precision bf16``), the
    solves and distances in the model's dtype."""
    dev = features.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.autocast(dev, enabled=False)
    return nullcontext()


def _body_and_head(params: Params) -> tuple[Params, Params]:
    """Batched adapted params split into (the model's params, the per-task head)."""
    missing = [k for k in ("W",) if k not in params]
    if missing:
        raise ValueError(f"predict: params lack {missing}; pass the dict from adapt()")
    return split_stats(params)[0], {k: v for k, v in params.items() if _per_task(k)}


def _per_task(key: str) -> bool:
    """Whether an adapted params entry belongs to one task (the head, support statistics)."""
    return key in HEAD_KEYS or key.startswith(STATS)


def _own_parameters(model: nn.Module, body: Params) -> bool:
    """Whether ``body`` holds exactly ``model``'s parameters, each the parameter itself or a
    view of all of it (``detach``: the same storage, offset, shape, strides, dtype and
    device), so that calling ``model`` computes what ``forward(model, body, x)`` does."""
    own = dict(model.named_parameters())
    if not isinstance(body, Mapping) or len(body) != len(own):
        return False
    for name, t in body.items():
        p = own.get(name)
        if p is None or not isinstance(t, torch.Tensor):
            return False
        if t is not p and (t.data_ptr() != p.data_ptr() or t.shape != p.shape
                           or t.stride() != p.stride() or t.dtype != p.dtype
                           or t.device != p.device):
            return False
    return True


def _body(params: Params) -> Params:
    """The network's own entries of a params dict: without the solved head."""
    return {k: v for k, v in params.items() if k not in HEAD_KEYS}
