"""Per-episode cost of the convex heads beside one SGD inner step on the same features.

    python benchmarks/bench_heads.py [--tasks 4] [--reps 11] [--threads 1] [--dtype float32]
        [--records DIR]

For each support size N (5-way: N = 5, 25, 100 is 1, 5 and 20 shots) and feature width D
(64: Conv4, 640: ResNet-12) it times, interleaved, only the hot call:

* ``sgd``: one ANIL-style inner step on a zero-initialised linear head (cross-entropy,
  ``autograd.grad(create_graph=True)``, ``W - lr g``), the cheapest differentiable adapter;
* ``ridge``: ``ridge_head`` on one-hot targets (R2D2);
* ``logreg``/``logreg-ift``: ``newton_head`` logistic, unrolled and implicit gradients;
* ``svm``: ``newton_head`` squared-hinge SVM, unrolled.

Newton heads run ``--steps`` steps. Support features require grad, as in meta-training.
Two passes: the forward solve only, then forward + backward of a query cross-entropy
(``--queries`` per class) into the support and query features. Times are medians over
``--reps`` interleaved rounds, divided by the number of tasks (per-episode), in microseconds;
``x`` is the ratio to ``sgd`` measured in the same run.

``--records DIR`` writes the 24 records of the ``benchmarks-heads`` table of
docs/benchmarks.md, one per convex head and size, ``DIR/benchmarks_heads_<head>_n<N>_d<D>.json``
(``logreg-ift`` as ``logreg_ift``): the forward + backward time as a multiple of the SGD
step's, with both times in microseconds. Every record path is checked before any timing, and
the records are written only once every size has been timed. The rows are those of the
table's setting (5-way, 15 queries per class, 5 Newton steps, B=4 tasks per call, float32):
``--records`` with another ``--ways``, ``--queries``, ``--steps``, ``--tasks`` or ``--dtype``
is refused, since its records would replace the setting's. ``--reps`` (the records' ``n``) and
``--threads`` (their ``device``) are recorded. The table's records come from

    python benchmarks/bench_heads.py --reps 15 --records docs/results
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import require_positive  # benchmarks/ is on sys.path

from metaloop.adapt.newton_head import newton_head
from metaloop.adapt.ridge_head import head_logits, ridge_head
from metaloop.evaluate.records import (
    RecordError,
    check_record_path,
    cpu_device,
    validate_record,
    write_record,
)

SIZES = [(n, d) for d in (64, 640) for n in (5, 25, 100)]
RECORDED = ("ridge", "logreg", "logreg-ift", "svm")   # one record each per size; sgd: the base
RECORD_SETTING = {"tasks": 4, "ways": 5, "queries": 15, "steps": 5, "dtype": "float32"}
"""The setting the ``benchmarks-heads`` table's rows and text describe: ``--records`` with
another value of any of these is refused."""


def sgd_step(phi, labels, ways, lr=0.1):
    W = phi.new_zeros(phi.shape[0], phi.shape[2], ways, requires_grad=True)  # [B, D, C]
    loss = F.cross_entropy(head_logits(phi, W).flatten(0, 1), labels.flatten(), reduction="sum")
    (g,) = torch.autograd.grad(loss, W, create_graph=True)                    # [B, D, C]
    return W - lr * g


def make_heads(ways: int, steps: int) -> dict[str, Callable]:
    def onehot_ridge(phi, labels):
        return ridge_head(phi, F.one_hot(labels, ways).to(phi.dtype), lam=1.0)

    def newton(loss, grad):
        return lambda phi, labels: newton_head(phi, labels, ways, lam=1.0, steps=steps,
                                               loss=loss, grad=grad)

    return {"sgd": lambda phi, labels: sgd_step(phi, labels, ways), "ridge": onehot_ridge,
            "logreg": newton("logistic", "unrolled"), "logreg-ift": newton("logistic", "implicit"),
            "svm": newton("svm", "unrolled")}


def episode(B, N, D, ways, queries, dtype, gen):
    phi = torch.randn(B, N, D, dtype=dtype, generator=gen).requires_grad_(True)   # [B, N, D]
    query = torch.randn(B, ways * queries, D, dtype=dtype, generator=gen).requires_grad_(True)
    labels = (torch.arange(N) % ways).expand(B, N).contiguous()                  # [B, N]
    q_labels = (torch.arange(ways * queries) % ways).expand(B, -1).contiguous()  # [B, Q]
    return phi, labels, query, q_labels


def time_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_size(heads, B, N, D, args, dtype, gen) -> dict[tuple[str, str], float]:
    phi, labels, query, q_labels = episode(B, N, D, args.ways, args.queries, dtype, gen)

    def fwd(head):
        return lambda: head(phi, labels)

    def fwd_bwd(head):
        def go():
            logits = head_logits(query, head(phi, labels))                         # [B, Q, C]
            F.cross_entropy(logits.flatten(0, 1), q_labels.flatten()).backward()
        return go

    calls = {(name, p): make(h) for name, h in heads.items()
             for p, make in (("fwd", fwd), ("fwd+bwd", fwd_bwd))}
    for call in calls.values():       # warm-up, untimed
        call()
    samples = {key: [] for key in calls}
    for _ in range(args.reps):        # interleaved rounds
        for key, call in calls.items():
            samples[key].append(time_call(call))
    return {key: statistics.median(s) / B * 1e6 for key, s in samples.items()}


def table(results, names, which: str, ways: int) -> list[str]:
    head = f"| N | D | solve space | {' | '.join(names)} |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for (N, D), res in results.items():
        base = res["sgd", which]
        cells = [f"{res[n, which]:.0f}" + ("" if n == "sgd" else f" ({res[n, which] / base:.1f}x)")
                 for n in names]
        lines.append(f"| {N} | {D} | {solve_space(N, D, ways)} | {' | '.join(cells)} |")
    return lines


def solve_space(N: int, D: int, ways: int) -> str:
    """Where ridge solves for N support examples of width D: the N x N representer system
    (N < D) or the D x D primal one; sized per class."""
    return f"representer NC={N * ways}" if N < D else f"primal DC={D * ways}"


def record_path(records, name: str, N: int, D: int) -> Path:
    """Where ``--records`` puts the record of head ``name`` at support size N and width D."""
    return Path(records) / f"benchmarks_heads_{name.replace('-', '_')}_n{N}_d{D}.json"


def make_records(results, args, argv: list[str]) -> dict[Path, dict]:
    """The ``benchmarks-heads`` records of a run, by path: the forward + backward time of each
    head of ``RECORDED`` at each size of ``SIZES`` as a multiple of the SGD step's.

    Args:
        results: ``{(N, D): {(head, pass): microseconds per episode}}``, as ``run_size`` gives.
        args: the parsed options (``records``, ``reps``, ``ways``). argv: the command's
            arguments, as given.

    Raises:
        RecordError: (a ValueError) a time that is not finite, or a record that does not
            validate; nothing is written then.
    """
    command = " ".join(["python", "benchmarks/bench_heads.py", *map(shlex.quote, argv)])
    common = {"table": "benchmarks-heads", "metric": "fwd+bwd time / one SGD step",
              "unit": "x", "digits": 1, "ci95": None, "n": args.reps,
              "budget": {"iterations": args.reps}, "device": f"{cpu_device()}, shared",
              "torch": torch.__version__.split("+")[0],
              "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
              "config": None, "command": command, "published": None}
    out = {}
    for i, (N, D) in enumerate(SIZES):
        res = results[N, D]
        sgd = res["sgd", "fwd+bwd"]
        for j, name in enumerate(RECORDED):
            path = record_path(args.records, name, N, D)
            t = res[name, "fwd+bwd"]
            if not (math.isfinite(t) and math.isfinite(sgd)):
                raise RecordError(f"{path}: the fwd+bwd times of {name} ({t}) and sgd ({sgd}) "
                                  f"at N={N}, D={D} must be finite")
            rec = {**common, "row": f"{name}, N={N}, D={D} ({solve_space(N, D, args.ways)})",
                   "mean": round(t / sgd, 1), "microseconds": round(t),
                   "sgd_microseconds": round(sgd), "order": 1007 + len(RECORDED) * i + j}
            out[path] = validate_record(rec, where=str(path))
    return out


def write_records(results, args, argv: list[str]) -> list[Path]:
    """Write ``make_records``'s records (all validated before the first is written)."""
    return [write_record(path, **rec) for path, rec in make_records(results, args, argv).items()]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; a usage error (exit status 2) for a bad one, ``--records`` included."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=4, help="B, tasks per batched call")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--queries", type=int, default=15, help="query examples per class")
    ap.add_argument("--steps", type=int, default=5, help="Newton steps")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="write the 24 records of the benchmarks-heads table into this folder "
                         "(the table's setting only: refused with another --tasks, --ways, "
                         "--queries, --steps or --dtype; --reps and --threads are recorded)")
    args = ap.parse_args(argv)
    require_positive(ap, args, "tasks", "ways", "queries", "steps", "reps", "threads")
    smallest = min(n for n, _ in SIZES)
    if not 2 <= args.ways <= smallest:   # the heads need 2 classes, each in every support set
        ap.error(f"--ways must be from 2 to {smallest} (the smallest support set, N={smallest}, "
                 f"holds one example of each class), got {args.ways}")
    if args.records is not None:          # before any timing
        changed = [f"--{k} {getattr(args, k)}" for k, v in RECORD_SETTING.items()
                   if getattr(args, k) != v]
        if changed:
            ap.error(f"--records: the benchmarks-heads rows are of the setting "
                     f"{', '.join(f'--{k} {v}' for k, v in RECORD_SETTING.items())}, not of "
                     f"{', '.join(changed)}: the records would replace that setting's; run "
                     f"without --records")
        try:
            for N, D in SIZES:
                for name in RECORDED:
                    check_record_path(record_path(args.records, name, N, D))
        except ValueError as e:
            ap.error(f"--records: {e}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    heads = make_heads(args.ways, args.steps)
    alloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")} or "glibc default"
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), "
          f"allocator: {alloc}, {args.dtype}, {args.ways}-way, B={args.tasks} tasks per call, "
          f"{args.steps} Newton steps, lam=1, median of {args.reps} interleaved rounds")
    results = {(N, D): run_size(heads, args.tasks, N, D, args, dtype, gen) for N, D in SIZES}
    names = list(heads)
    for which in ("fwd", "fwd+bwd"):
        print(f"\nper-episode {which} time, microseconds (ratio to one SGD step)")
        print("\n".join(table(results, names, which, args.ways)))
    if args.records is not None:
        write_records(results, args, sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()
