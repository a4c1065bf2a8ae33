"""Does data loading limit Omniglot meta-training? Sampling time as a share of one meta-iteration.

Times the hot loop only: ``Omniglot.sample`` (episode indices, one gather, float conversion)
for a whole meta-batch, against one second-order MAML ``meta_gradient`` on that same batch,
measured in the same run, under the same allocator and thread settings. The acceptance line
is the issue's: a 32-task 20-way 5-shot batch with 15 queries per class must take under 5% of
one meta-iteration. The 5-way 1-shot row (the cheapest meta-iteration, the tightest ratio) is
printed too.

Run:  python benchmarks/bench_sampling.py [--threads 1] [--reps 20] [--meta-reps 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from metaloop.meta import MAML
from metaloop.models import Conv4
from metaloop.tasks import Omniglot

SETTINGS = {  # name: (ways, shots, queries, meta_batch, inner_steps, inner_lr)
    "20w5s": (20, 5, 15, 32, 5, 0.1),   # the acceptance setting (paper: 5 steps at 0.1)
    "5w1s": (5, 1, 15, 32, 1, 0.4),     # the paper's 5-way setting
}


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(name: str, reps: int, meta_reps: int, root) -> dict:
    ways, shots, queries, mb, steps, lr = SETTINGS[name]
    fam = Omniglot(root, split="train", ways=ways, shots=shots, queries=queries)
    g = torch.Generator().manual_seed(0)
    fam.sample(mb, generator=g)                                        # warm-up
    sample_s = _median_time(lambda: fam.sample(mb, generator=g), reps)
    torch.manual_seed(0)
    learner = MAML(Conv4(1, 64, ways, pool="stride"), inner_lr=lr, inner_steps=steps,
                   loss="ce", batching="loop")
    batch = fam.sample(mb, generator=g)
    meta_s = _median_time(lambda: learner.meta_gradient(batch), meta_reps)
    return {"setting": name, "sample_s": sample_s, "meta_iteration_s": meta_s,
            "ratio": sample_s / meta_s}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--reps", type=int, default=20, help="timed sampling repetitions")
    p.add_argument("--meta-reps", type=int, default=1, help="timed meta-iterations")
    p.add_argument("--settings", default="20w5s,5w1s", help=f"from {','.join(SETTINGS)}")
    p.add_argument("--root", default=None, help="Omniglot folder (default: the usual search)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = {k: os.environ.get(k, "unset") for k in ("MALLOC_MMAP_THRESHOLD_",
                                                      "MALLOC_TRIM_THRESHOLD_")}
    print(f"torch {torch.__version__}, {args.threads} thread(s), allocator {malloc}")
    print("setting  sample (ms)  meta-iteration (s)  sample / iteration   limit 5%")
    worst = 0.0
    for name in args.settings.split(","):
        r = run(name.strip(), args.reps, args.meta_reps, args.root)
        ok = "ok" if r["ratio"] < 0.05 else "OVER"
        print(f"{r['setting']:<8} {1e3 * r['sample_s']:>11.2f}  {r['meta_iteration_s']:>18.2f}"
              f"  {100 * r['ratio']:>16.3f}%  {ok}")
        worst = max(worst, r["ratio"])
    print(f"largest ratio: {100 * worst:.3f}% of one meta-iteration")


if __name__ == "__main__":
    main()
