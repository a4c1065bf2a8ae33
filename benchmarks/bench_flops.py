"""The FLOPs of one bench_maml iteration, and what this machine's convolutions and matmuls reach.

    python benchmarks/bench_flops.py [--threads 1] [--reps 20] [--maml-tasks N]
        [--batching loop|threads] [--records DIR]

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

``--records DIR`` writes the seven records of the ``benchmarks-limit`` table of
docs/benchmarks.md, ``DIR/benchmarks_flops_63.json`` ... ``_69.json`` (the number is the
record's ``order`` less 1000): the matmul's, the NCHW conv forward's and forward+backward's
median GFLOP/s, the channels-last conv forward's best, the MAML meta-gradient's median
GFLOP/s and its fraction of the NCHW conv forward's, and the lower bound on the seconds per
base iteration. Their rows name the MAML setting, 4 tasks with ``batching='threads'``, so
``--records`` needs ``--maml-tasks 4 --batching threads`` and refuses any other (it would
replace those rows' records); ``--threads`` and ``--reps`` are free, the records' device
names the threads and their ``n`` the repeats. The folder is checked before any timing.

    python benchmarks/bench_flops.py --threads 2 --maml-tasks 4 --batching threads --reps 6 \\
        --records docs/results
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

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


RECORD_MAML = {"maml_tasks": 4, "batching": "threads"}
"""The MAML setting the records' rows name: ``--records`` refuses any other."""

CONV_FLOPS = 2 * 75 * 14 * 14 * 64 * 64 * 9
"""FLOPs of the timed convolution: 64->64, 3x3, 14x14, 75 images."""

RECORD_NUMBERS = tuple(range(63, 70))
"""The records ``--records`` writes: ``benchmarks_flops_<number>.json``, ``order``
``1000 + number``."""


def maml_case(tasks: int, batching: str) -> str:
    """The name of the MAML meta-gradient among the timed operations."""
    return f"metaloop MAML, {tasks} tasks, {batching}"


def record_path(records, number: int) -> Path:
    """Where ``--records`` puts the record of ``order`` ``1000 + number`` (63 ... 69)."""
    return Path(records) / f"benchmarks_flops_{number}.json"


