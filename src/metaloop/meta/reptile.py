"""Reptile (Nichol et al. 2018): move theta_0 toward each task's adapted theta.

The published protocol is a set of flags on one class (no subclasses): ``inner_optimizer=
"adam"`` (Adam with beta1 = 0 in the inner loop), ``adam_state="shared"`` (one Adam state carried
from task to task through meta-training and used, unchanged, by every test task, as Nichol et
al.'s code does; ``"task"``: fresh moments for each task), ``inner_batch``
(each inner step on a mini-batch of the support set, drawn without replacement, epoch after
epoch), ``test_batch`` (the same at test time), ``transductive=False`` (each query scored on its
own: BatchNorm normalises it with the support set's statistics, never the other queries').
That last is not quite Nichol et al.'s non-transductive scoring: their code
(``_test_predictions`` in supervised-reptile) runs BatchNorm on the support set plus the one
query being scored, so the query enters its own statistics; here the support set's alone do.
The outer SGD step with a linearly decaying size is the training loop's (``train(...,
optimizer="sgd", lr_schedule="linear")``): SGD with rate epsilon on ``meta_gradient`` is
theta_0 += epsilon * mean(theta_final - theta_0).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import cast

import torch
from torch import nn

from metaloop.adapt.sgd import (
    SGDAdapter,
    autograd_usable,
    check_one_task_output,
    detached_steps,
    gradients_on,
    sgd_step,
    zero_head,
)
from metaloop.func.params import Params, detach, params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    ScoresEitherWay,
    accumulate,
    autograd_batch,
    check_batch,
    check_finite_batch,
    check_inputs,
    check_params,
    check_steps,
    check_task,
    mean_metrics,
    rerun_on_loop,
    resolve_batching,
    task_metrics,
)
from metaloop.meta.maml import probe_inner_graph, unused_zero_head
from metaloop.models.bn_stats import (  # noqa: F401 (STATS: the key prefix, re-exported)
    STATS,
    batchnorm_layers,
    fixed_stats,
    recorded_stats,
    split_stats,
)
from metaloop.tasks.batch import TaskBatch


def _task_seed() -> int:
    """One task's mini-batch seed, drawn from the global torch RNG."""
    return int(torch.randint(2**62, (1,)))


