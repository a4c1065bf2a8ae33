"""Does torch.compile pay on the CPU for MAML's query pass? (a candidate fast path)

In second-order MAML the query loss is differentiated once (to theta'; the eager support
graph carries the second order), so the query pass is the one part that a compiled
(AOTAutograd + inductor) function could replace exactly, and it is ~83% of an iteration's
FLOPs. This checks that eager and compiled give the same gradient, then times the query
forward + backward of Conv4 on one task's query set (5-way, 15 queries, channels-last),
interleaved in rounds, and prints the compile time and the ratio.

    python benchmarks/bench_compile.py --pool max --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import allocator, require_positive  # run as a script: benchmarks/ is on sys.path
from bench_maml import relative_error
from torch.func import functional_call

from metaloop.models.conv4 import Conv4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", choices=["max", "stride"], default="max")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--queries", type=int, default=75, help="query images (5-way x 15)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    a = ap.parse_args()
    require_positive(ap, a, "threads", "queries", "reps", "iters")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, a.dtype))
    model = Conv4(1, 64, 5, pool=a.pool)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    x = torch.randn(a.queries, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.arange(5).repeat(a.queries // 5 + 1)[: a.queries]

    def query_loss(p, x, y):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    compiled = torch.compile(query_loss)

    def grad(fn):
        adapted = {k: v * 1.0 for k, v in params.items()}     # non-leaf, as theta' is
        return torch.autograd.grad(fn(adapted, x, y), list(params.values()))

    t = time.perf_counter()
    g_compiled = grad(compiled)
    compile_s = time.perf_counter() - t
    err = relative_error(dict(enumerate(g_compiled)), dict(enumerate(grad(query_loss))))
    times = {"eager": [], "compiled": []}
    for _ in range(a.reps):
        for name, fn in (("eager", query_loss), ("compiled", compiled)):
            t = time.perf_counter()
            for _ in range(a.iters):
                grad(fn)
            times[name].append((time.perf_counter() - t) / a.iters)
    eager, comp = (statistics.median(times[k]) for k in ("eager", "compiled"))
    print(f"torch {torch.__version__}, {a.threads} thread(s), {allocator()}, Conv4 pool={a.pool}, "
          f"{a.queries} query images, {a.dtype}; median of {a.reps} x {a.iters}")
    print(f"compile + first call {compile_s:.1f} s; max rel gradient difference {err:.1e}")
    print(f"eager {eager * 1e3:.1f} ms, compiled {comp * 1e3:.1f} ms, "
          f"eager / compiled = {eager / comp:.2f}")


if __name__ == "__main__":
    main()
