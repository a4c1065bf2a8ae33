"""Loading an Omniglot split: resized at every start, or read from the disk cache.

Times ``metaloop.data.omniglot.load_omniglot_images`` in one process, interleaved, three
ways per repeat: with the cache off (``METALOOP_OMNIGLOT_CACHE=0``: resize the packed
105x105 drawings, as every command start did before the cache), the first load (resize
and write the cache file) and a cached load (read the file). The in-process memo is
cleared before each load, so each is what a new command pays. Every load's images are
checked to equal the cache-off ones. The cache lives in a temporary ``$METALOOP_DATA``,
removed at the end.

    python benchmarks/bench_omniglot_cache.py [--splits background,train] [--size 28]
        [--reps 5] [--record docs/results/benchmarks_omniglot_cache.json]

``--record FILE`` writes the median ratio (cache off / cached) of the first split as a
record in table ``benchmarks-data``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import require_positive  # benchmarks/ is on sys.path

from metaloop.data import omniglot as og
from metaloop.evaluate.records import check_record_path, cpu_device, write_record

MODES = ("off", "first", "cached")


def _load(split: str, size: int, mode: str, cache: Path) -> tuple[float, torch.Tensor]:
    """One load as a new command makes it; returns (seconds, images)."""
    og.clear_cache()
    if mode == "first":
        shutil.rmtree(cache, ignore_errors=True)
    os.environ[og.CACHE_ENV] = "0" if mode == "off" else "1"
    t = time.perf_counter()
    images, _ = og.load_omniglot_images(None, split, size)
    return time.perf_counter() - t, images


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", default="background,train")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--record", help="write the first split's median ratio as a record here")
    args = p.parse_args(argv)
    require_positive(p, args, "size", "reps", "threads")
    splits = [s for s in args.splits.split(",") if s]
    unknown = [s for s in splits if s not in og.SPLITS]
    if not splits or unknown:
        p.error(f"--splits {args.splits}: choose among {', '.join(og.SPLITS)}")
    if args.record:
        try:
            check_record_path(args.record)
        except ValueError as e:
            p.error(f"--record: {e}")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_omniglot_cache_"))
    os.environ["METALOOP_DATA"] = str(tmp)
    cache = og.resized_cache_dir()
    print(f"torch {torch.__version__}, {cpu_device()}; size {args.size}; median of "
          f"{args.reps} interleaved repeats")
    results = {}
    cpu0 = time.process_time()
    try:
        for split in splits:
            times = {m: [] for m in MODES}
            ref = None
            for _ in range(args.reps):
                for m in MODES:
                    dt, x = _load(split, args.size, m, cache)
                    times[m].append(dt)
                    ref = x if ref is None else ref
                    if not torch.equal(x, ref):
                        sys.exit(f"{split} ({m}): the images differ from the cache-off load")
            med = {m: statistics.median(v) for m, v in times.items()}
            results[split] = med
            print(f"{split:10s} cache off {med['off']:.3f} s, first load {med['first']:.3f} s, "
                  f"cached {med['cached']:.3f} s: off / cached {med['off'] / med['cached']:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.record:
        split = splits[0]
        med = results[split]
        given = sys.argv[1:] if argv is None else list(argv)
        load = os.getloadavg()[0]
        write_record(
            args.record, table="benchmarks-data",
            row=f"loading Omniglot {split} at {args.size}x{args.size}: resized / from the "
                f"disk cache", metric="time ratio", unit="x", digits=1,
            mean=round(med["off"] / med["cached"], 1), ci95=None, n=args.reps,
            budget={"cpu_seconds": round(time.process_time() - cpu0, 1)}, config=None,
            published=None, device=f"{cpu_device()}, shared",
            command="python benchmarks/bench_omniglot_cache.py " + " ".join(given),
            note=(f"medians: resized {med['off']:.3f} s, first load (resize and write) "
                  f"{med['first']:.3f} s, from the cache {med['cached']:.3f} s; load average "
                  f"{load:.1f} on {os.cpu_count()} cores"),
            torch=torch.__version__.split("+")[0], date=datetime.date.today().isoformat())
        print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