def minibatches(n: int, size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Indices of ``steps`` mini-batches of ``size`` out of ``n`` examples, drawn without
    replacement: successive random permutations of ``range(n)``, concatenated and cut into
    consecutive chunks (a batch may straddle two permutations), as Nichol et al.'s code.

    Args:
        n: examples. size: examples per batch (0 or >= n: every batch is all ``n`` in order).
        steps: batches. generator: the random stream.

    Returns:
        ``steps`` int64 tensors ``[min(size, n)]``.
    """
    if size <= 0 or size >= n:
        return [torch.arange(n)] * steps
    need = size * steps
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-need // n))]
    flat = torch.cat(perms)[:need]                                        # [size * steps]
    return list(flat.view(steps, size))


def adam_state(params: Params, names) -> dict[str, torch.Tensor]:
    """A fresh inner-Adam state for the tensors ``names`` of ``params``: ``{"t": [] int64
    (steps taken), "m.<name>": zeros like the tensor, "v.<name>": zeros like it}``."""
    state = {"t": torch.zeros((), dtype=torch.int64)}
    for n in names:
        state[f"m.{n}"] = torch.zeros_like(params[n]).detach()
        state[f"v.{n}"] = torch.zeros_like(params[n]).detach()
    return state


def _adam_path(adapter: SGDAdapter, params, x, y, steps, batches=None, betas=(0.0, 0.999),
               eps=1e-8, state: dict | None = None) -> Iterator[Params]:
    """Yield params after 0..steps inner Adam steps on the adapted names (beta1 = 0 as in the
    Reptile paper's code). ``batches[k]``: the support indices of step k (None: the whole
    support set). Each step is detached from the one before.

    ``state``: an ``adam_state`` to continue from, updated in place step by step (its step
    count ``t`` runs on, so the bias corrections are those of one long Adam run); None: fresh
    moments for this task alone. The update is torch.optim.Adam's:
    p -= lr * m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """
    p = adapter.start(params, y)
    if state is None:
        state = adam_state(p, adapter.names)
    yield p
    for k in range(steps):
        xb, yb = (x, y) if batches is None else (x[batches[k]], y[batches[k]])
        loss = adapter.loss_fn(adapter.fwd(p, xb), yb)
        grads = torch.autograd.grad(loss, [p[n] for n in adapter.names], allow_unused=True)
        state["t"] = state["t"] + 1
        t = int(state["t"])
        new = {}
        for n, g in zip(adapter.names, grads):
            if g is None:                   # a tensor the loss does not use: zero gradient
                g = torch.zeros_like(p[n])
            m = state[f"m.{n}"] = betas[0] * state[f"m.{n}"] + (1 - betas[0]) * g.detach()
            v = state[f"v.{n}"] = betas[1] * state[f"v.{n}"] + (1 - betas[1]) * g.detach() ** 2
            mh, vh = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
            new[n] = (p[n] - adapter.lr * mh / (vh.sqrt() + eps)).detach().requires_grad_()
        p = {**p, **new}
        yield p


def _sgd_path(adapter: SGDAdapter, params, x, y, batches) -> Iterator[Params]:
    """Yield params after 0..len(batches) plain SGD steps at ``adapter.lr``, step k on the
    support indices ``batches[k]``; first order (each step detached)."""
    p = adapter.start(params, y)
    yield p
    for idx in batches:
        p = sgd_step(adapter.fwd, adapter.loss_fn, p, adapter.names, x[idx], y[idx], adapter.lr,
                     create_graph=False)
        p = detach(p, requires_grad=True)
        yield p


class Reptile(AdaptsBySGD, ScoresEitherWay):
    """Reptile: ``meta_gradient`` is the mean over tasks of theta_0 - theta_final.

    An outer SGD step with rate epsilon on this direction is exactly the Reptile update
    theta_0 += epsilon * mean(theta_final - theta_0); Adam on it is the common variant.
    At test time the model adapts with the inner rule (``inner_optimizer``, ``inner_lr``) on
    mini-batches of ``test_batch`` support examples.

    Args:
        model: the network.
        inner_lr: inner step size (SGD's rate, or Adam's).
        inner_steps: inner steps in meta-training.
        loss: as ``MAML``: "mse" or "ce" (or a callable).
        adapt: as ``MAML``: predicate or names of the parameters adapted (default all).
        head_init: as ``MAML``: "learned" or "zero".
        inner_optimizer: "sgd" (default) or "adam" (beta1 = 0, beta2 = 0.999), in
            meta-training and at test time.
        adam_state: with Adam, "task" (default: fresh moments for each task) or "shared"
            (Nichol et al.'s code: one Adam state, held by the learner, runs on from task to
            task through meta-training, in task order; each test task adapts from a copy of
            it and leaves it unchanged). It is checkpointed with the run (``extra_state``).
        batching: "auto", "loop" or "vmap" (plain SGD on whole support sets only).
        inner_batch: support examples per inner step in meta-training, drawn without
            replacement (see ``minibatches``); 0: the whole support set. Nichol et al.: 10.
        test_batch: the same for test-time adaptation (its batches come from a fixed seed, so
            evaluation is deterministic); 0: the whole support set. Nichol et al.: 5 (5-way),
            10 (20-way).
        transductive: True: queries are scored together, BatchNorm on their batch statistics.
            False: each query on its own, BatchNorm with the statistics of the support set
            under the adapted params (the params of ``adapt``/``adapt_path`` then carry them
            under ``STATS`` keys; ``predict`` uses them); Nichol et al.'s code takes the
            support set plus the query instead. ``evaluation`` names the mode.
        head: keyword only; as ``MAML``, the head that ``head_init="zero"`` starts at zero.

    Raises:
        ValueError: ``model`` not an ``nn.Module``; ``inner_lr`` not a number > 0;
            ``inner_steps`` not an int >= 1; an unknown ``loss`` name or a loss that is not
            callable; an unknown ``batching`` (``"threads"`` included) or ``head_init``;
            ``adapt`` naming parameters the model does not have; a model parameter with
            ``requires_grad=False`` or a lazy module's uninitialised one;
            ``head_init="zero"`` on a head tied to another layer;
            an unknown ``inner_optimizer`` or ``adam_state``; ``adam_state="shared"``
            without Adam; a negative ``inner_batch``/``test_batch``; ``batching="vmap"`` with
            Adam or mini-batches; ``transductive=False`` for a model with torch BatchNorm
            layers that normalise with their batch's statistics (only metaloop's
            ``BatchNorm`` takes the support set's); ``head`` as ``MAML`` refuses it.
    """

    meta_trains = True

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 5,
                 loss="mse", adapt=None, head_init="learned", inner_optimizer: str = "sgd",
                 batching: str = "auto", inner_batch: int = 0, test_batch: int = 0,
                 transductive: bool = True, adam_state: str = "task", *, head=None):
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        if adam_state not in ("task", "shared"):
            raise ValueError(f"adam_state must be 'task' or 'shared', got {adam_state!r}")
        if adam_state == "shared" and inner_optimizer != "adam":
            raise ValueError(f"adam_state='shared' carries the inner Adam's moments from task "
                             f"to task; it needs inner_optimizer='adam', not "
                             f"{inner_optimizer!r}")
        for name, v in (("inner_batch", inner_batch), ("test_batch", test_batch)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0 (0: the whole support set), "
                                 f"got {v!r}")
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner_batch, self.test_batch = inner_batch, test_batch
        self.transductive = transductive
        self.adam_state = adam_state
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init,
                                head=zero_head("Reptile", head, head_init))
        self._head_named = None if head is None else list(self.inner.head or [])
        # the shared inner-Adam state (adam_state="shared"), made at the first task
        self._shared: dict[str, torch.Tensor] | None = None
        plain = inner_optimizer == "sgd" and not inner_batch and not test_batch
        if batching == "vmap" and not plain:
            why = {"inner_optimizer": inner_optimizer if inner_optimizer != "sgd" else None,
                   "inner_batch": inner_batch or None, "test_batch": test_batch or None}
            raise ValueError("batching='vmap' needs plain SGD on whole support sets, not "
                             + ", ".join(f"{k}={v!r}" for k, v in why.items() if v is not None)
                             + "; use 'loop' or 'auto'")
        self._plain = plain
        self.batching = batching
        self._bn = batchnorm_layers(model)
        # A zero head restarts at 0 on every task, so theta_0's head gets no Reptile direction.
        self._moved = [n for n in self.inner.names
                       if head_init == "learned" or n not in cast(list[str], self.inner.head)]

    @property
    def batching(self) -> str:
        """``"loop"`` or ``"vmap"``: as constructed, but ``"loop"`` for inner Adam or
        mini-batches (written per task) and for non-transductive scoring with BatchNorm
        layers (statistics are attached per task)."""
        if not self._plain or (not self.transductive and self._bn):
            return "loop"
        return self._batching

    @batching.setter
    def batching(self, value: str) -> None:
        self._batching = resolve_batching(value, self.model)
        # "auto" that chose vmap: the loop from the first call vmap cannot run (vmap_guard)
        self._auto_vmap = value == "auto" and self._batching == "vmap"

    def _check_head(self, sx: torch.Tensor, sy: torch.Tensor) -> None:
        """Once per learner, on one task's support set (``sx [S, ...]``, ``sy``): with
        ``head_init="zero"``, a head that the forward pass never uses is refused (zeroing
        it would change nothing; the output layer would keep its learned start). One
        forward pass, no backward (``probe_inner_graph``); a forward pass that fails is left
        to the call itself.

        Raises:
            ValueError: naming the head and the output layer to name with ``head=``.
        """
        if self.inner.head_init != "zero" or getattr(self, "_head_checked", False):
            return
        try:
            with gradients_on():
                graph = probe_inner_graph(self.inner, dict(self.model.named_parameters()),
                                          autograd_usable(sx), autograd_usable(sy))
        except (ValueError, RuntimeError):
            return                                      # the call says what fails
        refusal = unused_zero_head("Reptile", list(self.inner.head or []), self._head_named,
                                   self.model, graph.unused)
        if refusal:
            raise ValueError(refusal)                   # (refused again at the next call)
        self._check_late_head(sx)                       # (cached, and refused again too)
        self._head_checked = True

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The state beyond the model's parameters that a checkpoint must hold: the shared
        inner-Adam state (``adam_state="shared"``, once a task has run), else empty."""
        return dict(self._shared) if self._shared is not None else {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``extra_state``'s output (an empty dict: no shared state yet).

        Raises:
            ValueError: a state for another model or inner rule (missing or misshapen
                tensors, or a state given to a learner with ``adam_state="task"``).
        """
        if not state:
            self._shared = None
            return
        if self.adam_state != "shared":
            raise ValueError("the checkpoint holds a shared inner-Adam state, but this Reptile "
                             "has adam_state='task'")
        want = adam_state(params_of(self.model), self.inner.names)
        bad = sorted(k for k in want if k not in state or state[k].shape != want[k].shape)
        if bad or set(state) != set(want):
            raise ValueError(f"the inner-Adam state does not fit this model: missing or "
                             f"misshapen {bad}, unexpected {sorted(set(state) - set(want))}")
        p = next(iter(self.model.parameters()))
        self._shared = {k: v.to(p.device) if k == "t" else v.to(p.device, p.dtype)
                        for k, v in state.items()}

    def _state(self, params: Params, copy: bool) -> dict | None:
        """The inner-Adam state a task starts from: None (fresh) unless shared; the shared
        one itself (``copy=False``: the task's steps update it) or a copy of it."""
        if self.adam_state != "shared":
            return None
        if self._shared is None:
            self._shared = adam_state(params, self.inner.names)
        return dict(self._shared) if copy else self._shared

    def _path(self, params, x, y, steps: int, batch: int, generator,
              state: dict | None = None) -> Iterator[Params]:
        """One task's params after 0..steps inner steps of the inner rule (not detached)."""
        if self.inner_optimizer == "sgd" and not batch:
            return self.inner.path(params, x, y, steps, create_graph=False)
        batches = None if self.inner_optimizer == "adam" and not batch else \
            minibatches(x.shape[0], batch, steps, generator)
        if self.inner_optimizer == "adam":
            return _adam_path(self.inner, params, x, y, steps, batches, state=state)
        return _sgd_path(self.inner, params, x, y, batches)

    def skip_tasks(self, tasks: int) -> None:
        """Advance the global torch RNG past the draws that ``tasks`` tasks' meta-gradient
        makes here (one mini-batch seed per task with ``inner_batch``; none otherwise): a
        rank of a sharded meta-batch skips the other ranks' tasks, so that every task gets
        the seed it gets in one process and the ranks' RNGs stay equal."""
        if self.inner_batch:
            for _ in range(tasks):
                _task_seed()

    def _final(self, params: Params, sx, sy) -> Params:
        start = detach(params, requires_grad=True)
        g = None
        if self.inner_batch:                # the task stream's RNG: seeded, checkpointed
            g = torch.Generator().manual_seed(_task_seed())
        with gradients_on():
            *_, last = self._path(start, autograd_usable(sx), autograd_usable(sy),
                                  self.inner.steps, self.inner_batch, g,
                                  self._state(params, copy=False))
            return detach(last)

    def adapt_path(self, support_x, support_y, steps: int | None = None) -> Iterator[Params]:
        """Yield one task's detached params after 0..steps steps of the inner rule on
        mini-batches of ``test_batch`` (from a fixed seed); non-transductive: with the
        support set's BatchNorm statistics under ``STATS`` keys.

        Args:
            support_x: one task's support inputs ``[S, ...]``.
            support_y: its int64 class labels ``[S]`` or float targets ``[S, out]``.
            steps: inner steps; None: ``inner_steps``.

        Returns:
            an iterator over ``steps + 1`` detached params dicts (name -> tensor for every
            parameter of the network, plus ``STATS`` entries when non-transductive).

        Raises:
            ValueError: when called (not when the first value is drawn), as
                ``MAML.adapt_path``: a support set that is not one task's (``[B, S, ...]``
                with a built-in loss: "Reptile adapts to ONE task"), empty, of another
                length than its labels, in another float dtype or on another device than
                the model, or with NaN or inf; class labels with ``loss="mse"`` (float
                targets with ``"ce"``); ``steps`` not None or an int >= 0. When a step
                runs: labels outside ``[0, C)`` (C: the model's outputs); a loss of the
                user's own that returns anything but a 0-dim floating tensor.
        """
        check_steps(steps)
        steps = self.inner.steps if steps is None else steps
        check_task("Reptile", self.model, support_x, support_y, self.inner.loss)
        self._check_head(support_x, support_y)
        if self.inner_optimizer == "sgd" and not self.test_batch:
            path = super().adapt_path(support_x, support_y, steps)
        else:
            path = self._test_path(support_x, support_y, steps)
        if self.transductive:
            return path
        return ({**p, **self.support_stats(p, support_x)} for p in path)

    def _test_path(self, sx, sy, steps):
        """The inner rule's steps with gradients whatever the caller's grad mode, taken
        while each step runs (the caller's mode holds between the yields)."""
        g = torch.Generator().manual_seed(0)
        with gradients_on():
            start = detach(params_of(self.model), requires_grad=True)
            state = self._state(start, copy=True)
            path = self._path(start, autograd_usable(sx), autograd_usable(sy), steps,
                              self.test_batch, g, state)
        yield from detached_steps(path)

    def adapt_path_batched(self, support_x, support_y, steps: int | None = None):
        """As ``AdaptsBySGD.adapt_path_batched``, with ``adapt_path``'s check of a zero head
        on the first task (once per learner)."""
        if isinstance(support_x, torch.Tensor) and isinstance(support_y, torch.Tensor) \
                and support_x.dim() >= 2 and support_y.dim() >= 1 and len(support_x) \
                and len(support_y):
            self._check_head(support_x[0], support_y[0])
        return super().adapt_path_batched(support_x, support_y, steps)

    def support_stats(self, params: Params, support_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-channel mean and (biased) variance ``[C]`` of each BatchNorm layer's input
        when the network with ``params`` runs on ``support_x`` ``[S, ...]``, keyed
        ``STATS + "<layer>.mean"`` / ``".var"``; empty for a network without BatchNorm.
        Support-only statistics: Nichol et al.'s code normalises each query with those of
        the support set plus that query."""
        if not self._bn:
            return {}
        with torch.no_grad(), recorded_stats(self._bn, {}) as stats:
            self.inner.fwd(_net(params), support_x)
        return stats

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` on ONE task's x ``[N, ...]``; with ``STATS`` entries in
        ``params`` (non-transductive adaptation) BatchNorm normalises with those statistics,
        so each row depends on its own input alone.

        Raises:
            ValueError: as ``MAML.predict`` (a batch of tasks ``[B, N, ...]`` among them).
        """
        if not isinstance(params, Mapping):
            check_params("Reptile", self.model, params)     # raises, naming the type
        net, stats = split_stats(params)
        check_params("Reptile", self.model, net, self._resizable())
        check_inputs("Reptile", self.model, x=x)
        if not stats:
            out = self.inner.fwd(params, x)
        else:
            with fixed_stats(self._bn, stats):
                out = self.inner.fwd(_net(params), x)
        check_one_task_output("Reptile", self.inner.loss, x, out)
        return out

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """mean_i (theta_0 - theta_final_i) over the adapted names (zeros elsewhere); the
        same under ``torch.no_grad()`` and ``torch.inference_mode()``.

        Args:
            batch: a ``TaskBatch`` of B tasks (support ``[B, S, ...]``, query
                ``[B, Q, ...]``; the queries are used for the metrics only).
            with_metrics: also return the metrics.

        Returns:
            name -> tensor, each of its parameter's shape, over every parameter of
            ``model``; with ``with_metrics``, ``(grads, metrics)``: ``{"loss"}`` plus, for
            class labels, ``{"accuracy"}``, the query loss and accuracy after adaptation as
            detached 0-dim tensors on the model's device, means over the B tasks.

        Raises:
            ValueError: not a TaskBatch; its tensors on another device or in another float
                dtype than the model (a float64 batch for a float32 model); class labels
                with ``loss="mse"`` or float targets with ``loss="ce"``; NaN or inf in any
                of its float tensors (on the CPU, outside
                ``finite_guarded()``: ``check_finite_batch``); with
                ``loss="ce"``, labels outside ``[0, C)`` (C: the model's outputs); a loss of
                the user's own that returns anything but a 0-dim floating tensor, or that
                reads a tensor's value under vmap (``CheckedLoss``).
        """
        with gradients_on():
            return rerun_on_loop(self, self._meta_gradient, batch, with_metrics)

    def _meta_gradient(self, batch: TaskBatch, with_metrics: bool):
        batch = autograd_batch(check_batch(batch, self.model, self.inner.loss))
        check_finite_batch("Reptile", batch)
        self._check_head(batch.support_x[0], batch.support_y[0])
        params = params_of(self.model)
        if self.batching == "vmap":
            return self._vmapped(batch, params, with_metrics)
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        metrics = []
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            final = self._final(params, sx, sy)
            delta = {n: params[n].detach() - final[n] for n in self._moved}
            accumulate(total, delta, 1.0 / batch.num_tasks)
            if with_metrics:
                if not self.transductive:
                    final = {**final, **self.support_stats(final, sx)}
                with torch.no_grad():
                    out = self.predict(final, qx)
                    metrics.append(task_metrics(out, qy, self.inner.loss_fn(out, qy)))
        return (total, mean_metrics(metrics)) if with_metrics else total

    def _vmapped(self, batch: TaskBatch, params, with_metrics: bool):
        final = self.adapt_path_batched(batch.support_x, batch.support_y)[-1]   # [B, ...]
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for n in self._moved:
            total[n] = (params[n].detach() - final[n]).mean(0)
        if not with_metrics:
            return total
        with torch.no_grad():
            out = self.predict_batched(final, batch.query_x)                   # [B, Q, out]
            metrics = mean_metrics([task_metrics(o, y, self.inner.loss_fn(o, y))
                                    for o, y in zip(out, batch.query_y)])
        return total, metrics

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A surrogate: its value is the mean query loss after adaptation, and its gradient
        wrt the model params is ``meta_gradient`` (so ``.backward()`` gives the Reptile step).

        Args:
            batch: a ``TaskBatch`` of B tasks.

        Returns:
            ``(loss, metrics)``: the 0-dim surrogate, and ``meta_gradient``'s metrics
            (``{"loss"}``, plus ``{"accuracy"}`` for class labels).

        Raises:
            ValueError: as ``meta_gradient``.
        """
        grads, metrics = self.meta_gradient(batch, with_metrics=True)
        params = params_of(self.model)
        dot = sum((params[n] * g).sum() for n, g in grads.items())
        value = torch.as_tensor(metrics["loss"], dtype=dot.dtype).detach()
        return value + dot - dot.detach(), metrics


def _net(params: Params) -> Params:
    """``params`` without the ``STATS`` entries."""
    return split_stats(params)[0]
