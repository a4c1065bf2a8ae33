"""Memory layout of the learners' image batches on the CPU: NCHW or channels-last.

For second-order MAML, R2D2 and MetaOptNet (metaloop's squared-hinge SVM head) on a real
Omniglot 20-way 1-shot batch (stride Conv4 with 64 filters, 1 support and 5 queries per class,
``batching="loop"``):

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

    python benchmarks/bench_layout.py [--reps 5] [--threads 1] [--tasks 4] [--root DIR]
        [--records DIR]

``--records DIR`` writes the 9 records of the ``benchmarks-layout`` table of
docs/benchmarks.md, three per learner (``maml``, ``r2d2``, ``metaoptnet_svm``):
``DIR/benchmarks_layout_<learner>_nchw_error.json`` and ``..._channels_last_error.json``, the
float32 error of each layout (``n``: the ``--tasks`` tasks of the batch), and
``..._speedup.json``, channels-last's speed-up over NCHW (``n``: the ``--reps`` rounds) with
both median times in seconds. Every record path is checked before any work, and the records
are written only once every learner has been measured. Every option may go with
``--records``: none changes what a row names (the learner, Omniglot 20-way 1-shot, the
layout); ``--tasks``, ``--reps`` and ``--threads`` are recorded in the records' ``n`` and
``device`` and in their command. The table's records come from

    python benchmarks/bench_layout.py --reps 5 --tasks 4 --threads 1 --records docs/results
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import shlex
import sys
from pathlib import Path

import torch
from _timing import allocator, interleaved_medians, require_positive  # benchmarks/ is on sys.path

import metaloop.adapt.sgd as sgd
import metaloop.meta._head_learner as head_learner
from metaloop.evaluate.records import check_record_path, cpu_device, validate_record, write_record
from metaloop.func.params import channels_last
from metaloop.func.params import forward as plain_forward
from metaloop.meta import MAML, R2D2, MetaOptNet
from metaloop.models import Conv4
from metaloop.tasks import Omniglot

LEARNERS = {"MAML (2 steps)": "maml", "R2D2": "r2d2",
            "MetaOptNet (squared-hinge SVM)": "metaoptnet_svm"}
"""The learners measured, in order, and the stem of each one's record files."""
RECORD_KINDS = ("nchw_error", "channels_last_error", "speedup")
"""Each learner's records, in the table's order."""


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


def record_path(records, kind: str, record: str) -> Path:
    """Where ``--records`` puts learner ``kind``'s record ``record`` (of ``RECORD_KINDS``)."""
    return Path(records) / f"benchmarks_layout_{LEARNERS[kind]}_{record}.json"


def make_records(results, args, argv: list[str]) -> dict[Path, dict]:
    """The ``benchmarks-layout`` records of a run, by path, in the table's order.

    Args:
        results: ``{learner: {"errors": {"nchw": e, "cl": e}, "seconds": {"nchw": s,
            "cl": s}}}`` for every learner of ``LEARNERS``: each layout's float32 error
            (``worst``) and median seconds per ``meta_gradient``.
        args: the parsed options (``records``, ``reps``, ``tasks``). argv: the command's
            arguments, as given.

    Raises:
        RecordError: (a ValueError) a record that does not validate (a value that is not
            finite).
    """
    command = " ".join(["python", "benchmarks/bench_layout.py", *map(shlex.quote, argv)])
    common = {"table": "benchmarks-layout", "ci95": None, "budget": {"iterations": args.reps},
              "device": f"{cpu_device()}, shared", "torch": torch.__version__.split("+")[0],
              "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
              "config": None, "command": command, "published": None}
    names = {"nchw": "NCHW", "cl": "channels-last"}
    out = {}
    for i, kind in enumerate(LEARNERS):
        r = results[kind]
        recs = [{"row": f"{kind}, Omniglot 20-way 1-shot, {names[lay]}",
                 "metric": "float32 meta-gradient error vs float64 (worst tensor)",
                 "mean": float(f"{r['errors'][lay]:.1e}"),   # as printed: 2 significant digits
                 "digits": 1, "notation": "e",
                 "n": args.tasks} for lay in ("nchw", "cl")]
        sec = r["seconds"]
        recs.append({"row": f"{kind}, Omniglot 20-way 1-shot, channels-last",
                     "metric": "speed-up over NCHW", "mean": round(sec["nchw"] / sec["cl"], 2),
                     "unit": "x", "n": args.reps, "seconds_nchw": round(sec["nchw"], 3),
                     "seconds_channels_last": round(sec["cl"], 3)})
        for j, (record, rec) in enumerate(zip(RECORD_KINDS, recs)):
            path = record_path(args.records, kind, record)
            out[path] = validate_record({**common, **rec, "order": 1031 + 3 * i + j},
                                        where=str(path))
    return out


def write_records(results, args, argv: list[str]) -> list[Path]:
    """Write ``make_records``'s records (all validated before the first is written)."""
    return [write_record(path, **rec) for path, rec in make_records(results, args, argv).items()]


def parser() -> argparse.ArgumentParser:
    """The command line's options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--root", default=None, help="Omniglot root (default: the search path)")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="write the 9 records of the benchmarks-layout table into this folder "
                         "(any option may go with it: --tasks, --reps and --threads are "
                         "recorded in the records' n, device and command)")
    return ap


def parse(argv: list[str] | None = None,
          ap: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The options of ``ap`` (default: ``parser()``); a usage error (exit status 2) for a bad
    one, an unwritable ``--records`` path included."""
    ap = parser() if ap is None else ap
    args = ap.parse_args(argv)
    require_positive(ap, args, "reps", "threads", "tasks")
    if args.records is not None:          # before any work
        try:
            for kind in LEARNERS:
                for record in RECORD_KINDS:
                    check_record_path(record_path(args.records, kind, record))
        except ValueError as e:
            ap.error(f"--records: {e}")
    return args


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = parse(argv, ap)
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
    results = {}
    for kind in LEARNERS:
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
        results[kind] = {"errors": errs, "seconds": med}
    if args.records is not None:
        write_records(results, args, sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main()