def parse(argv=None) -> argparse.Namespace:
    """The command line, checked: a count that times nothing, or a ``--records`` folder
    that cannot take the records or a setting their rows do not describe, is a usage error
    (exit status 2) before any timing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--maml-tasks", type=int, default=0,
                    help="also time metaloop's MAML meta-gradient on this many tasks")
    ap.add_argument("--batching", choices=["loop", "threads"], default="loop",
                    help="the MAML learner's batching (threads: one task per thread)")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="write the benchmarks-limit table's seven records "
                         "(DIR/benchmarks_flops_63.json ... _69.json); needs --maml-tasks 4 "
                         "--batching threads, the setting their rows name, and refuses any "
                         "other; --threads and --reps are free (the records' device and n)")
    args = ap.parse_args(argv)
    require_positive(ap, args, "threads", "reps")
    if args.maml_tasks < 0:
        ap.error(f"--maml-tasks must be an int >= 0 (0: not timed), got {args.maml_tasks}")
    if args.records is not None:
        changed = [f"--{k.replace('_', '-')} {getattr(args, k)}"
                   for k, v in RECORD_MAML.items() if getattr(args, k) != v]
        if changed:
            ap.error(f"--records: the records' rows are of metaloop MAML on 4 tasks with "
                     f"batching='threads' (--maml-tasks 4 --batching threads), not "
                     f"{', '.join(changed)}: they would replace those rows' records; add "
                     f"--maml-tasks 4 --batching threads or run without --records")
        from metaloop.evaluate.records import check_record_path
        try:
            for number in RECORD_NUMBERS:
                check_record_path(record_path(args.records, number))
        except ValueError as e:
            ap.error(f"--records: {e}")
    return args


def throughputs(times: dict[str, list[float]], flops: dict[str, int]) -> dict[str, tuple]:
    """GFLOP/s of each timed operation: ``(best, median)`` of its ``times`` (seconds)."""
    return {name: (flops[name] / min(t) / 1e9, flops[name] / statistics.median(t) / 1e9)
            for name, t in times.items()}


def best_conv_rate(rates: dict[str, tuple]) -> float:
    """The best GFLOP/s of any convolution: what the lower bound on an iteration uses."""
    return max(best for name, (best, _) in rates.items() if name.startswith("conv"))


def write_records(times: dict[str, list[float]], flops: dict[str, int], args,
                  argv: list[str]) -> list[Path]:
    """The seven records of the ``benchmarks-limit`` table into ``args.records``.

    Args:
        times: the seconds of each round, by operation name (as ``main`` times them, the
            MAML meta-gradient's under ``maml_case(4, "threads")``). flops: each one's FLOPs.
        args: ``parse``'s (``--records`` set). argv: the command line after the script.

    Returns:
        The paths written. Every record is validated before the first is written.
    """
    from metaloop.evaluate.records import cpu_device, validate_record, write_record
    rates = throughputs(times, flops)
    maml = maml_case(args.maml_tasks, args.batching)
    iteration = maml_iteration_flops()["iteration"]
    median = {name: r[1] for name, r in rates.items()}
    rows = {    # number: (row, metric, mean, digits)
        63: ("matmul 2048^3", "GFLOP/s (median)", median["matmul 2048^3"], 1),
        64: ("conv fwd NCHW (64->64, 75 images, 14x14)", "GFLOP/s (median)",
             median["conv fwd NCHW"], 1),
        65: ("conv fwd+bwd NCHW", "GFLOP/s (median)", median["conv fwd+bwd NCHW"], 1),
        66: ("conv fwd channels-last", "GFLOP/s (best)", rates["conv fwd channels-last"][0], 1),
        67: (f"metaloop MAML, {args.maml_tasks} tasks, batching={args.batching!r}",
             "GFLOP/s (median)", median[maml], 1),
        68: (f"metaloop MAML, {args.maml_tasks} tasks, batching={args.batching!r}",
             "fraction of conv fwd NCHW", median[maml] / median["conv fwd NCHW"], 2),
        69: (f"one base iteration ({iteration / 1e9:.1f} GFLOP) at the best conv rate",
             "seconds (lower bound)", iteration / 1e9 / best_conv_rate(rates), 2),
    }
    common = {"table": "benchmarks-limit", "ci95": None, "n": args.reps,
              "budget": {"iterations": args.reps}, "device": f"{cpu_device()}, shared",
              "torch": torch.__version__.split("+")[0],
              "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
              "config": None, "published": None,
              "command": " ".join(["python", "benchmarks/bench_flops.py",
                                   *map(shlex.quote, argv)])}
    records = {record_path(args.records, number): {
        **common, "row": row, "metric": metric, "mean": round(mean, digits), "digits": digits,
        "order": 1000 + number} for number, (row, metric, mean, digits) in rows.items()}
    for path, rec in records.items():            # all of them valid before the first is written
        validate_record(rec, where=str(path))
    return [write_record(path, **rec) for path, rec in records.items()]


def main(argv=None) -> None:
    args = parse(argv)
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
    for layout, xi in (("NCHW", x), ("channels-last", x.contiguous(
            memory_format=torch.channels_last))):
        xg = xi.clone().requires_grad_()
        cases[f"conv fwd {layout}"] = (lambda xi=xi: F.conv2d(xi, w.detach(), padding=1),
                                       CONV_FLOPS)

        def fwd_bwd(xg=xg):
            y = F.conv2d(xg, w, padding=1)
            torch.autograd.grad(y, [xg, w], torch.ones_like(y))
        cases[f"conv fwd+bwd {layout}"] = (fwd_bwd, 3 * CONV_FLOPS)
    mname = maml_case(args.maml_tasks, args.batching)
    if args.maml_tasks:
        cases[mname] = (maml_step(args.maml_tasks, args.batching),
                        maml_iteration_flops(meta_batch=args.maml_tasks)["iteration"])
    times = {name: [] for name in cases}
    for fn, _ in cases.values():
        fn()                                                        # warm-up
    for _ in range(args.reps):                                      # interleaved rounds
        for name, (fn, _) in cases.items():
            times[name].append(_once(fn))
    flops = {name: f for name, (_, f) in cases.items()}
    rates = throughputs(times, flops)
    print(f"{'operation':36s} {'GFLOP/s best':>13s} {'median':>8s}")
    for name, (top, med) in rates.items():
        print(f"{name:36s} {top:13.1f} {med:8.1f}")
    best = best_conv_rate(rates)
    if args.maml_tasks:
        m = rates[mname][1]
        print("metaloop MAML as a fraction of the same rounds' median throughput: " + ", ".join(
            f"{m / rates[k][1]:.2f} of {k}" for k in cases if not k.startswith("metaloop")))
    print(f"limit for one base iteration at the best conv rate: "
          f"{fl['iteration'] / 1e9 / best:.2f} s ({fl['iteration'] / 1e9:.1f} GFLOP / "
          f"{best:.1f} GFLOP/s)")
    if args.records is not None:
        write_records(times, flops, args, sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()
