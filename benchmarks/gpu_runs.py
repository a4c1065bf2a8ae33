"""Run many Omniglot configs side by side on one CUDA GPU, under a deadline, then evaluate.

For a GPU machine available for a fixed time (see ``benchmarks/gpu_quick.sh``). Steps:

1. **Check**: the second-order MAML meta-gradient of the 5-way 1-shot cpu profile on CUDA
   equals the CPU one (float32, relative 1e-4: ``EXACT``), and ``batching="vmap"`` equals
   ``"loop"``.
2. **Probe**: seconds per iteration on CUDA for ``loop`` and ``vmap`` task batching; the faster
   is used for every run (the numbers are the same either way, see step 1 and
   ``tests/meta/test_conformance.py``).
3. **Train** each named config as its own ``metaloop train --device cuda`` process, all at
   once. At ``--train-seconds`` every run still going gets SIGINT, which checkpoints it; its
   iteration count is reported.
4. **Evaluate** every run with ``metaloop eval --device cuda`` on its config's held-out tasks.

Writes ``summary.json`` (probe, per-run iterations, train seconds, eval accuracies; rewritten
atomically after the probe, the training and the evaluation, its ``"stage"`` saying which, so
a kill keeps the last finished stage's numbers),
``logs.tar.gz`` (the logs and configs) and ``runs<i>.tar.gz`` (each run's metrics.jsonl,
final checkpoint and eval results, six runs to a file) into ``--out``.

    python benchmarks/gpu_runs.py --out $OUT --train-seconds 330 --eval-seconds 150 \\
        omniglot_maml_5w1s_cpu omniglot_r2d2_5w1s_cpu ...

A name ``NAME+cosine`` runs ``configs/NAME.toml`` with ``train.lr_schedule = "cosine"``; a name
ending in ``.toml`` is a config file's path, and its run is named after the file's stem.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from metaloop import build as _build  # noqa: E402
from metaloop import config as _config  # noqa: E402
from metaloop.evaluate.records import gpu_device  # noqa: E402
from metaloop.train.checkpoint import atomic_write_text  # noqa: E402


def _learner(cfg_path: Path, batching: str, device: str):
    cfg = _config.load(cfg_path)
    cfg["method"]["batching"] = batching
    cfg = _config.validate(cfg)
    torch.manual_seed(0)
    fam = _build.build_family(cfg["family"])
    learner = _build.build_learner(cfg, fam)
    learner.model.to(device)
    return learner, fam, cfg


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


EXACT = 1e-4       # relative meta-gradient error that counts as equal (float32, TF32 off)


def exact(probe: dict) -> bool:
    """Whether every ``rel_err_*`` of ``probe`` is below ``EXACT``."""
    return all(v < EXACT for k, v in probe.items() if k.startswith("rel_err"))


def check_and_probe(cfg_path: Path, device: str, reps: int = 5) -> dict:
    """Exactness on ``device``, then seconds per meta-gradient for loop and vmap."""
    from metaloop.train.distributed import set_tf32
    set_tf32(False)                       # as metaloop train/eval do unless --tf32
    out = {}
    grads = {}
    for dev, batching in (("cpu", "loop"), (device, "loop"), (device, "vmap")):
        learner, fam, cfg = _learner(cfg_path, batching, dev)
        batch = fam.sample(cfg["train"]["meta_batch"], generator=torch.Generator().manual_seed(1))
        g = learner.meta_gradient(batch.to(dev))
        grads[(dev, batching)] = {k: v.double().cpu() for k, v in g.items()}
        times = []
        for _ in range(reps):
            _sync(dev)
            t = time.perf_counter()
            learner.meta_gradient(batch.to(dev))
            _sync(dev)
            times.append(time.perf_counter() - t)
        out[f"s_per_it_{dev}_{batching}"] = sorted(times)[len(times) // 2]
    ref = grads[("cpu", "loop")]
    for key in ((device, "loop"), (device, "vmap")):
        # one relative error over all parameters: a conv bias before BatchNorm has a true
        # gradient of 0, so per-tensor relative errors of rounding noise mean nothing
        diff = sum((grads[key][k] - ref[k]).pow(2).sum() for k in ref).sqrt()
        err = (diff / sum(ref[k].pow(2).sum() for k in ref).sqrt()).item()
        out[f"rel_err_{key[0]}_{key[1]}_vs_cpu"] = err
    out["exact"] = exact(out)
    fast = out[f"s_per_it_{device}_vmap"] < out[f"s_per_it_{device}_loop"]
    out["batching"] = "vmap" if out["exact"] and fast else "loop"
    return out


def run_name(name: str) -> str:
    """The run folder's (and written config's) name for a config ``name`` on the command line."""
    return Path(name).stem if name.endswith(".toml") else name.replace("+", "_")


def load_named(name: str) -> dict:
    """The resolved config of ``name`` (its ``extends`` chain read) with the name's variant
    applied.

    Raises:
        ValueError, FileNotFoundError: no such config, a bad one, or an unknown variant.
    """
    if name.endswith(".toml"):                      # a config file of one's own
        src, variant = Path(name), ""
    else:
        base, _, variant = name.partition("+")
        src = ROOT / "configs" / f"{base}.toml"
    if variant not in ("", "cosine"):
        raise ValueError(f"unknown variant {variant!r} in {name!r} (known: +cosine)")
    cfg = _config.load(src)
    if variant == "cosine":
        cfg["train"]["lr_schedule"] = "cosine"
    return cfg


def write_config(name: str, batching: str, dst: Path) -> Path:
    """``load_named(name)`` with the probed task batching, written whole to ``dst`` as
    TOML."""
    cfg = load_named(name)
    cfg["method"]["batching"] = batching
    path = dst / f"{run_name(name)}.toml"
    path.write_text(_config.to_toml(cfg))
    return path


def _iterations(run: Path) -> int:
    log = run / "metrics.jsonl"
    if not log.exists():
        return 0
    lines = log.read_text().splitlines()
    return json.loads(lines[-1])["iteration"] if lines else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/gpu_runs")
    ap.add_argument("--train-seconds", type=float, default=330,
                    help="wall-clock seconds before the runs still going are stopped")
    ap.add_argument("--eval-seconds", type=float, default=150,
                    help="wall-clock seconds the evaluations may take")
    ap.add_argument("--probe-config", default="omniglot_maml_5w1s_cpu",
                    help="the config in configs/ whose step is checked and timed")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    ap.add_argument("--eval-tasks", type=int, default=0, help="0: the config's")
    ap.add_argument("--batching", choices=("loop", "vmap"),
                    help="skip the check and probe and use this task batching")
    args = ap.parse_args()
    out, work = Path(args.out), Path(args.work)
    stale = [str(work / "runs" / run_name(n)) for n in args.names
             if (work / "runs" / run_name(n)).exists()]
    if stale:                                # a stale run would be evaluated as this one
        ap.error(f"{', '.join(stale)} already exist(s); give another --work")
    for flag in ("train_seconds", "eval_seconds"):
        if not getattr(args, flag) > 0:
            ap.error(f"--{flag.replace('_', '-')} must be a positive number of seconds, got "
                     f"{getattr(args, flag)}")
    if args.eval_tasks < 0:
        ap.error(f"--eval-tasks must be an int >= 0 (0: the config's), got {args.eval_tasks}")
    # every config before any work: a bad name found after the probe (or after the runs
    # before it started) would waste the GPU's time and leave those runs going
    for name in args.names + ([] if args.batching else [args.probe_config]):
        try:
            load_named(name)
        except (ValueError, FileNotFoundError) as e:
            ap.error(f"{name}: {e}")
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here; --device cpu only tries the "
                 "script")
    (work / "configs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"device": gpu_device(0) if dev == "cuda" else "cpu",
               "torch": torch.__version__}
    t0 = time.perf_counter()
    if args.batching:
        summary["probe"] = {"batching": args.batching, "skipped": True}
    else:
        summary["probe"] = check_and_probe(ROOT / "configs" / f"{args.probe_config}.toml", dev)
    print(json.dumps(summary), f"{time.perf_counter() - t0:.0f} s", flush=True)
    _save(out, summary, "probe")
    batching = summary["probe"]["batching"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    procs = {}
    for name in args.names:
        cfg = write_config(name, batching, work / "configs")
        run = work / "runs" / cfg.stem
        log = open(work / f"{run.name}.train.log", "w")
        procs[name] = (run, time.perf_counter(), subprocess.Popen(
            [sys.executable, "-m", "metaloop", "--threads", "1", "train", "--config", str(cfg),
             "--out", str(run), "--device", dev, "--no-progress"],
            stdout=log, stderr=subprocess.STDOUT, env=env))
    deadline = time.perf_counter() + args.train_seconds
    runs = {}
    while any(p.poll() is None for _, _, p in procs.values()):
        if time.perf_counter() > deadline:
            for _, _, p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for _, _, p in procs.values():
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(2)
    for name, (run, start, p) in procs.items():
        runs[name] = {"returncode": p.returncode, "iterations": _iterations(run),
                      "train_wall_s": round(time.perf_counter() - start, 1)}
        print(name, runs[name], flush=True)
    summary["runs"] = runs
    _save(out, summary, "training")
    evals = {}
    for name, (run, _, _) in procs.items():
        if runs[name]["iterations"] == 0 and "scratch" not in name:
            continue
        log = open(work / f"{run.name}.eval.log", "w")
        # a closed-form head (r2d2, metaoptnet, protonet) takes no steps: eval refuses --steps
        method = _config.load(work / "configs" / f"{run.name}.toml")["method"]["name"]
        steps = [] if method in _config.HEAD_BASED else \
            ["--steps", "0,1,3" if "_5w" in name else "0,1,5"]
        evals[name] = subprocess.Popen(
            [sys.executable, "-m", "metaloop", "--threads", "1", "eval", "--checkpoint",
             str(run), "--out", str(run / "eval"), "--device", dev]
            + (["--tasks", str(args.eval_tasks)] if args.eval_tasks else []) + steps,
            stdout=log, stderr=subprocess.STDOUT, env=env)
    eval_deadline = time.perf_counter() + args.eval_seconds
    for name, p in evals.items():
        try:
            p.wait(timeout=max(1.0, eval_deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
        res = procs[name][0] / "eval" / "results.json"
        if res.exists():
            r = json.loads(res.read_text())["methods"]
            m = next(iter(r.values()))
            runs[name]["eval"] = {"steps": m["steps"], "accuracy": m["accuracy"]}
        print(name, runs[name].get("eval"), f"{time.perf_counter() - t0:.0f} s", flush=True)
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    _save(out, summary, "evaluation")
    _pack(work, out, [procs[n][0] for n in args.names])
    return 0


def _save(out: Path, summary: dict, stage: str) -> None:
    """``out/summary.json`` as far as ``stage`` got, written atomically
    (``atomic_write_text``): a kill leaves the last whole one."""
    summary["stage"] = stage
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))


def _pack(work: Path, out: Path, runs: list[Path], per_file: int = 6) -> None:
    """Logs, configs and metrics in ``logs.tar.gz``; each run's newest checkpoint and eval in
    ``runs<i>.tar.gz``, ``per_file`` runs to a file (a file may come back at most 16 MiB)."""
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for f in list(work.glob("*.log")) + list((work / "configs").glob("*.toml")):
            tar.add(f, arcname=str(f.relative_to(work)))
    for i in range(0, len(runs), per_file):
        with tarfile.open(out / f"runs{i // per_file}.tar.gz", "w:gz") as tar:
            for run in runs[i:i + per_file]:
                if not run.exists():
                    continue
                latest = run / "LATEST"
                keep = {latest.read_text().strip()} if latest.exists() else set()
                for f in run.rglob("*"):
                    rel = f.relative_to(run)
                    if f.is_file() and (not rel.parts[0].startswith("ckpt-")
                                        or rel.parts[0] in keep):
                        tar.add(f, arcname=str(f.relative_to(work)))


if __name__ == "__main__":
    sys.exit(main())
