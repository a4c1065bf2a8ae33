"""The data share of a meta-iteration: sampling and augmenting a meta-batch against the
meta-gradient, on a folder family, with and without prefetching.

Times the hot loop only, in one run, under one allocator and thread setting:

* ``sample``: ``family.sample`` for a whole meta-batch (episode indices, one gather from the
  memory-mapped uint8 cache, float conversion), plain and through ``Shifted`` (rotations,
  then shifts: the augmentation of the training configs);
* ``meta``: one second-order MAML ``meta_gradient`` on such a batch (Conv4, stride);
* ``data share`` = sample / (sample + meta), the part of an iteration spent on data when it
  is drawn in the training thread (acceptance: under 5%);
* ``train``: seconds per iteration of ``metaloop.train`` with ``prefetch=False`` and
  ``True``, interleaved (off, on, off, on, ...), and their ratio;
* ``decode``: the one-time decode of the folder into its cache, per image (not part of any
  iteration: later opens read the cache).

The folder family is ``Episodes.from_folder`` over Omniglot written out as
``root/<class>/<drawing>.png`` (``--classes`` classes of the packed train split, 105x105 PNGs
made from the 28x28 images, in a temporary folder unless ``--folder``); ``--family omniglot``
times the packed ``Omniglot`` family instead.

Run:  python benchmarks/bench_sampling.py [--threads 1] [--settings 5w1s,20w5s]
          [--record docs/results/bench_sampling.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import allocator, require_positive  # benchmarks/ is on sys.path

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import Conv4
from metaloop.tasks import Omniglot, Shifted

SETTINGS = {  # name: (ways, shots, queries, meta_batch, inner_steps, inner_lr)
    "5w1s": (5, 1, 15, 32, 1, 0.4),     # the paper's 5-way setting: the cheapest iteration
    "20w5s": (20, 5, 15, 16, 5, 0.1),   # the paper's 20-way setting (meta-batch 16)
}
AUGMENT = {"max_shift": 2, "max_rotate": 10.0}


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_folder(root: Path, classes: int) -> Path:
    """Omniglot's first ``classes`` train classes as ``root/<class>/<drawing>.png``."""
    from PIL import Image
    fam = Omniglot(split="train", ways=5, shots=1, queries=1)
    imgs = fam.images[:classes]                                       # [K, 20, 28, 28] uint8
    for k, name in enumerate(fam.class_names[:classes]):
        d = root / name.replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        for j in range(imgs.shape[1]):
            im = Image.fromarray(255 - imgs[k, j].numpy())            # dark ink on white
            im.resize((105, 105), Image.BILINEAR).save(d / f"{j:02d}.png")
    return root


def open_family(kind: str, folder: Path | None, ways: int, shots: int, queries: int):
    """The family and the one-time decode seconds (None when nothing was decoded)."""
    if kind == "omniglot":
        return Omniglot(split="train", ways=ways, shots=shots, queries=queries), None
    t = time.perf_counter()
    fam = ml.tasks.Episodes.from_folder(folder, ways, shots, queries, image_size=28,
                                        channels=1, invert="always")
    took = time.perf_counter() - t
    return fam, (took if fam.report["cache_status"] != "hit" else None)


def _learner(ways: int, steps: int, lr: float):
    torch.manual_seed(0)
    return MAML(Conv4(1, 64, ways, pool="stride"), inner_lr=lr, inner_steps=steps,
                loss="ce", batching="loop")


