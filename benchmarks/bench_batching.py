"""How to batch the tasks of a meta-batch: a per-task loop, the loop on threads, or vmap.

Times ``MAML.meta_gradient`` (second order, 1 inner step) with ``batching="loop"``,
``"threads"`` (the tasks spread over ``--threads`` threads of one intra-op thread each; the
same as the loop with 1 thread) and ``"vmap"``, interleaved A B C A B C in one process, and
prints medians and the ratios to the loop for
  - sinusoid: MLP 1-40-40-1, 5 shots, 10 queries, meta-batch 25;
  - omniglot: Conv4 (64 filters, max-pool, BatchNorm), 5-way 1-shot, 15 queries/class,
    meta-batch 32 (random images: the data does not change the cost).

    python benchmarks/bench_batching.py [--reps 10] [--threads N]

The gradients of the paths are compared first (a faster wrong answer does not count).
"""

from __future__ import annotations

import argparse
import functools

import torch
from _timing import allocator, interleaved_medians, require_positive  # benchmarks/ is on sys.path

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP, Conv4


def omniglot_batch(b=32, ways=5, shots=1, queries=15):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(b, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(b, 1)
    return ml.TaskBatch(torch.rand(b, ways * shots, 1, 28, 28, generator=g), sy,
                        torch.rand(b, ways * queries, 1, 28, 28, generator=g), qy)


def cases():
    torch.manual_seed(0)
    sine = ml.tasks.Sinusoid(5, 10).sample(25, torch.Generator().manual_seed(0))
    yield "sinusoid MLP", MLP(), "mse", 0.01, sine
    yield "omniglot Conv4", Conv4(1, 64, 5), "ce", 0.4, omniglot_batch()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--skip-conv", action="store_true")
    args = ap.parse_args()
    require_positive(ap, args, "reps")
    if args.threads < 0:
        ap.error(f"--threads must be an int >= 0 (0: torch's choice), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {allocator()}")
    cols = ("loop s/it", "threads s/it", "vmap s/it", "threads/loop", "vmap/loop", "rel err")
    print(f"{'case':16s} " + " ".join(f"{c:>12s}" for c in cols))
    for name, model, loss, lr, batch in cases():
        if args.skip_conv and "Conv4" in name:
            continue
        ways = ("loop", "threads", "vmap")
        learners = {b: MAML(model, lr, 1, loss=loss, batching=b) for b in ways}
        ga, *others = (learners[b].meta_gradient(batch) for b in ways)
        # relative to the largest gradient entry overall: conv biases before BatchNorm have
        # exactly-zero true gradients, whose float32 round-off would blow up a per-tensor ratio
        top = max(float(g.abs().max()) for g in ga.values())
        err = max(float((ga[k] - gb[k]).abs().max()) for gb in others for k in ga) / top
        reps = args.reps if "MLP" in name else max(3, args.reps // 3)
        med = interleaved_medians({b: functools.partial(learner.meta_gradient, batch)
                                   for b, learner in learners.items()}, reps)
        lo, th, vm = med["loop"], med["threads"], med["vmap"]
        print(f"{name:16s} {lo:12.4f} {th:12.4f} {vm:12.4f} {th / lo:12.2f} {vm / lo:12.2f} "
              f"{err:12.2e}")


if __name__ == "__main__":
    main()
