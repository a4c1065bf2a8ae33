"""How to batch the tasks of a meta-batch: a per-task loop, the loop on threads, or vmap.

Times ``MAML.meta_gradient`` (second order, 1 inner step) with ``batching="loop"``,
``"threads"`` (the tasks spread over ``--threads`` threads of one intra-op thread each; the
same as the loop with 1 thread) and ``"vmap"``, interleaved A B C A B C in one process, and
prints medians and the ratios to the loop for
  - sinusoid: MLP 1-40-40-1, 5 shots, 10 queries, meta-batch 25;
  - omniglot: Conv4 (64 filters, max-pool, BatchNorm), 5-way 1-shot, 15 queries/class,
    meta-batch 32 (random images: the data does not change the cost).

    python benchmarks/bench_batching.py [--reps 10] [--threads N] [--skip-conv]
        [--records docs/results]

The gradients of the paths are compared first (a faster wrong answer does not count): a
float32 difference of more than ``TOL`` of the largest entry stops the run.

``--records DIR`` writes one record per case and batching,
``DIR/benchmarks_batching_{sinusoid,omniglot}_{loop,threads,vmap}.json``, for the
``benchmarks-batching`` table of docs/benchmarks.md: the median time as a multiple of the
loop's, with the seconds per iteration; every record's path is checked before any timing,
and the records are written once every case is timed. Each record says the ``--reps`` behind
it (``n``: ``--reps`` for the sinusoid, ``max(3, reps // 3)`` for Conv4) and the threads
(``device``). With ``--skip-conv`` only the sinusoid's three records are written: the
Omniglot ones, which that run does not time, are left as they are.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import shlex
import sys
from pathlib import Path

import torch
from _timing import allocator, interleaved_medians, require_positive  # benchmarks/ is on sys.path

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import MLP, Conv4

WAYS = ("loop", "threads", "vmap")
ROWS = {"sinusoid": "sinusoid MLP", "omniglot": "Omniglot Conv4"}
"""Each case's key (in its records' names) and its label in the records' rows."""


TOL = 1e-4
"""The float32 meta-gradients of the three batchings may differ by this share of the largest
entry (measured: 2e-7 on the sinusoid MLP, 6e-6 on Conv4)."""

def omniglot_batch(b=32, ways=5, shots=1, queries=15):
    g = torch.Generator().manual_seed(0)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(b, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(b, 1)
    return ml.TaskBatch(torch.rand(b, ways * shots, 1, 28, 28, generator=g), sy,
                        torch.rand(b, ways * queries, 1, 28, 28, generator=g), qy)


def cases(skip_conv=False):
    """``(key, printed name, model, loss, inner lr, batch)`` of each case to time."""
    torch.manual_seed(0)
    sine = ml.tasks.Sinusoid(5, 10).sample(25, torch.Generator().manual_seed(0))
    yield "sinusoid", "sinusoid MLP", MLP(), "mse", 0.01, sine
    if not skip_conv:
        yield "omniglot", "omniglot Conv4", Conv4(1, 64, 5), "ce", 0.4, omniglot_batch()


def case_keys(skip_conv=False) -> tuple[str, ...]:
    """The cases a run times (and writes records of)."""
    return ("sinusoid",) if skip_conv else tuple(ROWS)


def case_reps(key: str, reps: int) -> int:
    """Timed calls per batching of case ``key``: Conv4 a third of ``--reps`` (at least 3)."""
    return reps if key == "sinusoid" else max(3, reps // 3)


def record_path(records, key: str, batching: str) -> Path:
    """Where ``--records`` puts the record of case ``key`` with ``batching``."""
    return Path(records) / f"benchmarks_batching_{key}_{batching}.json"


def write_records(results: dict, argv: list[str], records) -> list[Path]:
    """One record per case and batching of ``results`` into the folder ``records``.

    ``results`` maps a case key to ``{"reps": n, "seconds": {batching: median seconds}}``;
    ``argv`` is the command line's arguments (the records' ``command``). Every record is
    validated before the first is written.
    """
    from metaloop.evaluate.records import cpu_device, validate_record, write_record
    command = " ".join(["python", "benchmarks/bench_batching.py", *map(shlex.quote, argv)])
    common = {"table": "benchmarks-batching", "metric": "time / loop time", "unit": "x",
              "ci95": None, "config": None, "published": None, "command": command,
              "device": f"{cpu_device()}, shared", "torch": torch.__version__.split("+")[0],
              "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}
    out = []
    for i, key in enumerate(ROWS):
        if key not in results:
            continue
        r = results[key]
        for j, batching in enumerate(WAYS):
            sec = r["seconds"][batching]
            rec = {**common, "row": f"second-order MAML, {ROWS[key]}, batching={batching!r}",
                   "mean": round(sec / r["seconds"]["loop"], 2), "n": r["reps"],
                   "budget": {"iterations": r["reps"]}, "order": 1001 + 3 * i + j,
                   "seconds_per_iteration": round(sec, 4)}
            path = record_path(records, key, batching)
            out.append((path, validate_record(rec, where=str(path))))
    for path, rec in out:
        write_record(path, **rec)
    return [path for path, _ in out]


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--skip-conv", action="store_true",
                    help="time the sinusoid only (with --records: its three records only)")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="write one JSON record per case and batching into this folder "
                         "(DIR/benchmarks_batching_<case>_<batching>.json); the records say "
                         "--reps and --threads (n, device); with --skip-conv only the "
                         "sinusoid's are written")
    args = ap.parse_args(argv)
    require_positive(ap, args, "reps")
    if args.threads < 0:
        ap.error(f"--threads must be an int >= 0 (0: torch's choice), got {args.threads}")
    if args.records is not None:               # where the records go, before any timing
        from metaloop.evaluate.records import check_record_path
        try:
            for key in case_keys(args.skip_conv):
                for batching in WAYS:
                    check_record_path(record_path(args.records, key, batching))
        except ValueError as e:
            ap.error(f"--records: {e}")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {allocator()}")
    cols = ("loop s/it", "threads s/it", "vmap s/it", "threads/loop", "vmap/loop", "rel err")
    print(f"{'case':16s} " + " ".join(f"{c:>12s}" for c in cols))
    results = {}
    for key, name, model, loss, lr, batch in cases(args.skip_conv):
        learners = {b: MAML(model, lr, 1, loss=loss, batching=b) for b in WAYS}
        ga, *others = (learners[b].meta_gradient(batch) for b in WAYS)
        # relative to the largest gradient entry overall: conv biases before BatchNorm have
        # exactly-zero true gradients, whose float32 round-off would blow up a per-tensor ratio
        top = max(float(g.abs().max()) for g in ga.values())
        err = max(float((ga[k] - gb[k]).abs().max()) for gb in others for k in ga) / top
        if not err <= TOL:                       # NaN too: a faster wrong answer does not count
            sys.exit(f"bench_batching.py: error: {name}: the batchings' float32 meta-gradients "
                     f"differ by {err:.1e} of the largest entry (more than {TOL:g}); "
                     f"nothing was timed or recorded")
        reps = case_reps(key, args.reps)
        med = interleaved_medians({b: functools.partial(learner.meta_gradient, batch)
                                   for b, learner in learners.items()}, reps)
        lo, th, vm = med["loop"], med["threads"], med["vmap"]
        print(f"{name:16s} {lo:12.4f} {th:12.4f} {vm:12.4f} {th / lo:12.2f} {vm / lo:12.2f} "
              f"{err:12.2e}")
        results[key] = {"reps": reps, "seconds": med}
    if args.records is not None:
        write_records(results, argv, args.records)


if __name__ == "__main__":
    main()
