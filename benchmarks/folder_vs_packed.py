"""The same R2D2 run through the packed Omniglot loader and through an image folder.

Writes all of Omniglot (from the packed ``.npz`` files) in its official layout,
``<work>/omniglot_folder/<Alphabet>/characterNN/IIII_DD.png`` (mode "1" PNGs, black ink on
white, as the official zips), then trains and evaluates the same short R2D2 config twice
with ``metaloop train`` / ``metaloop eval``:

- ``family.name = "omniglot"``: train on Lake's background set, test on the evaluation set;
- ``family.name = "folder"``, ``class_depth = 2``, ``invert = "always"``, with the
  background characters as ``train_classes`` and the evaluation characters as
  ``test_classes``.

The folder path decodes to exactly the packed loader's images and samples the same task
stream, so the two held-out accuracies agree to the last digit. Prints both and exits 1 if
they differ.

Run:  python benchmarks/folder_vs_packed.py [--work /tmp/metaloop-folder-vs-packed]
          [--iterations 300] [--record docs/results/data_folder_vs_packed.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_folder import cpu_name  # noqa: E402  (benchmarks/ is on the path)

CONFIG = """[family]
{family}
ways = 5
shots = 1
queries = 5
image_size = 28

[model]
name = "conv4"
pool = "stride"
channels = 32

[method]
name = "r2d2"

[train]
iterations = {iterations}
meta_batch = 8
lr = 1e-3
checkpoint_every = {iterations}

[eval]
split = "{eval_split}"
tasks = 600
queries = 15
steps = [0]
"""


def write_official_layout(shared: Path, out: Path) -> tuple[list[str], list[str]]:
    """All 1623 characters as PNG files; returns (background names, evaluation names)."""
    from PIL import Image

    names = {}
    for part in ("background", "evaluation"):
        d = np.load(shared / f"omniglot_{part}.npz", allow_pickle=False)
        names[part] = [str(n) for n in d["class_names"]]
        if (out / f"DONE_{part}").is_file():
            continue
        for c, name in enumerate(names[part]):
            bits = np.unpackbits(d["images_packed"][c], axis=-1, count=105 * 105)
            (out / name).mkdir(parents=True, exist_ok=True)
            for k, b in enumerate(bits.reshape(20, 105, 105)):
                png = out / name / f"{int(d['class_file_id'][c]):04d}_{k + 1:02d}.png"
                Image.fromarray((1 - b).astype(bool)).save(png)
        (out / f"DONE_{part}").write_text("")
    return names["background"], names["evaluation"]


def run(work: Path, tag: str, family: str, eval_split: str, iterations: int) -> float:
    cfg = work / f"{tag}.toml"
    cfg.write_text(CONFIG.format(family=family, eval_split=eval_split, iterations=iterations))
    run_dir, eval_dir = work / f"run_{tag}", work / f"eval_{tag}"
    for d in (run_dir, eval_dir):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    ml = [sys.executable, "-m", "metaloop", "--threads", "1"]
    subprocess.run([*ml, "train", "--config", str(cfg), "--out", str(run_dir),
                    "--no-progress"], check=True)
    subprocess.run([*ml, "eval", "--checkpoint", str(run_dir), "--out", str(eval_dir),
                    "--no-progress"], check=True)
    res = json.loads((eval_dir / "results.json").read_text())
    acc = res["methods"]["r2d2"]["accuracy"]
    return acc["mean"][0], acc["ci95"][0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/metaloop-folder-vs-packed")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"
                                          / "data" / "omniglot"),
                   help="the packed Omniglot folder (omniglot_background.npz and "
                        "omniglot_evaluation.npz)")
    p.add_argument("--iterations", type=int, default=300, help="R2D2 training iterations")
    p.add_argument("--record", help="write a docs/results record here")
    args = p.parse_args()
    if args.iterations <= 0:
        p.error(f"--iterations must be a positive int, got {args.iterations}")
    if args.record:                          # before the runs, not after them
        from metaloop.evaluate.records import check_record_path
        try:
            check_record_path(args.record)
        except ValueError as e:
            p.error(f"--record: {e}")
    missing = [f"omniglot_{part}.npz" for part in ("background", "evaluation")
               if not (Path(args.shared) / f"omniglot_{part}.npz").is_file()]
    if missing:                              # before --work is made: nothing half-written
        p.error(f"--shared {args.shared} lacks {' and '.join(missing)} (the packed Omniglot "
                f"copy)")
    work = Path(args.work)
    folder = work / "omniglot_folder"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    background, evaluation = write_official_layout(Path(args.shared), folder)
    print(f"official layout: {folder} ({time.perf_counter() - t0:.0f} s)")
    packed = run(work, "packed", 'name = "omniglot"\nsplit = "background"', "evaluation",
                 args.iterations)
    lists = (f'name = "folder"\nroot = "{folder}"\nclass_depth = 2\ninvert = "always"\n'
             f"train_classes = {json.dumps(background)}\n"
             f"test_classes = {json.dumps(evaluation)}")
    via_folder = run(work, "folder", lists, "test", args.iterations)
    print(f"packed loader: {100 * packed[0]:.4f} ± {100 * packed[1]:.4f}")
    print(f"image folder:  {100 * via_folder[0]:.4f} ± {100 * via_folder[1]:.4f}")
    same = packed == via_folder
    print("identical" if same else "DIFFERENT")
    if args.record and same:
        import torch

        from metaloop.evaluate.records import write_record
        use = resource.getrusage(resource.RUSAGE_CHILDREN)
        write_record(
            args.record, table="data", row="R2D2 5-way 1-shot, Omniglot background -> "
            "evaluation, packed loader and image folder", metric="accuracy",
            mean=round(100 * packed[0], 4), ci95=round(100 * packed[1], 4), n=600,
            budget={"iterations": args.iterations, "cpu_seconds": round(use.ru_utime
                                                                        + use.ru_stime, 1)},
            device=cpu_name(), torch=torch.__version__,
            date=time.strftime("%Y-%m-%d"), config=None,
            command="python benchmarks/folder_vs_packed.py " + " ".join(sys.argv[1:]),
            published=None, folder_accuracy=round(100 * via_folder[0], 4),
            identical=same, digits=2)
        print(f"record: {args.record}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