def run(name: str, args, folder: Path | None) -> dict:
    ways, shots, queries, mb, steps, lr = SETTINGS[name]
    fam, decode_s = open_family(args.family, folder, ways, shots, queries)
    aug = Shifted(fam, **AUGMENT)
    g = torch.Generator().manual_seed(0)
    aug.sample(mb, generator=g)                                       # warm-up
    learner = _learner(ways, steps, lr)
    batch = aug.sample(mb, generator=g)
    learner.meta_gradient(batch)                                      # warm-up
    plain_s, aug_s, meta_s = [], [], []
    for _ in range(args.rounds):                                      # interleaved
        plain_s.append(_median_time(lambda: fam.sample(mb, generator=g), args.reps))
        aug_s.append(_median_time(lambda: aug.sample(mb, generator=g), args.reps))
        meta_s.append(_median_time(lambda: learner.meta_gradient(batch), 1))
    plain, augd, meta = (statistics.median(v) for v in (plain_s, aug_s, meta_s))
    train = {False: [], True: []}
    for _ in range(args.train_reps):
        for prefetch in (False, True):
            t = time.perf_counter()
            ml.train(_learner(ways, steps, lr), aug, iterations=args.train_iterations,
                     meta_batch=mb, progress=False, prefetch=prefetch)
            train[prefetch].append((time.perf_counter() - t) / args.train_iterations)
    off, on = statistics.median(train[False]), statistics.median(train[True])
    n_images = getattr(fam, "num_examples", None)
    return {"setting": name, "sample_s": plain, "augmented_s": augd, "meta_s": meta,
            "share_plain": plain / (plain + meta), "share_augmented": augd / (augd + meta),
            "train_off_s": off, "train_on_s": on, "prefetch_ratio": on / off,
            "decode_s_per_image": decode_s / n_images if decode_s and n_images else None}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--settings", default="5w1s", help=f"from {','.join(SETTINGS)}")
    p.add_argument("--family", choices=("folder", "omniglot"), default="folder")
    p.add_argument("--folder", type=Path, help="folder to write/read (default: a temp one)")
    p.add_argument("--classes", type=int, default=200, help="classes written (default 200)")
    p.add_argument("--reps", type=int, default=10, help="timed samples per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of timings")
    p.add_argument("--train-iterations", type=int, default=4)
    p.add_argument("--train-reps", type=int, default=2)
    p.add_argument("--record", help="write the worst data share as a results record here")
    args = p.parse_args(argv)
    require_positive(p, args, "threads", "classes", "reps", "rounds", "train_iterations",
                     "train_reps")
    names = [n.strip() for n in args.settings.split(",")]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:                                   # before the folder is written
        p.error(f"--settings names unknown setting(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(SETTINGS)}")
    ways = max(SETTINGS[n][0] for n in names)
    if args.family == "folder" and not (args.folder and args.folder.exists()) \
            and args.classes < ways:
        p.error(f"--classes {args.classes}: the {args.settings} tasks are up to {ways}-way, "
                f"so at least {ways} classes")
    if args.record:                               # before the work, not after it
        from metaloop.evaluate.records import check_record_path
        try:
            check_record_path(args.record)
        except ValueError as e:
            p.error(f"--record: {e}")
    torch.set_num_threads(args.threads)
    if args.family == "omniglot" or not (args.folder and args.folder.exists()):
        try:                                      # the packed data, read or written out
            Omniglot(split="train", ways=5, shots=1, queries=1)
        except FileNotFoundError as e:
            p.error(f"{str(e).splitlines()[0]} (set METALOOP_DATA "
                    f"to the folder holding omniglot/)")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"{allocator()}, family {args.family}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = None
        if args.family == "folder":
            folder = args.folder or Path(tmp) / "omniglot_folder"
            if not folder.exists():
                t = time.perf_counter()
                write_folder(folder, args.classes)
                print(f"wrote {args.classes} classes x 20 PNGs in "
                      f"{time.perf_counter() - t:.1f} s to {folder}")
        rows = [run(n, args, folder) for n in names]
    load = os.getloadavg()[1]                   # other work on the machine skews every time
    print(f"load average over the last 5 minutes: {load:.1f} on {os.cpu_count()} cores")
    print("setting  sample ms  +augment ms  meta-gradient s  data share  (augmented)  "
          "train s/it off   on   on/off")
    for r in rows:
        print(f"{r['setting']:<8} {1e3 * r['sample_s']:>9.2f}  {1e3 * r['augmented_s']:>11.2f}"
              f"  {r['meta_s']:>15.3f}  {100 * r['share_plain']:>9.3f}%  "
              f"{100 * r['share_augmented']:>10.3f}%  {r['train_off_s']:>13.3f} "
              f"{r['train_on_s']:>5.3f}  {r['prefetch_ratio']:>6.3f}")
        if r["decode_s_per_image"]:
            print(f"         decode once: {1e3 * r['decode_s_per_image']:.3f} ms per image")
    worst = max(rows, key=lambda r: r["share_augmented"])
    print(f"largest data share: {100 * worst['share_augmented']:.3f}% of one meta-iteration "
          f"({worst['setting']}, augmented); limit 5%")
    if args.record:
        from metaloop.evaluate.records import write_record
        write_record(
            args.record, table="benchmarks-data",
            row=f"data share of a meta-iteration, {args.family} family, {worst['setting']}, "
                f"shift+rotate, sampled in the training thread",
            metric="data share (%)", mean=round(100 * worst["share_augmented"], 3), ci95=None,
            n=args.rounds, budget={"iterations": args.train_iterations * args.train_reps * 2},
            device=f"{os.cpu_count()}-core CPU, {args.threads} thread(s)",
            torch=torch.__version__, date=datetime.date.today().isoformat(),
            config=f"benchmarks/bench_sampling.py settings {args.settings}",
            command="python " + " ".join([sys.argv[0], *sys.argv[1:]]), published=None,
            unit="%", prefetch_ratio=round(worst["prefetch_ratio"], 3),
            load_average=round(load, 1),
            rows=[{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                  for r in rows])
        print(f"record: {args.record}")


if __name__ == "__main__":
    main()
