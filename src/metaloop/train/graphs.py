"""The training step as one CUDA graph: meta-gradient, finite flag and Adam step, replayed.

On a GPU a meta-learning step is bound by kernel launches: each task's convolutions are
tiny. Every task of a meta-batch has the same shapes, so the whole step can be recorded once
(``torch.cuda.graph``) and replayed with one launch: the learner's meta-gradient (vmapped or
looped over the tasks, second order or not), a flag saying whether it and the loss are
finite, and a capturable Adam step whose learning rate is a device tensor (a schedule writes
it before each replay). Each meta-batch is copied into the recorded input tensors; nothing is
read back to the host.

``metaloop.train(..., cuda_graph=True)`` (config ``train.cuda_graph = true``) uses it. The
first ``WARMUP`` steps run eagerly on a side stream (the libraries pick their kernels), the
next is recorded and replayed, and every later one is a replay. The tasks must be drawn on
the GPU (``metaloop.tasks.DeviceTasks``, ``train.device_tasks = true``), in one process.
``benchmarks/gpu_graph.py`` measures the replay against the eager step on a GPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from metaloop.tasks.batch import TaskBatch, _unchecked_batch

WARMUP = 3                  # eager steps on a side stream before the one that is recorded
FIELDS = ("support_x", "support_y", "query_x", "query_y")


def check_supported(model: torch.nn.Module, generator_device: torch.device, *, sharded: bool,
                    clip_grad_norm: float, optimizer: str, prefetch: bool) -> None:
    """Raise ``ValueError`` naming why ``cuda_graph=True`` cannot train this run."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cuda":
        where = "no parameters" if p is None else f"parameters on {p.device}"
        raise ValueError(f"cuda_graph=True records the step as a CUDA graph: it needs a model "
                         f"on a CUDA device, this one has {where}")
    if generator_device.type != "cuda":
        raise ValueError("cuda_graph=True needs the tasks drawn on the GPU "
                         "(metaloop.tasks.DeviceTasks; config train.device_tasks = true): a "
                         "host-side family copies every batch in")
    if sharded:
        raise ValueError("cuda_graph=True trains in one process; a torchrun run all-reduces "
                         "each step's gradients between ranks")
    if clip_grad_norm:
        raise ValueError("cuda_graph=True cannot clip the meta-gradient (clip_grad_norm reads "
                         "its norm on the host every step); set clip_grad_norm = 0")
    if optimizer != "adam":
        raise ValueError(f"cuda_graph=True records a capturable Adam step, not "
                         f"optimizer={optimizer!r}")
    if prefetch:
        raise ValueError("cuda_graph=True draws each batch in the training thread; set "
                         "prefetch off or 'auto'")


class GraphStep:
    """One outer step of ``learner`` with ``opt``, recorded as a CUDA graph and replayed.

    ``step(batch, lr)`` copies ``batch`` into the recorded inputs, sets the learning rate,
    performs the step (eagerly for the first ``WARMUP`` calls, then by replay) and returns
    ``(metrics, finite)``: copies of the step's metrics (0-dim device tensors) and of its
    flag, True where the meta-loss and meta-gradient are finite. On a model that is not on
    CUDA (``record=False``) the same step runs eagerly every time: the CPU tests check it
    against the plain loop.

    Args:
        learner: a metaloop learner with ``meta_gradient(batch, with_metrics=True)``.
        opt: its outer optimizer; on CUDA a capturable Adam whose ``lr`` is a 0-dim device
            tensor, so that a new rate needs no new graph.
        autocast: the context the meta-gradient runs in (bf16 autocast, or none).
        record: capture a graph (default: whether the model is on CUDA).
    """

    def __init__(self, learner, opt: torch.optim.Optimizer,
                 autocast: AbstractContextManager | None = None, record: bool | None = None):
        self.learner, self.opt = learner, opt
        self.autocast = autocast or nullcontext()
        self.params = dict(learner.model.named_parameters())
        first = next(iter(self.params.values()))
        self.record = first.device.type == "cuda" if record is None else record
        self.inputs: dict[str, torch.Tensor] | None = None
        self.batch: TaskBatch | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out = None
        self.calls = 0

    def _load(self, batch) -> None:
        if self.inputs is None:
            self.inputs = {f: getattr(batch, f).clone() for f in FIELDS}
            self.batch = _unchecked_batch(  # type: ignore[call-arg]  # FIELDS: four tensors
                *(self.inputs[f] for f in FIELDS), None)
            return
        for f in FIELDS:
            src = getattr(batch, f)
            if src.shape != self.inputs[f].shape or src.dtype != self.inputs[f].dtype:
                raise ValueError(f"cuda_graph=True: {f} is {tuple(src.shape)} {src.dtype}, the "
                                 f"recorded step takes {tuple(self.inputs[f].shape)} "
                                 f"{self.inputs[f].dtype}: every meta-batch must have the "
                                 f"same shapes")
            self.inputs[f].copy_(src)

    def _set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)                  # in place: the graph reads this memory
            else:
                group["lr"] = lr

    def _step(self):
        with self.autocast:
            grads, metrics = self.learner.meta_gradient(self.batch, with_metrics=True)
        finite = torch.stack([torch.isfinite(g).all() for g in grads.values()]
                             + [torch.isfinite(metrics["loss"]).all()]).all()
        for n, p in self.params.items():
            p.grad = grads[n]
        self.opt.step()
        return metrics, finite

    def step(self, batch, lr: float):
        """This iteration's step on ``batch`` at learning rate ``lr``; see the class."""
        self._load(batch)
        self._set_lr(lr)
        if not self.record:
            out = self._step()
        elif self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                if self.calls < WARMUP:
                    out = self._step()
                else:                                  # record this step, then run it
                    self.graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(self.graph, stream=side):
                        self.out = self._step()
            torch.cuda.current_stream().wait_stream(side)
            if self.graph is not None:
                self.graph.replay()
                out = self.out
        else:
            self.graph.replay()
            out = self.out
        self.calls += 1
        metrics, finite = out
        return {k: v.clone() for k, v in metrics.items()}, finite.clone()
