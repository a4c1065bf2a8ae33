"""Memory layout of the head learners' image batches on the CPU: NCHW or channels-last.

Times ``meta_gradient`` of R2D2 and MetaOptNet-SVM on the shapes of the Omniglot 20-way
1-shot cpu profiles (stride Conv4 with 64 filters, meta-batch 8, 1 support and 5 queries per
class, random images: the data does not change the cost), with the backbone fed NCHW
batches and channels-last ones (``metaloop.func.params.conv_layout``, what the learners
use), interleaved A B A B in one process, in float32. Prints the median seconds of each and
their ratio, after checking in float64 that the two layouts give the same meta-gradient
(relative 1e-10; in float32 the first conv's weight gradient, a sum with much cancellation
before BatchNorm, differs by rounding, ~1e-3 relative, in either layout).

    python benchmarks/bench_layout.py [--reps 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch
from _timing import interleaved_medians  # benchmarks/ is on sys.path

import metaloop as ml
import metaloop.meta._head_learner as head_learner
from metaloop.meta import R2D2, MetaOptNet
from metaloop.models import Conv4


@contextlib.contextmanager
def nchw():
    """The learners' ``conv_layout`` replaced by the identity: plain NCHW batches."""
    saved = head_learner.conv_layout
    head_learner.conv_layout = lambda model, x: x
    try:
        yield
    finally:
        head_learner.conv_layout = saved


def batch(b=8, ways=20, queries=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return ml.TaskBatch(torch.rand(b, ways, 1, 28, 28, generator=g, dtype=dtype),
                        torch.arange(ways).repeat(b, 1),
                        torch.rand(b, ways * queries, 1, 28, 28, generator=g, dtype=dtype),
                        torch.arange(ways).repeat_interleave(queries).repeat(b, 1))


def learners():
    torch.manual_seed(0)
    yield "R2D2", R2D2(Conv4(1, 64, 20, pool="stride"), scale=10.0, batching="loop")
    torch.manual_seed(0)
    yield "MetaOptNet-SVM", MetaOptNet(Conv4(1, 64, 20, pool="stride"), head="svm", steps=10,
                                       grad="implicit", scale=8.0, batching="loop")


def rel_err(a: dict, b: dict) -> float:
    num = sum((a[k] - b[k]).double().pow(2).sum() for k in a).sqrt()
    return float(num / sum(a[k].double().pow(2).sum() for k in a).sqrt())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tb = batch()
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}")
    print(f"{'learner':16s} {'NCHW s':>8s} {'ch-last s':>9s} {'speed-up':>8s} "
          f"{'f64 grad err':>12s}")
    tb64 = batch(dtype=torch.float64)
    for name, learner in learners():
        learner.model.double()
        with nchw():
            ref = learner.meta_gradient(tb64)
        err = rel_err(ref, learner.meta_gradient(tb64))
        if err > 1e-10:
            raise SystemExit(f"{name}: the layouts' meta-gradients differ (rel {err:.1e})")
        learner.model.float()
        step = functools.partial(learner.meta_gradient, tb)
        med = interleaved_medians(
            {"nchw": step, "cl": step}, args.reps,
            context=lambda key: nchw() if key == "nchw" else contextlib.nullcontext())
        a, c = med["nchw"], med["cl"]
        print(f"{name:16s} {a:8.3f} {c:9.3f} {a / c:7.2f}x {err:12.1e}")


if __name__ == "__main__":
    main()
