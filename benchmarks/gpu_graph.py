"""The training step as one CUDA graph (``metaloop.train.graphs``) against the eager step.

The probe for a GPU, run by ``benchmarks/gpu_paper.sh`` among its checks. It answers:
does the step record (a host synchronisation or a data-dependent shape inside it makes
capture fail, and the error is reported), how much faster is a replay than the eager step,
and is a replay the same step (the parameters after the same batches, replayed against
eager, both with a capturable Adam).

    python benchmarks/gpu_graph.py [--config configs/omniglot_maml_5w1s_full.toml] \\
        [--iters 30] [--device cuda] [--meta-batch B] [--channels C]

prints one JSON line: ``captured`` (true, or the capture error), ``eager_s_per_it``,
``graph_s_per_it``, ``speedup``, ``all_finite`` and ``max_relative_param_difference``.
Batches come from ``DeviceTasks`` and the steps run inside
``valid_by_construction()``, as ``metaloop.train`` runs them, so a head learner's config
(``configs/omniglot_challenge_gpu.toml``) is probed as it would train.
``--device cpu`` runs ``GraphStep``'s code path without recording (a CUDA graph needs CUDA):
``tests/test_benchmarks.py`` checks that it gives the eager step's parameters exactly.
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
from metaloop.evaluate.records import gpu_device  # noqa: E402
from metaloop.tasks.batch import valid_by_construction  # noqa: E402
from metaloop.tasks.device import DeviceTasks  # noqa: E402
from metaloop.train.graphs import WARMUP, GraphStep  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _timing import require_positive  # noqa: E402


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
    batches = [tasks.sample(mb, gen) for _ in range(WARMUP + 1 + iters)]
    learner = _build.build_learner(cfg, fam, device=dev)
    learner.model.to(dev)
    twin = copy.deepcopy(learner)            # the same start, stepped eagerly
    lr = cfg["train"]["lr"]
    cuda = dev.type == "cuda"

    def adam(model):
        t = torch.tensor(lr, device=dev) if cuda else lr
        return torch.optim.Adam(model.parameters(), lr=t, capturable=cuda), t

    out = {"config": config, "device": gpu_device(dev) if cuda else "cpu",
           "torch": torch.__version__, "meta_batch": mb, "iters": iters}
    eager_opt, _ = adam(twin.model)
    _sync(dev)
    t0 = time.perf_counter()
    with valid_by_construction():           # as metaloop.train steps on DeviceTasks' batches
        for i, b in enumerate(batches):     # the training loop's step, on each batch as drawn
            if i == WARMUP + 1:
                _sync(dev)
                t0 = time.perf_counter()
            grads = twin.meta_gradient(b)
            for n, p in twin.model.named_parameters():
                p.grad = grads[n]
            eager_opt.step()
    _sync(dev)
    out["eager_s_per_it"] = (time.perf_counter() - t0) / iters

    opt, _ = adam(learner.model)
    step = GraphStep(learner, opt)                # records on CUDA, eager on the CPU
    try:
        with valid_by_construction():
            for b in batches[:WARMUP + 1]:        # warm-up steps, then the recorded one
                step.step(b, lr)
        out["captured"] = True if cuda else "no graph on the CPU: the same step, eagerly"
    except Exception as e:                       # the probe's answer, not a failure of it
        out["captured"] = f"{type(e).__name__}: {str(e)[:400]}"
        return out
    _sync(dev)
    t0 = time.perf_counter()
    finite = []
    with valid_by_construction():
        for b in batches[WARMUP + 1:]:
            _, ok = step.step(b, lr)
            finite.append(ok)
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
    ap.add_argument("--device", choices=("cuda", "cpu"),
                    default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda (the default where torch sees a GPU); cpu runs the same step "
                         "without recording, only to try the script")
    ap.add_argument("--iters", type=int, default=30, help="timed steps of each kind")
    ap.add_argument("--meta-batch", type=int, help="default: the config's")
    ap.add_argument("--channels", type=int, help="default: the config's")
    args = ap.parse_args()
    require_positive(ap, args, "iters", "meta_batch", "channels")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here; --device cpu only tries the "
                 "script")
    try:
        _config.load(args.config)
    except (ValueError, FileNotFoundError) as e:
        ap.error(f"--config {args.config}: {e}")
    print(json.dumps(probe(args.config, args.device, args.iters, args.meta_batch,
                           args.channels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
