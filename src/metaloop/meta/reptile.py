"""Reptile (Nichol et al. 2018): move theta_0 toward each task's adapted theta."""

from __future__ import annotations

import torch
from torch import nn

from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.params import Params, detach, params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    accumulate,
    check_batch,
    mean_metrics,
    resolve_batching,
    task_metrics,
)
from metaloop.tasks.batch import TaskBatch


def _adam_path(adapter: SGDAdapter, params, x, y, steps, betas=(0.0, 0.999), eps=1e-8):
    """Inner Adam on the adapted names (beta1 = 0 as in the Reptile paper's code)."""
    p = adapter.start(params, y)
    m = {n: torch.zeros_like(p[n]) for n in adapter.names}
    v = {n: torch.zeros_like(p[n]) for n in adapter.names}
    for t in range(1, steps + 1):
        loss = adapter.loss_fn(adapter.fwd(p, x), y)
        grads = torch.autograd.grad(loss, [p[n] for n in adapter.names])
        new = {}
        for n, g in zip(adapter.names, grads):
            m[n] = betas[0] * m[n] + (1 - betas[0]) * g
            v[n] = betas[1] * v[n] + (1 - betas[1]) * g * g
            mh, vh = m[n] / (1 - betas[0] ** t), v[n] / (1 - betas[1] ** t)
            new[n] = (p[n] - adapter.lr * mh / (vh.sqrt() + eps)).detach().requires_grad_()
        p = {**p, **new}
    return p


class Reptile(AdaptsBySGD):
    """Reptile: ``meta_gradient`` is the mean over tasks of theta_0 - theta_final.

    An outer SGD step with rate epsilon on this direction is exactly the Reptile update
    theta_0 += epsilon * mean(theta_final - theta_0); Adam on it is the common variant.
    At test time the model adapts by plain SGD with ``inner_lr``, like MAML.

    Args:
        model: the network. inner_lr: inner step size. inner_steps: inner steps.
        inner_optimizer: "sgd" (default) or "adam".
        loss, adapt, head_init: as ``MAML``.
    """

    meta_trains = True

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 5,
                 loss="mse", adapt=None, head_init="learned", inner_optimizer: str = "sgd",
                 batching: str = "auto"):
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init)
        self.batching = resolve_batching(batching, model)
        if self.batching == "vmap" and inner_optimizer == "adam":
            self.batching = "loop"          # the inner Adam is written for one task at a time
        # A zero head restarts at 0 on every task, so theta_0's head gets no Reptile direction.
        self._moved = [n for n in self.inner.names
                       if head_init == "learned" or n not in self.inner.head]

    def _final(self, params: Params, sx, sy) -> Params:
        start = detach(params, requires_grad=True)
        with torch.enable_grad():
            if self.inner_optimizer == "adam":
                return detach(_adam_path(self.inner, start, sx, sy, self.inner.steps))
            return detach(self.inner.run(start, sx, sy, create_graph=False))

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """mean_i (theta_0 - theta_final_i) over the adapted names (zeros elsewhere)."""
        batch = check_batch(batch)
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
            with torch.no_grad():
                out = self.inner.fwd(final, qx)
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

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """A surrogate: its value is the mean query loss after adaptation, and its gradient
        wrt the model params is ``meta_gradient`` (so ``.backward()`` gives the Reptile step).
        """
        grads, metrics = self.meta_gradient(batch, with_metrics=True)
        params = params_of(self.model)
        dot = sum((params[n] * g).sum() for n, g in grads.items())
        value = torch.tensor(metrics["loss"], dtype=dot.dtype)
        return value + dot - dot.detach(), metrics
