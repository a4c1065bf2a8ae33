"""The random-initialisation baseline: no meta-training, fine-tuned at test time."""

from __future__ import annotations

import torch
from torch import nn

from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.params import params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    check_batch,
    mean_metrics,
    resolve_batching,
    task_metrics,
)
from metaloop.tasks.batch import TaskBatch


class Scratch(AdaptsBySGD):
    """Random init, then the same test-time SGD as the others. ``meta_trains`` is False.

    ``meta_gradient`` is all zeros (there is nothing to learn); ``ml.train`` saves the initial
    model without iterating.
    """

    meta_trains = False

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 loss="mse", adapt=None, head_init: str = "learned", batching: str = "auto"):
        self.model = model
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init)
        self.batching = resolve_batching(batching, model)   # for test-time adaptation

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean query loss after test-time adaptation (not differentiable: a constant)."""
        batch = check_batch(batch)
        losses, metrics = [], []
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            out = self.predict(self.adapt(sx, sy), qx)
            loss = self.inner.loss_fn(out, qy).detach()
            losses.append(loss)
            metrics.append(task_metrics(out, qy, loss))
        return torch.stack(losses).mean(), mean_metrics(metrics)

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        check_batch(batch)
        grads = {n: torch.zeros_like(p) for n, p in params_of(self.model).items()}
        return (grads, self.meta_loss(batch)[1]) if with_metrics else grads
