"""Opening a large image folder: the first open (decode into the cache), the second open (the
cache), and resident memory while tasks are sampled from it.

Writes a folder of N small PNGs (``--images``, default 50,000 in ``--classes`` 1,000 classes
of ``--side`` pixels) under ``--work`` (made once for these three settings, then reused),
then in separate child processes (so each starts cold in Python and its memory is its own):

1. ``Episodes.from_folder`` with no cache: scan, decode every image, write the cache;
2. ``Episodes.from_folder`` again: scan, compare the manifest, map the cache;
3. the same, then sample ``--tasks`` 20-way 5-shot tasks (a multiple of 64: two halves of
   32-task meta-batches), reading RSS (and its anonymous
   part, memory that is not a file mapping) from ``/proc/self/status`` before and after.

The images are a memory-mapped file: sampling touches pages of the cache (``RssFile``), which
the kernel can drop at any time, while private memory (``RssAnon``) stays flat.

Run:  python benchmarks/bench_folder.py [--images 50000] [--size 28]
          [--record docs/results/data_folder.json]
      (--record writes data_folder_open.json, _first_open.json, _memory.json and
      _sample.json)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, images: int, classes: int, side: int) -> None:
    from PIL import Image

    if (root / "DONE").is_file():
        return
    rng = np.random.default_rng(0)
    per = images // classes
    for k in range(classes):
        d = root / f"class_{k:04d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (side, side), dtype=np.uint8)
        for i in range(per):
            noise = rng.integers(0, 32, (side, side), dtype=np.uint8)
            Image.fromarray(base ^ noise).save(d / f"{i:03d}.png", compress_level=1)
    (root / "DONE").write_text("")


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def child(args) -> None:
    """One measurement in this process; prints a JSON line."""
    import torch

    from metaloop.tasks import Episodes

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fam = Episodes.from_folder(args.root, ways=20, shots=5, queries=5, image_size=args.size,
                               cache_dir=args.cache)
    opened = time.perf_counter() - t0
    out = {"open_s": opened, "cache_status": fam.report["cache_status"],
           "images": fam.report["images"]}
    if args.sample:
        before = {k: status_kib(k) for k in ("VmRSS", "RssAnon", "RssFile")}
        g = torch.Generator().manual_seed(0)
        half = args.tasks // 64
        t0 = time.perf_counter()
        for _ in range(half):
            fam.sample(32, g)
        middle = {k: status_kib(k) for k in ("VmRSS", "RssAnon", "RssFile")}
        for _ in range(half):
            fam.sample(32, g)
        out["sample_s_per_32_tasks"] = (time.perf_counter() - t0) / (2 * half)
        after = {k: status_kib(k) for k in ("VmRSS", "RssAnon", "RssFile")}
        out["rss_kib"] = {"before": before, "middle": middle, "after": after}
        out["cache_mib"] = sum(f.stat().st_size for f in Path(args.cache).glob("*.npy")) / 2**20
    print(json.dumps(out))


def record_paths(record: str) -> dict[str, Path]:
    """The four records ``--record STEM.json`` stands for: ``STEM_<tag>.json`` by tag."""
    stem = Path(record)
    return {tag: stem.with_name(f"{stem.stem}_{tag}.json")
            for tag in ("open", "first_open", "memory", "sample")}


def cpu_name() -> str:
    """The CPU model and the cores this process may use, e.g. 'AMD EPYC 7B13 (2 cores)'
    (the model as ``metaloop.generative.experiment.cpu_model`` finds it: a Mac has no
    /proc/cpuinfo)."""
    from metaloop.generative.experiment import cpu_model

    model = cpu_model() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()                                      # macOS, Windows
    return f"{model} ({cores} cores)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--classes", type=int, default=1_000)
    p.add_argument("--size", type=int, default=28, help="side of the decoded images")
    p.add_argument("--side", type=int, default=32, help="side of the PNGs written")
    p.add_argument("--tasks", type=int, default=3_200,
                   help="20-way 5-shot tasks sampled, a multiple of 64")
    p.add_argument("--work", default="/tmp/metaloop-bench-folder")
    p.add_argument("--record", help="write a docs/results record here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    for flag in ("images", "classes", "size", "side", "tasks"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag} must be a positive int, got {getattr(args, flag)}")
    if args.classes < 20:
        p.error(f"--classes {args.classes}: the tasks are 20-way, so at least 20 classes")
    if args.images % args.classes or args.images // args.classes < 10:
        p.error(f"--images {args.images} must be a multiple of --classes {args.classes} with "
                f"at least 10 images per class (5 shots and 5 queries)")
    if args.tasks % 64:
        p.error(f"--tasks {args.tasks} must be a multiple of 64 (two halves of 32-task "
                f"meta-batches)")
    if args.record:                          # before the folder is written, not at the end
        from metaloop.evaluate.records import check_record_path
        try:
            for path in record_paths(args.record).values():
                check_record_path(path)
        except ValueError as e:
            p.error(f"--record: {e}")
    work = Path(args.work)
    root = work / f"images_{args.images}_{args.classes}c_{args.side}px"
    t0 = time.perf_counter()
    make_folder(root, args.images, args.classes, args.side)
    print(f"folder: {root} ({args.images} PNGs, {args.side}x{args.side}; "
          f"made in {time.perf_counter() - t0:.1f} s)")
    cache = work / f"cache_{root.name}_{args.size}"
    for f in cache.glob("*"):
        f.unlink()

    def run(*extra):
        cmd = [sys.executable, __file__, "--child", "--root", str(root), "--cache", str(cache),
               "--size", str(args.size), "--tasks", str(args.tasks), *extra]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True
                                         ).stdout.strip().splitlines()[-1])

    first, second, sampled = run(), run(), run("--sample")
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = use.ru_utime + use.ru_stime
    rss = sampled["rss_kib"]
    print(f"first open (decode + write cache): {first['open_s']:.1f} s ({first['cache_status']})")
    print(f"second open (scan + mapped cache): {second['open_s']:.2f} s "
          f"({second['cache_status']})")
    print(f"sampling 32 tasks (20-way 5-shot, 5 queries): "
          f"{1e3 * sampled['sample_s_per_32_tasks']:.1f} ms")
    mid, end = rss["middle"]["RssAnon"] / 1024, rss["after"]["RssAnon"] / 1024
    print(f"private memory (RssAnon) after half the tasks {mid:.0f} MiB, after all {end:.0f} "
          f"MiB (the allocator's working set, not the data read)")
    print(f"cache on disk: {sampled['cache_mib']:.1f} MiB; RSS after opening "
          f"{rss['before']['VmRSS'] / 1024:.0f} MiB (anon {rss['before']['RssAnon'] / 1024:.0f}"
          f"), after sampling {args.tasks} tasks {rss['after']['VmRSS'] / 1024:.0f} MiB (anon "
          f"{rss['after']['RssAnon'] / 1024:.0f}, file-backed "
          f"{rss['after']['RssFile'] / 1024:.0f})")
    if args.record:
        import torch

        from metaloop.evaluate.records import write_record
        common = dict(table="benchmarks-data", ci95=None, n=1,
                      budget={"cpu_seconds": round(cpu, 1)}, device=cpu_name(),
                      torch=torch.__version__, date=time.strftime("%Y-%m-%d"), config=None,
                      command=" ".join(["python", "benchmarks/bench_folder.py", *sys.argv[1:]]),
                      published=None, images=args.images, image_size=args.size)
        rows = {
            "open": dict(row=f"second open of {args.images} images (from the cache)",
                         metric="seconds", mean=round(second["open_s"], 3), digits=2),
            "first_open": dict(row=f"first open of {args.images} images (decode, write the "
                                   f"cache)", metric="seconds", mean=round(first["open_s"], 1),
                               digits=1),
            "memory": dict(row=f"private memory (RssAnon) after sampling {args.tasks} "
                               f"20-way 5-shot tasks from {args.images} images",
                           metric="MiB", mean=round(rss["after"]["RssAnon"] / 1024, 1),
                           digits=0, note=f"{rss['middle']['RssAnon'] / 1024:.0f} MiB after "
                           f"half the tasks; cache {sampled['cache_mib']:.0f} MiB on disk; "
                           f"file-backed RSS {rss['after']['RssFile'] / 1024:.0f} MiB"),
            "sample": dict(row="sampling 32 tasks, 20-way 5-shot, 5 queries, from the mapped "
                               "cache", metric="milliseconds",
                           mean=round(1e3 * sampled["sample_s_per_32_tasks"], 1), digits=1),
        }
        paths = record_paths(args.record)
        for tag, row in rows.items():
            path = paths[tag]
            write_record(path, **common, **row)
            print(f"record: {path}")


if __name__ == "__main__":
    main()
