"""Memory layout of the learners' image batches on the CPU: NCHW or channels-last.

For second-order MAML, R2D2 and MetaOptNet-SVM on a real Omniglot 20-way 1-shot batch
(stride Conv4 with 64 filters, 1 support and 5 queries per class, ``batching="loop"``):

1. **Exactness in float32.** The float32 meta-gradient with NCHW batches (what the learners
   use) and with channels-last ones (``metaloop.func.params.channels_last``), each against
   the float64 NCHW one: the worst over tensors of ||error|| / ||reference|| (tensors with
   a zero gradient left out: the conv biases, which BatchNorm follows, and the head
   learners' unused Conv4 head).
2. **Speed.** ``meta_gradient`` in float32 with each layout, interleaved A B A B in one
   process; median seconds and their ratio.

Real images matter: on random ones both layouts are exact. Omniglot's blank backgrounds
give near-constant channels, where torch's fused CPU BatchNorm on channels-last float32
tensors loses precision.

    python benchmarks/bench_layout.py [--reps 5] [--threads 1] [--tasks 4]
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch
from _timing import allocator, interleaved_medians, require_positive  # benchmarks/ is on sys.path

import metaloop.adapt.sgd as sgd
import metaloop.meta._head_learner as head_learner
from metaloop.func.params import channels_last
from metaloop.func.params import forward as plain_forward
from metaloop.meta import MAML, R2D2, MetaOptNet
from metaloop.models import Conv4
from metaloop.tasks import Omniglot


def _cl_forward(model, params, x, **kw):
    return plain_forward(model, params, channels_last(x), **kw)


@contextlib.contextmanager
def layout(name: str):
    """Within: the learners' network calls get ``name`` ("nchw" or "cl") image batches."""
    if name == "nchw":
        yield
        return
    saved = sgd.forward, head_learner.forward
    sgd.forward = head_learner.forward = _cl_forward
    try:
        yield
    finally:
        sgd.forward, head_learner.forward = saved


def learner(kind: str, dtype):
    torch.manual_seed(0)
    model = Conv4(1, 64, 20, pool="stride").to(dtype)
    if kind == "MAML (2 steps)":
        return MAML(model, 0.1, 2, loss="ce", batching="loop")
    if kind == "R2D2":
        return R2D2(model, scale=10.0, batching="loop")
    return MetaOptNet(model, head="svm", steps=10, grad="implicit", scale=8.0,
                      batching="loop")


def worst(got: dict, ref: dict) -> float:
    return max(float((got[n].double() - ref[n]).norm() / ref[n].norm())
               for n in ref if not n.endswith("conv.bias") and float(ref[n].abs().max()) > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--root", default=None, help="Omniglot root (default: the search path)")
    args = ap.parse_args()
    require_positive(ap, args, "reps", "threads", "tasks")
    torch.set_num_threads(args.threads)
    try:
        fam = Omniglot(args.root, split="train", ways=20, shots=1, queries=5)
    except FileNotFoundError as e:                 # its first line names what is missing
        missing = str(e).splitlines()[0]
        ap.error(f"{missing} (give the Omniglot folder with --root)")
    tb = fam.sample(args.tasks, generator=torch.Generator().manual_seed(0))
    tb64 = tb.to(torch.device("cpu"), torch.float64)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {allocator()}, Omniglot "
          f"20-way 1-shot, {args.tasks} tasks, median of {args.reps}")
    print(f"{'learner':16s} {'f32 err NCHW':>12s} {'f32 err ch-last':>15s} {'NCHW s':>8s} "
          f"{'ch-last s':>9s} {'ch-last speed-up':>16s}")
    for kind in ("MAML (2 steps)", "R2D2", "MetaOptNet-SVM"):
        ref = learner(kind, torch.float64).meta_gradient(tb64)
        lrn = learner(kind, torch.float32)
        errs = {}
        for name in ("nchw", "cl"):
            with layout(name):
                errs[name] = worst(lrn.meta_gradient(tb), ref)
        step = functools.partial(lrn.meta_gradient, tb)
        med = interleaved_medians({"nchw": step, "cl": step}, args.reps, context=layout)
        print(f"{kind:16s} {errs['nchw']:12.1e} {errs['cl']:15.1e} {med['nchw']:8.3f} "
              f"{med['cl']:9.3f} {med['nchw'] / med['cl']:15.2f}x")


if __name__ == "__main__":
    main()
