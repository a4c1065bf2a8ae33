"""The FLOPs of one bench_maml iteration, and what this machine's convolutions and matmuls reach.

    python benchmarks/bench_flops.py [--threads 1] [--reps 20] [--maml-tasks N]
        [--batching loop|threads]

Counts the convolution and matmul FLOPs (2 per multiply-add) of one second-order MAML
iteration of Conv4 (1 inner step; BatchNorm, ReLU, pooling and the loss not counted, they are
memory-bound), then times, with the given threads:
  - a large matmul (2048 x 2048 x 2048);
  - Conv4's 64->64 3x3 convolution at 14x14 on 75 images (the query batch of the second
    block, the largest conv of an iteration), forward and backward, NCHW and channels-last.
It prints GFLOP/s (best and median of ``--reps``) and the resulting lower bound on the seconds
per iteration (FLOPs / best conv throughput). With ``--maml-tasks N`` it also times metaloop's
MAML meta-gradient on N tasks of the base configuration (random images, same cost as
Omniglot), interleaved with the operations above (one of each per round), and prints its
GFLOP/s as a fraction of the conv throughputs measured in the same rounds (medians): on a
loaded machine, that ratio is steadier than either number.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _timing import allocator, require_positive  # benchmarks/ is on sys.path


def conv4_layer_flops(hidden=64, in_channels=1, size=28, ways=5) -> list[int]:
    """Forward FLOPs per image of each conv layer of Conv4 (max-pool) and of the head."""
    out, cin, side = [], in_channels, size
    for _ in range(4):
        out.append(2 * side * side * hidden * cin * 9)        # 3x3, padding 1: side x side
        cin, side = hidden, side // 2
    return out + [2 * hidden * side * side * ways]


def maml_iteration_flops(ways=5, shots=1, queries=15, meta_batch=32, hidden=64) -> dict:
    """Conv/matmul FLOPs of one second-order MAML iteration with 1 inner step.

    Per image, f = all layers' forward FLOPs, f2 = those of the layers after the first (the
    first has no input gradient to compute). A gradient pass costs f (weight gradients) +
    f2 (input gradients). Query set: forward + gradient pass = 2f + f2. Support set: forward,
    the gradient pass with create_graph (f + f2), then in the outer backward pass the
    backward of that gradient pass (each of its weight- and input-gradient convolutions has
    two inputs to differentiate: 2f + 2f2) and the backward of the support forward (f + f2):
    5f + 4f2.
    """
    layers = conv4_layer_flops(hidden, 1, 28, ways)
    f, f2 = sum(layers), sum(layers[1:])
    s, q = ways * shots, ways * queries
    support, query = s * (5 * f + 4 * f2), q * (2 * f + f2)
    return {"forward_per_image": f, "support_per_task": support, "query_per_task": query,
            "iteration": meta_batch * (support + query)}


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def maml_step(tasks: int, batching: str = "loop"):
    """``run()`` computing metaloop's second-order MAML meta-gradient on ``tasks`` tasks."""
    import metaloop as ml
    from metaloop.meta import MAML
    from metaloop.models import Conv4
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    sy = torch.arange(5).repeat(tasks, 1)
    qy = torch.arange(5).repeat_interleave(15).repeat(tasks, 1)
    batch = ml.TaskBatch(torch.rand(tasks, 5, 1, 28, 28, generator=g), sy,
                         torch.rand(tasks, 75, 1, 28, 28, generator=g), qy)
    learner = MAML(Conv4(1, 64, 5), inner_lr=0.4, inner_steps=1, loss="ce", batching=batching)
    return lambda: learner.meta_gradient(batch)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--maml-tasks", type=int, default=0,
                    help="also time metaloop's MAML meta-gradient on this many tasks")
    ap.add_argument("--batching", choices=["loop", "threads"], default="loop",
                    help="the MAML learner's batching (threads: one task per thread)")
    args = ap.parse_args(argv)
    require_positive(ap, args, "threads", "reps")
    if args.maml_tasks < 0:
        ap.error(f"--maml-tasks must be an int >= 0 (0: not timed), got {args.maml_tasks}")
    torch.set_num_threads(args.threads)
    fl = maml_iteration_flops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {allocator()}")
    print(f"Conv4 forward per image {fl['forward_per_image'] / 1e6:.2f} MFLOP; per task: "
          f"support {fl['support_per_task'] / 1e9:.3f} GFLOP, query "
          f"{fl['query_per_task'] / 1e9:.3f} GFLOP; one base iteration (meta-batch 32) "
          f"{fl['iteration'] / 1e9:.1f} GFLOP")

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    cases = {"matmul 2048^3": (lambda: a @ b, 2 * n ** 3)}
    x = torch.randn(75, 64, 14, 14)
    w = torch.randn(64, 64, 3, 3, requires_grad=True)
    conv_flops = 2 * 75 * 14 * 14 * 64 * 64 * 9
    for layout, xi in (("NCHW", x), ("channels-last", x.contiguous(
            memory_format=torch.channels_last))):
        xg = xi.clone().requires_grad_()
        cases[f"conv fwd {layout}"] = (lambda xi=xi: F.conv2d(xi, w.detach(), padding=1),
                                       conv_flops)

        def fwd_bwd(xg=xg):
            y = F.conv2d(xg, w, padding=1)
            torch.autograd.grad(y, [xg, w], torch.ones_like(y))
        cases[f"conv fwd+bwd {layout}"] = (fwd_bwd, 3 * conv_flops)
    mname = f"metaloop MAML, {args.maml_tasks} tasks, {args.batching}"
    if args.maml_tasks:
        cases[mname] = (maml_step(args.maml_tasks, args.batching),
                        maml_iteration_flops(meta_batch=args.maml_tasks)["iteration"])
    times = {name: [] for name in cases}
    for fn, _ in cases.values():
        fn()                                                        # warm-up
    for _ in range(args.reps):                                      # interleaved rounds
        for name, (fn, _) in cases.items():
            times[name].append(_once(fn))
    best, rate = 0.0, {}
    print(f"{'operation':36s} {'GFLOP/s best':>13s} {'median':>8s}")
    for name, (_, flops) in cases.items():
        top = flops / min(times[name]) / 1e9
        rate[name] = flops / statistics.median(times[name]) / 1e9
        if name.startswith("conv"):
            best = max(best, top)
        print(f"{name:36s} {top:13.1f} {rate[name]:8.1f}")
    if args.maml_tasks:
        m = rate[mname]
        print("metaloop MAML as a fraction of the same rounds' median throughput: " + ", ".join(
            f"{m / rate[k]:.2f} of {k}" for k in cases if not k.startswith("metaloop")))
    print(f"limit for one base iteration at the best conv rate: "
          f"{fl['iteration'] / 1e9 / best:.2f} s ({fl['iteration'] / 1e9:.1f} GFLOP / "
          f"{best:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
