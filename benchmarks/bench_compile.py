"""Does torch.compile pay on the CPU for MAML's query pass? (a candidate fast path)

In second-order MAML the query loss is differentiated once (to theta'; the eager support
graph carries the second order), so the query pass is the one part that a compiled
(AOTAutograd + inductor) function could replace exactly, and it is ~83% of an iteration's
FLOPs. This checks that eager and compiled give the same gradient, then times the query
forward + backward of Conv4 on one task's query set (5-way, 15 queries, channels-last),
interleaved in rounds, and prints the compile time and the ratio. The compile is a cold one,
what a first run pays: inductor's cache (``TORCHINDUCTOR_CACHE_DIR``) is a fresh temporary
folder for the run, removed afterwards, so earlier runs' compiled code is not reused.

    python benchmarks/bench_compile.py --pool max --threads 1

``--iteration`` times whole MAML iterations instead, eager against ``MAML(..., compile=True)``
(the query pass through torch.compile), with bench_maml.py's own workers ``metaloop`` and
``metaloop-compile``: their float64 meta-gradients are compared first, then each runs in its
own process (its own peak RSS), interleaved for ``--reps`` rounds of ``--iters`` timed
iterations after ``--warmup`` (the compile is in the warm-up). The shape is the Omniglot cpu
profile's: Conv4 (``--pool``), 5-way 1-shot, ``--queries`` query images per task (default
25: 5 per class), meta-batch 16, 1 inner SGD step at 0.4, Adam, Omniglot train tasks (found
as bench_maml.py finds them), ``--threads`` threads:

    python benchmarks/bench_compile.py --iteration --pool stride --iters 8 --reps 3 --warmup 2

``--records DIR`` writes the run's record for the ``benchmarks-compile`` table of
docs/benchmarks.md: ``DIR/benchmarks_compile_query_pass_{stride,max}.json`` (the query pass
of ``--pool``) or, with ``--iteration``, ``DIR/benchmarks_compile_iteration_stride.json``;
its path is checked before any timing, and it is written once the timing is done. A record's
row names its configuration, so ``--records`` is refused with a setting the row does not
describe: ``--queries`` other than 75 (with ``--iteration``: 25), ``--dtype float64``, and
``--iteration --pool max`` (the table has no such row). ``--threads``, ``--reps``,
``--iters`` and ``--warmup`` are allowed: the record says them (its ``device``, ``n``,
``budget`` and ``command``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_maml  # run as a script: benchmarks/ is on sys.path
import torch
import torch.nn.functional as F
from _timing import allocator, require_positive
from torch.func import functional_call

from metaloop.models.conv4 import Conv4

QUERIES = {"query pass": 75, "iteration": 25}
"""The query images per task that the records' rows name (and each mode's default)."""
ITERATION_POOL = "stride"
"""The one pool of the ``--iteration`` row."""
ORDER = {("query pass", "stride"): 1060, ("query pass", "max"): 1061,
         ("iteration", "stride"): 1062}
POOL_NAME = {"stride": "stride", "max": "max-pool"}


def mode(a) -> str:
    return "iteration" if a.iteration else "query pass"


def record_path(records, a) -> Path:
    """Where ``--records`` puts the record of this run."""
    kind = "iteration" if a.iteration else "query_pass"
    return Path(records) / f"benchmarks_compile_{kind}_{a.pool}.json"


def maml_argv(a) -> list[str]:
    """bench_maml.py's arguments for ``--iteration``: the cpu profile's shape, eager and
    compiled."""
    return ["--pool", a.pool, "--queries", str(a.queries // 5), "--meta-batch", "16",
            "--threads", str(a.threads), "--only", "metaloop,metaloop-compile",
            "--iters", str(a.iters), "--reps", str(a.reps), "--warmup", str(a.warmup)]


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", choices=["max", "stride"], default="max")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--queries", type=int, default=None,
                    help="query images per task (default 75: 5-way x 15; with --iteration "
                         "25, and a multiple of 5)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed iterations before the timed ones (--iteration only)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="the query pass's dtype (--iteration: float32 only)")
    ap.add_argument("--iteration", action="store_true",
                    help="time whole MAML iterations instead, eager vs compile=True "
                         "(bench_maml.py's workers, each in its own process; Omniglot "
                         "5-way 1-shot, meta-batch 16)")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="write the run's JSON record into this folder; refused for a "
                         "--queries, --dtype or --iteration --pool the table has no row of, "
                         "while --threads, --reps, --iters and --warmup are said by the record")
    a = ap.parse_args(argv)
    require_positive(ap, a, "threads", "queries", "reps", "iters")
    if a.warmup < 0:
        ap.error(f"--warmup must be an int >= 0, got {a.warmup}")
    if a.queries is None:
        a.queries = QUERIES[mode(a)]
    if a.iteration:
        if a.queries % 5:
            ap.error(f"--queries with --iteration must be a multiple of 5 (5-way), got "
                     f"{a.queries}")
        if a.dtype != "float32":
            ap.error(f"--dtype {a.dtype}: --iteration times float32, as metaloop trains")
    if a.records is not None:                   # where the record goes, before any timing
        changed = []
        if a.queries != QUERIES[mode(a)]:
            changed.append(f"--queries {a.queries}")
        if a.dtype != "float32":
            changed.append(f"--dtype {a.dtype}")
        if a.iteration and a.pool != ITERATION_POOL:
            changed.append(f"--iteration --pool {a.pool}")
        if changed:
            ap.error(f"--records: the benchmarks-compile rows are of {QUERIES[mode(a)]} "
                     f"query images, float32{' and the stride Conv4' if a.iteration else ''}, "
                     f"not of {', '.join(changed)}: run without --records")
        from metaloop.evaluate.records import check_record_path
        try:
            check_record_path(record_path(a.records, a))
        except ValueError as e:
            ap.error(f"--records: {e}")
    if a.iteration:
        margs = bench_maml.parse(maml_argv(a))
        try:                                    # the data before any work, as bench_maml
            bench_maml.batch_source(margs)
        except FileNotFoundError as e:
            ap.error(f"--iteration times Omniglot tasks: {str(e).splitlines()[0]}")
    return a


def query_pass(a) -> dict:
    """Time the query pass eager and compiled; print and return what was measured."""
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
    err = bench_maml.relative_error(dict(enumerate(g_compiled)),
                                    dict(enumerate(grad(query_loss))))
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
    return {"eager": eager, "compiled": comp, "compile_seconds": compile_s,
            "rounds": len(times["eager"])}


def iteration(a) -> dict:
    """Time MAML iterations eager and compiled (bench_maml's workers); print and return
    ``{"metaloop": ..., "metaloop-compile": ...}``, each ``{"times", "rss_mib",
    "setup_mib"}``."""
    argv = maml_argv(a)
    margs = bench_maml.parse(argv)
    names = ["metaloop", "metaloop-compile"]
    print(bench_maml.header(margs))
    errors = bench_maml.check(names, margs, argv)
    err = errors["metaloop-compile"]
    print(f"  check metaloop-compile max rel err {err:.1e} vs metaloop (float64, "
          f"{margs.check_tasks} tasks)")
    if not err <= bench_maml.TOL:
        print(f"bench_compile.py: error: compile=True's meta-gradient differs from eager's "
              f"by {err:.1e} (more than {bench_maml.TOL:g}): not timed", file=sys.stderr)
        raise SystemExit(1)
    results = {n: {"times": [], "rss_mib": 0.0, "setup_mib": 0.0} for n in names}
    for _ in range(a.reps):
        for name in names:
            r = bench_maml.measure(name, argv)
            results[name]["times"] += r["times"]
            for k in ("rss_mib", "setup_mib"):
                results[name][k] = max(results[name][k], r[k] or 0.0)
    bench_maml.report(results, margs)
    eager, comp = (statistics.median(results[n]["times"]) for n in names)
    print(f"compiled / eager = {comp / eager:.2f}")
    return results


def make_record(result: dict, a, argv: list[str]) -> dict:
    """The record of ``result`` (what ``query_pass`` or ``iteration`` returned) for the run
    ``a`` with the command-line arguments ``argv``."""
    from metaloop.evaluate.records import cpu_device
    command = " ".join(["python", "benchmarks/bench_compile.py", *map(shlex.quote, argv)])
    rec = {"table": "benchmarks-compile", "order": ORDER[mode(a), a.pool], "unit": "x",
           "ci95": None, "config": None, "published": None, "command": command,
           "device": f"{cpu_device()}, shared", "torch": torch.__version__.split("+")[0],
           "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}
    if not a.iteration:
        return {**rec, "row": f"query pass of one task, {POOL_NAME[a.pool]} Conv4, "
                              f"{a.queries} images",
                "metric": "eager time / compiled time",
                "mean": round(result["eager"] / result["compiled"], 2),
                "n": result["rounds"], "budget": {"iterations": result["rounds"] * a.iters},
                "compile_seconds": round(result["compile_seconds"], 1)}
    eager, comp = result["metaloop"], result["metaloop-compile"]
    n = len(comp["times"])
    return {**rec, "row": f"MAML 5-way 1-shot cpu profile ({POOL_NAME[a.pool]} Conv4, "
                          f"{a.queries // 5} queries, meta-batch 16), compile=True",
            "metric": "time / eager time", "digits": 2,
            "mean": round(statistics.median(comp["times"]) / statistics.median(eager["times"]),
                          2),
            "n": n, "budget": {"iterations": n},
            "note": f"peak RSS {comp['rss_mib']:.0f} vs {eager['rss_mib']:.0f} MiB"}


def write_records(result: dict, a, argv: list[str]) -> Path:
    """Write the run's record into ``a.records`` (``--records``); its path."""
    from metaloop.evaluate.records import write_record
    return write_record(record_path(a.records, a), **make_record(result, a, argv))


def main(argv=None) -> None:
    a = parse(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    torch.set_num_threads(a.threads)
    cache = tempfile.mkdtemp(prefix="bench_compile_inductor_")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache    # a cold compile (the workers inherit it)
    try:
        result = iteration(a) if a.iteration else query_pass(a)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    if a.records is not None:
        write_records(result, a, argv)


if __name__ == "__main__":
    main()
