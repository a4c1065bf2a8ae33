"""What ``metaloop train`` costs beyond the model's arithmetic: the CLI's training loop against
a bare loop doing the same arithmetic, side by side in one run.

Times, for one config, interleaved (cli, bare, cli, bare, ...):

* ``cli``: ``metaloop --threads T train --config C --out DIR --no-progress`` as a user runs
  it, in a subprocess, with ``train.iterations`` replaced by ``--iters``. Its seconds per
  iteration are read from the ``time`` stamps of its ``metrics.jsonl`` (one line per
  iteration on the CPU), from the end of the first iteration to the end of the last: the
  steady loop with everything it does per iteration (task sampling and augmentation, the
  input checks, the finite checks, metrics lines, the progress bookkeeping), without the
  start-up (imports, reading the data) and the final checkpoint, which are reported apart;
* ``bare``: the learner and the training family that config builds (``metaloop.build``),
  with ``meta_batch`` tasks drawn before the clock starts, then per iteration only the
  learner's ``meta_gradient`` on such a batch and one ``torch.optim.Adam`` step (the
  config's ``train.lr``); its first iteration is left out, as the CLI's is;
* ``overhead`` = cli / bare - 1, the share of the CLI loop's time that is not the
  meta-gradient and the optimizer step.

Both are timed twice: wall-clock seconds, and the process's CPU seconds per iteration (the
CLI's from the ``cpu_seconds`` its final checkpoint stores, which counts its whole loop; the
bare loop's over all its iterations), which other work on a shared machine skews less.

The config's checkpoint and validation intervals apply as they are (a short run writes only
its final checkpoint and validates only if an interval falls inside it): their cost per
iteration in a full run is one checkpoint's (or validation's) time over its interval.

``--record FILE`` also writes the median CPU ratio as a record (table
``benchmarks-overhead``, ``docs/benchmarks.md``), with the wall-clock ratio in its note.

Run:  python benchmarks/bench_overhead.py [--config configs/omniglot_challenge_ensemble40_cpu.toml]
          [--iters 20] [--reps 3] [--threads 1] [--record docs/results/benchmarks_overhead_X.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import allocator, require_positive  # benchmarks/ is on sys.path

from metaloop import build, config
from metaloop.evaluate.records import check_record_path, cpu_device, write_record

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/omniglot_challenge_ensemble40_cpu.toml"


def short_config(path: Path, iters: int, folder: Path) -> Path:
    """A config that is ``path`` with ``train.iterations = iters`` (``extends``)."""
    out = folder / f"{path.stem}_{iters}.toml"
    out.write_text(f"extends = {json.dumps(str(path.resolve()))}\n\n"
                   f"[train]\niterations = {iters}\n", encoding="utf-8")
    return out


def cli_run(cfg_path: Path, out: Path, threads: int) -> dict:
    """One ``metaloop train`` of ``cfg_path`` into ``out``: its steady seconds per
    iteration, start-up seconds and the seconds after its last metrics line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.time()
    r = subprocess.run([sys.executable, "-m", "metaloop", "--threads", str(threads), "train",
                        "--config", str(cfg_path), "--out", str(out), "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if r.returncode != 0:
        raise SystemExit(f"metaloop train failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    stamps = [rec["time"] for rec in lines]
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    latest = (out / "LATEST").read_text(encoding="utf-8").strip()
    cpu = json.loads((out / latest / "state.json").read_text(encoding="utf-8"))["cpu_seconds"]
    return {"s_per_it": steady, "cpu_per_it": cpu / len(stamps),
            "startup_s": stamps[0] - start - steady, "finish_s": end - stamps[-1]}


def bare_setup(cfg: dict, threads: int):
    """The learner, the optimizer and pre-drawn meta-batches of ``cfg``'s training run."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg["train"]["seed"])
    family = build.build_family(cfg["family"])
    learner = build.build_learner(cfg, family)
    learner.model.to(dtype=getattr(torch, cfg["train"]["dtype"]))
    fam = build.training_family(cfg, family)
    g = torch.Generator().manual_seed(cfg["train"]["seed"])
    batches = [fam.sample(cfg["train"]["meta_batch"], generator=g) for _ in range(4)]
    opt = torch.optim.Adam(learner.model.parameters(), lr=cfg["train"]["lr"])
    return learner, opt, batches


def bare_run(learner, opt, batches, iters: int) -> tuple[float, float]:
    """Wall-clock seconds per iteration of ``iters`` steps (the first one untimed, as the
    CLI's) and CPU seconds per iteration (all of them, as the CLI's)."""
    named = list(learner.model.named_parameters())

    def step(batch) -> None:
        grads = learner.meta_gradient(batch)
        opt.zero_grad(set_to_none=True)
        for n, p in named:
            p.grad = grads[n]
        opt.step()

    cpu = time.process_time()
    step(batches[0])
    t = time.perf_counter()
    for i in range(1, iters):
        step(batches[i % len(batches)])
    wall = (time.perf_counter() - t) / (iters - 1)
    return wall, (time.process_time() - cpu) / iters


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"training config (default {DEFAULT_CONFIG})")
    p.add_argument("--iters", type=int, default=20,
                   help="iterations per run, at least 2 (default 20)")
    p.add_argument("--reps", type=int, default=3, help="interleaved runs of each (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--record", help="also write the median CPU ratio as a record to this "
                   "JSON file (docs/results/benchmarks_overhead_NAME.json)")
    args = p.parse_args(argv)
    require_positive(p, args, "iters", "reps", "threads")
    if args.iters < 2:
        p.error(f"--iters must be at least 2 (the first iteration is not timed), got "
                f"{args.iters}")
    path = Path(args.config)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    try:
        cfg = config.load(path)
    except (OSError, ValueError) as e:
        p.error(f"--config {args.config}: {e}")
    if args.record:                             # where the record goes, before any work
        try:
            check_record_path(args.record)
        except ValueError as e:
            p.error(f"--record: {e}")
    ways = f", {cfg['family']['ways']}-way" if cfg["family"]["name"] != "sinusoid" else ""
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"{allocator()}; {path.name}: {cfg['method']['name']}, "
          f"{cfg['family']['name']}{ways}, meta-batch {cfg['train']['meta_batch']}, "
          f"{args.iters} iterations per run")
    learner, opt, batches = bare_setup(cfg, args.threads)
    cli, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        short = short_config(path, args.iters, Path(tmp))
        for r in range(args.reps):                      # interleaved
            cli.append(cli_run(short, Path(tmp) / f"run{r}", args.threads))
            bare.append(bare_run(learner, opt, batches, args.iters))
    load = os.getloadavg()[1]                   # other work on the machine skews every time
    print(f"load average over the last 5 minutes: {load:.1f} on {os.cpu_count()} cores")
    print("run   wall: cli s/it   bare s/it   cli/bare    cpu: cli s/it   bare s/it   cli/bare")
    for r, (x, (wall, cpu)) in enumerate(zip(cli, bare)):
        print(f"{r:<5} {x['s_per_it']:>15.4f}   {wall:>9.4f}   {x['s_per_it'] / wall:>8.3f}"
              f"   {x['cpu_per_it']:>13.4f}   {cpu:>9.4f}   {x['cpu_per_it'] / cpu:>8.3f}")
    for what, key, i in (("wall", "s_per_it", 0), ("cpu", "cpu_per_it", 1)):
        c = statistics.median(x[key] for x in cli)
        b = statistics.median(y[i] for y in bare)
        print(f"median {what}: cli {c:.4f} s/it, bare {b:.4f} s/it: ratio {c / b:.3f} "
              f"(overhead {100 * (c / b - 1):+.1f}%)")
    up, fin = (statistics.median(x[k] for x in cli) for k in ("startup_s", "finish_s"))
    print(f"cli once per run (median): start-up {up:.1f} s, final checkpoint and exit "
          f"{fin:.2f} s")
    if args.record:
        ratio = {key: statistics.median(x[key] for x in cli) / statistics.median(y[i] for y in bare)
                 for key, i in (("s_per_it", 0), ("cpu_per_it", 1))}
        given = sys.argv[1:] if argv is None else list(argv)
        try:
            config_name = str(path.resolve().relative_to(ROOT))
        except ValueError:
            config_name = str(path)
        write_record(
            args.record, table="benchmarks-overhead", row=f"{cfg['method']['name']}, "
            f"{config_name}", metric="CPU time per training iteration, metaloop train / bare loop",
            mean=round(ratio["cpu_per_it"], 3), ci95=None, unit="x", digits=3, n=args.reps,
            budget={"iterations": 2 * args.reps * args.iters}, config=config_name,
            device=f"{cpu_device()}, shared", published=None,
            command="python benchmarks/bench_overhead.py " + " ".join(given),
            note=(f"median of {args.reps} interleaved runs of {args.iters} iterations each; "
                  f"wall-clock ratio {ratio['s_per_it']:.3f}; load average {load:.1f} on "
                  f"{os.cpu_count()} cores; the CLI's start-up ({up:.1f} s) and final "
                  f"checkpoint and exit ({fin:.2f} s) are not counted"),
            torch=torch.__version__.split("+")[0], date=datetime.date.today().isoformat())
        print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
