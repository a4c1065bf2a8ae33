"""MAML (Finn et al. 2017): backprop through the inner SGD loop; first-order as a flag."""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import torch
from torch import nn

from metaloop.adapt.learned_lr import InnerLRs, split_lrs
from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.params import Params, params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    accumulate,
    check_batch,
    grads_to_dict,
    mean_metrics,
    resolve_batching,
    task_metrics,
)
from metaloop.meta._threads import replicate, run_threads, workers_for
from metaloop.tasks.batch import TaskBatch


class MAML(AdaptsBySGD):
    """Model-agnostic meta-learning over any parameter subset.

    The meta-loss is the mean over tasks of the query loss L~_i(theta_i'), theta_i' = the
    result of ``inner_steps`` SGD steps on the support loss L_i from theta_0.

    Args:
        model: the network (its parameters are theta_0).
        inner_lr: inner SGD step size (alpha). inner_steps: inner steps at training.
        first_order: drop second derivatives (first-order MAML).
        loss: "mse" or "ce" (or a callable).
        adapt: predicate or names of the parameters adapted in the inner loop (default all).
        head_init: "learned" or "zero" (see ``SGDAdapter``).
        batching: how the tasks of a meta-batch run: "loop" (one task's graph at a time:
            least memory, fastest for conv nets on the CPU), "vmap" (all tasks at once with
            ``torch.func.vmap``: much faster for small MLPs), "threads" (the loop, its tasks
            spread over ``torch.get_num_threads()`` CPU threads of one intra-op thread each:
            1.02-1.2x faster than the loop for Conv4 on 2 cores, for one more task's graph
            in memory per extra thread; runs inline with 1 thread or off the CPU; models
            without buffers only; ``meta_gradient`` only, ``meta_loss`` loops), or "auto"
            (vmap for models without convolutions or normalisation layers, else loop). See
            docs/benchmarks.md.
        checkpoint: recompute each inner step's activations in the backward pass instead of
            keeping them: only theta at each step is stored, so memory grows with the steps
            by one parameter set each, not by one step's activations (second order; first
            order keeps no activations across steps anyway). Costs about one more forward
            and gradient pass per step. Needs the loop batching: "auto" picks it.
        compile: run each task's query forward pass (and so its backward) through
            ``torch.compile`` in meta-training. The query loss is differentiated once (to
            theta'; the eager support graph carries the second order), so the compiled
            function is exact to float rounding. It costs one compile (~30-40 s on the CPU,
            and a C++ compiler) and pays on the stride-2 Conv4 (query pass 1.27x faster on the
            CPU, ``benchmarks/bench_compile.py``), not on the max-pool one (1.04x). Loop
            batching only (one thread); evaluation stays eager.
        learn_lr: meta-learn the inner step sizes, one per adapted tensor and inner step
            (MAML++'s LSLR; ``metaloop.adapt.learned_lr``), all starting at ``inner_lr``.
            ``self.model`` is then an ``InnerLRs`` wrapper: the network as ``net.*`` plus
            ``inner_lr`` ``[inner_steps, adapted tensors]``; ``self.net`` is the network.
            Test-time steps past ``inner_steps`` reuse the last step's sizes.

    Raises:
        ValueError: ``checkpoint=True`` or ``compile=True`` with ``batching="vmap"``;
            ``compile=True`` with ``batching="threads"``; ``batching="threads"`` for a model
            with buffers; ``learn_lr=True`` with ``checkpoint=True``.
    """

    meta_trains = True

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, loss="mse", adapt=None, head_init="learned",
                 batching: str = "auto", checkpoint: bool = False, compile: bool = False,
                 learn_lr: bool = False):
        self.net = self.model = model
        self.first_order = bool(first_order)
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init,
                                checkpoint=bool(checkpoint))
        if learn_lr and checkpoint:
            raise ValueError("MAML(learn_lr=True, checkpoint=True) is not supported: the "
                             "checkpointed inner step takes a fixed step size")
        if learn_lr:
            self.model = InnerLRs(model, len(self.inner.names), inner_steps, inner_lr)
        self.batching = resolve_batching(batching, model, threads=True)
        if checkpoint and batching == "vmap":
            raise ValueError("MAML(checkpoint=True, batching='vmap') is not supported: the "
                             "checkpointed inner step has no vmap rule; use "
                             "batching='loop' or 'auto'")
        if compile and batching in ("vmap", "threads"):
            raise ValueError(f"MAML(compile=True) compiles the looped query pass on one "
                             f"thread; use batching='loop' or 'auto', not {batching!r}")
        if (checkpoint or compile) and batching == "auto":
            self.batching = "loop"
        self.compile = bool(compile)
        self._query_fwd = _compiled(self.inner.fwd) if compile else self.inner.fwd
        self._replicas: list[SGDAdapter] = []     # one per extra thread (batching="threads")

    def _task_loss(self, params: Params, sx, sy, qx, qy, functional=False, lrs=None,
                   inner: SGDAdapter | None = None):
        """One task's query loss and outputs; ``params`` are the network's (``lrs``: the
        learned step-size table or None; ``inner``: a thread's adapter, default ours)."""
        inner = inner or self.inner
        fast = inner.run(params, sx, sy, create_graph=not self.first_order,
                         started=functional, functional=functional, lr=lrs)
        out = (self._query_fwd if inner is self.inner else inner.fwd)(fast, qx)   # [Q, out]
        return inner.loss_fn(out, qy), out

    def _vmapped(self, batch: TaskBatch, params: Params):
        net, lrs = split_lrs(self.model, params)
        start = self.inner.start(net, batch.support_y)
        losses, outs = torch.func.vmap(
            lambda sx, sy, qx, qy: self._task_loss(start, sx, sy, qx, qy, True, lrs)
        )(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        metrics = mean_metrics([task_metrics(o, y, l)
                                for o, y, l in zip(outs, batch.query_y, losses)])
        return losses.mean(), metrics

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean query loss over tasks after adaptation; differentiable wrt the model params."""
        batch = check_batch(batch)
        params = params_of(self.model)
        if self.batching == "vmap":
            return self._vmapped(batch, params)
        net, lrs = split_lrs(self.model, params)
        losses, metrics = [], []
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            loss, out = self._task_loss(net, sx, sy, qx, qy, lrs=lrs)
            losses.append(loss)
            metrics.append(task_metrics(out, qy, loss))
        return torch.stack(losses).mean(), mean_metrics(metrics)

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d theta_0 as name -> tensor (looped: one task's graph at a time)."""
        batch = check_batch(batch)
        params = params_of(self.model)
        names = list(params)
        if self.batching == "vmap":
            loss, metrics = self._vmapped(batch, params)
            g = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            total = grads_to_dict(names, g, params)
            return (total, metrics) if with_metrics else total
        net, lrs = split_lrs(self.model, params)
        tasks = range(batch.num_tasks)
        workers = workers_for(self.net, batch.num_tasks) if self.batching == "threads" else 1
        inners = [self.inner, *self._thread_inners(workers - 1)]
        parts = run_threads([partial(self._tasks_gradient, batch, tasks[k::workers], inner,
                                     params, names, net, lrs)
                             for k, inner in enumerate(inners)])
        total = parts[0][0]
        for part, _ in parts[1:]:
            accumulate(total, part, 1.0)
        metrics = [m for _, m in sorted(i_m for _, ms in parts for i_m in ms)]
        return (total, mean_metrics(metrics)) if with_metrics else total

    def _tasks_gradient(self, batch, tasks, inner, params, names, net, lrs):
        """Sum over ``tasks`` of d query loss / d theta_0 / num_tasks (one task's graph at a
        time), and [(task, metrics)]."""
        total, metrics = None, []
        for i in tasks:
            sx, sy, qx, qy = batch.task(i)
            loss, out = self._task_loss(net, sx, sy, qx, qy, lrs=lrs, inner=inner)
            g = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            total = accumulate(total, grads_to_dict(names, g, params), 1.0 / batch.num_tasks)
            metrics.append((i, task_metrics(out, qy, loss)))
        return total, metrics

    def _thread_inners(self, n: int) -> list[SGDAdapter]:
        """``n`` copies of ``self.inner``, each over its own replica of the network."""
        while len(self._replicas) < n:
            self._replicas.append(dataclasses.replace(self.inner,
                                                      model=replicate(self.inner.model)))
        return self._replicas[:n]


def _compiled(fn):
    """``torch.compile(fn)`` for fixed shapes. Torch's own warnings while it compiles say
    nothing to our users (importing inductor: its deprecated ``torch.jit.script_method``;
    dynamo tracing: reading ``.grad`` of theta', which is not a leaf), so they are hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated",
                                DeprecationWarning)
        compiled = torch.compile(fn, dynamic=False)

    def call(*args):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a "
                                    "leaf", UserWarning)
            return compiled(*args)
    return call
