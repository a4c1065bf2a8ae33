"""The random-initialisation baseline: no meta-training, fine-tuned at test time."""

from __future__ import annotations

import torch

from metaloop.func.params import params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    check_batch,
    mean_metrics,
    task_metrics,
)
from metaloop.tasks.batch import TaskBatch


class Scratch(AdaptsBySGD):
    """Random init, then the same test-time SGD as the others. ``meta_trains`` is False.

    ``meta_gradient`` is all zeros (there is nothing to learn); ``ml.train`` saves the initial
    model without iterating.

    Args:
        model: the network, at its random initialisation.
        inner_lr: test-time SGD step size (as ``MAML``).
        inner_steps: test-time SGD steps.
        loss: "mse" or "ce" (or a callable).
        adapt: predicate or names of the parameters fine-tuned at test time (default all).
        head_init: test-time head: "learned" (the initial head) or "zero".
        batching: how test-time adaptation runs over a batch of tasks: "auto", "loop" or
            "vmap" (as ``MAML``).

    Raises:
        ValueError: the arguments as ``MAML`` checks them.
    """

    meta_trains = False

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean query loss after test-time adaptation (not differentiable: a constant)."""
        batch = check_batch(batch, self.model, self.inner.loss)
        losses, metrics = [], []
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            out = self.predict(self.adapt(sx, sy), qx)
            loss = self.inner.loss_fn(out, qy).detach()
            losses.append(loss)
            metrics.append(task_metrics(out, qy, loss))
        return torch.stack(losses).mean(), mean_metrics(metrics)

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        check_batch(batch, self.model, self.inner.loss)
        grads = {n: torch.zeros_like(p) for n, p in params_of(self.model).items()}
        return (grads, self.meta_loss(batch)[1]) if with_metrics else grads
