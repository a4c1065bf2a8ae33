"""The multi-task pretraining baseline: one model trained on the union of all training tasks."""

from __future__ import annotations

import torch

from metaloop.adapt.sgd import gradients_on
from metaloop.func.params import params_of
from metaloop.meta._common import (
    AdaptsBySGD,
    autograd_batch,
    check_batch,
    grads_to_dict,
    task_metrics,
)
from metaloop.tasks.batch import TaskBatch


class Pretrain(AdaptsBySGD):
    """Ordinary supervised learning on every example of the meta-training tasks, no inner loop.

    Regression: the model regresses all (x, y) pairs of all tasks (for sinusoids it learns the
    mean function). Classification: the model's head has one output per *global* training
    class (``batch.classes`` maps task-local labels to them); at test time it adapts like the
    others, starting from a zero head of the task's size (``head_init="zero"``).

    Args:
        model: the network (for classification its head has ``num_classes`` outputs).
        inner_lr: test-time SGD step size (as ``MAML``).
        inner_steps: test-time SGD steps.
        loss: "mse" or "ce" (or a callable), in training and at test time.
        adapt: predicate or names of the parameters fine-tuned at test time (default all).
        head_init: test-time head: "learned" (keep the pretrained head) or "zero".
        batching: how test-time adaptation runs over a batch of tasks: "auto", "loop" or
            "vmap" (as ``MAML``); training is one batch of every task's examples.

    Raises:
        ValueError: the learner's arguments as ``MAML`` checks them, a head_init other than
            "learned" or "zero", and (from ``meta_loss``) a classification batch without
            ``TaskBatch.classes``.
    """

    meta_trains = True
    # its meta-batch is one batch of every task's examples: BatchNorm statistics span tasks
    pools_tasks = True

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss of the unadapted model on support and query of every task.

        Raises:
            ValueError: a batch ``check_batch`` refuses (not a ``TaskBatch``, on another
                device or in another float dtype than the model, labels of the wrong kind);
                classification tasks without ``TaskBatch.classes`` (the global class ids of
                each task's labels); or a global class id the model has no output for (its
                head has fewer outputs than the largest id + 1).
        """
        batch = check_batch(batch, self.model, self.inner.loss)
        x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)     # [B*(S+Q), ...]
        y = torch.cat([batch.support_y, batch.query_y], 1)                     # [B, S+Q, ...]
        if batch.is_classification:
            if batch.classes is None:
                raise ValueError("Pretrain on classification tasks needs TaskBatch.classes "
                                 "(global class ids of each task's labels)")
            y = batch.classes.gather(1, y)                                    # global ids
        y = y.flatten(0, 1)
        out = self.inner.fwd(params_of(self.model), x)
        if batch.is_classification and out.shape[-1] <= int(y.max()):
            raise ValueError(f"Pretrain model has {out.shape[-1]} outputs but the batch has "
                             f"global class {int(y.max())}: size its head to num_classes")
        loss = self.inner.loss_fn(out, y)
        return loss, task_metrics(out, y, loss)

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d parameter as name -> tensor (zeros where unused), the same under
        ``torch.no_grad()`` and ``torch.inference_mode()``; with the metrics if asked."""
        with gradients_on():
            loss, metrics = self.meta_loss(autograd_batch(check_batch(batch)))
            params = params_of(self.model)
            g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            grads = grads_to_dict(list(params), g, params)
        return (grads, metrics) if with_metrics else grads
