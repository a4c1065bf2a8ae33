"""A training step captured as one CUDA graph: the meta-gradient, the finite check and Adam.

The probe for a lent GPU. It answers three questions before the training loop gets a graph path:
does the step capture (a host synchronisation or a data-dependent shape inside it makes
capture fail, and the error is reported), how much faster is a replay than the eager step,
and is a replay the same step (the parameters after the same batches, graph against eager).

On a GPU every task of a meta-batch has the same shapes, so the whole step (second-order
meta-gradient over the vmapped tasks, the per-parameter finite flags, a capturable Adam step
whose learning rate is a device tensor) is recorded once and replayed. Each new meta-batch is
copied into the captured input tensors (``StaticStep.load``); nothing is read back.

    python benchmarks/gpu_graph.py [--config configs/omniglot_maml_5w1s_full.toml] \\
        [--iters 30] [--device cuda]

prints one JSON line: ``captured`` (true, or the capture error), ``eager_s_per_it``,
``graph_s_per_it``, ``speedup`` and ``max_relative_param_difference`` after the same
batches. ``--device cpu`` runs the same step through its static inputs without a graph (a
CUDA graph needs CUDA): ``tests/test_benchmarks.py`` checks on the CPU that this gives the
eager step's parameters exactly.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from metaloop import build as _build  # noqa: E402
from metaloop import config as _config  # noqa: E402
from metaloop.tasks.device import DeviceTasks, _unchecked_batch  # noqa: E402

FIELDS = ("support_x", "support_y", "query_x", "query_y")
WARMUP = 3          # eager steps on a side stream before capture (cuDNN/cuBLAS choose kernels)


class StaticStep:
    """One outer step of ``learner`` with ``opt``, on tensors that stay where they are.

    ``load(batch)`` copies a meta-batch into the step's input tensors (same shapes every
    time); ``run()`` performs the step, by replaying the captured graph after ``capture()``
    or eagerly before it, and returns ``(metrics, finite)``: device tensors that the next run
    overwrites (clone what you keep). ``lr`` is a 0-dim device tensor the optimizer reads,
    so a schedule is ``step.lr.fill_(value)`` without recapture.
    """

    def __init__(self, learner, opt: torch.optim.Optimizer, example, lr: torch.Tensor):
        self.learner, self.opt, self.lr = learner, opt, lr
        self.inputs = {f: getattr(example, f).clone() for f in FIELDS}
        self.batch = _unchecked_batch(*(self.inputs[f] for f in FIELDS), None)
        self.params = dict(learner.model.named_parameters())
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out = None

    def load(self, batch) -> None:
        for f in FIELDS:
            src = getattr(batch, f)
            if src.shape != self.inputs[f].shape:
                raise ValueError(f"{f} has shape {tuple(src.shape)}; the captured step takes "
                                 f"{tuple(self.inputs[f].shape)}")
            self.inputs[f].copy_(src)

    def _step(self):
        grads, metrics = self.learner.meta_gradient(self.batch, with_metrics=True)
        finite = torch.stack([torch.isfinite(g).all() for g in grads.values()]
                             + [torch.isfinite(metrics["loss"])]).all()
        for n, p in self.params.items():
            p.grad = grads[n]
        self.opt.step()
        return metrics, finite

    def capture(self, warmup_batches) -> None:
        """Warm up on a side stream with ``warmup_batches`` (real steps), then record."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in warmup_batches:
                self.load(b)
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._step()

    def run(self):
        if self.graph is None:
            return self._step()
        self.graph.replay()
        return self.out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def probe(config: str, device: str = "cuda", iters: int = 30, meta_batch: int | None = None,
          channels: int | None = None) -> dict:
    """Eager against captured steps of ``config``'s learner on the same batches."""
    dev = torch.device(device)
    cfg = _config.load(config)
    cfg["method"]["batching"] = "vmap"
    if channels:
        cfg["model"]["channels"] = channels
    fam = _build.build_family(cfg["family"])
    mb = meta_batch or cfg["train"]["meta_batch"]
    tasks = DeviceTasks(_build.training_family(cfg, fam), dev)
    gen = torch.Generator(device=tasks.generator_device).manual_seed(0)
    batches = [tasks.sample(mb, gen) for _ in range(WARMUP + iters)]
    learner = _build.build_learner(cfg, fam, device=dev)
    learner.model.to(dev)
    twin = copy.deepcopy(learner)            # the same start, stepped eagerly
    lr = cfg["train"]["lr"]
    cuda = dev.type == "cuda"

    def adam(model):
        t = torch.tensor(lr, device=dev) if cuda else lr
        return torch.optim.Adam(model.parameters(), lr=t, capturable=cuda), t

    out = {"config": config, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
           "torch": torch.__version__, "meta_batch": mb, "iters": iters}
    eager_opt, _ = adam(twin.model)
    _sync(dev)
    t0 = time.perf_counter()
    for i, b in enumerate(batches):         # the training loop's step, on each batch as drawn
        if i == WARMUP:
            _sync(dev)
            t0 = time.perf_counter()
        grads = twin.meta_gradient(b)
        for n, p in twin.model.named_parameters():
            p.grad = grads[n]
        eager_opt.step()
    _sync(dev)
    out["eager_s_per_it"] = (time.perf_counter() - t0) / iters

    opt, lr_t = adam(learner.model)
    step = StaticStep(learner, opt, batches[0], lr_t)
    if cuda:
        try:
            step.capture(batches[:WARMUP])
            out["captured"] = True
        except Exception as e:                   # the probe's answer, not a failure of it
            out["captured"] = f"{type(e).__name__}: {str(e)[:400]}"
            return out
    else:
        for b in batches[:WARMUP]:
            step.load(b)
            step.run()
        out["captured"] = "no graph on the CPU: the static step run eagerly"
    _sync(dev)
    t0 = time.perf_counter()
    finite = []
    for b in batches[WARMUP:]:
        step.load(b)
        _, ok = step.run()
        finite.append(ok.clone())
    _sync(dev)
    out["graph_s_per_it"] = (time.perf_counter() - t0) / iters
    out["speedup"] = out["eager_s_per_it"] / out["graph_s_per_it"]
    out["all_finite"] = bool(torch.stack(finite).all())
    diffs = [float((p.detach().double() - q.detach().double()).norm()
                   / q.detach().double().norm().clamp_min(1e-30))
             for p, q in zip(learner.model.parameters(), twin.model.parameters())]
    out["max_relative_param_difference"] = max(diffs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "omniglot_maml_5w1s_full.toml"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--meta-batch", type=int, help="default: the config's")
    ap.add_argument("--channels", type=int, help="default: the config's")
    args = ap.parse_args()
    print(json.dumps(probe(args.config, args.device, args.iters, args.meta_batch,
                           args.channels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
