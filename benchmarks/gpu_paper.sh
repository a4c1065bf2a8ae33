#!/usr/bin/env bash
# The MAML paper's Omniglot 5-way 1-shot protocol (configs/omniglot_maml_5w1s_full.toml:
# Conv4 stride 64 filters, 60,000 iterations, meta-batch 32, 1 inner step at 0.4, Adam 1e-3)
# and its 600-task evaluation in one command, under a wall-clock budget, on a lent GPU.
#
#   METALOOP_DATA=<folder holding omniglot/> OUT=<dir> bash benchmarks/gpu_paper.sh [options]
#   bash benchmarks/gpu_paper.sh --smoke               # CPU, tiny overrides, ~1 minute
#   bash benchmarks/gpu_paper.sh --iterations 2000     # the pilot: iterations/s, projection
#
# Steps: (1) checks on the training device (~40 s): the device sampler under
# torch.cuda.set_sync_debug_mode (it must not synchronise), the host synchronisations left in
# a training step, seconds per iteration with host sampling (prefetch off / on) and device
# sampling, the whole step captured as one CUDA graph (benchmarks/gpu_graph.py: whether it
# captures, its speed-up, its parameters against the eager step's), and the relative error
# of the bf16-autocast meta-gradient against float32; (2) `metaloop train` of the config with the GPU settings below, stopped with
# SIGINT (which checkpoints) if it reaches --train-seconds; (3) `metaloop eval` of the
# checkpoint on the config's 600 test tasks at the paper's 3 test-time steps; (4)
# $OUT/summary.json: iterations, train_seconds, eval_seconds, wall_seconds,
# accuracy_mean, accuracy_ci95 (percent), device, torch, and the checks; and
# $OUT/record.json, the evaluation's record (metaloop eval --record), for docs/results/.
#
# GPU settings applied to the config (written to $OUT/config.toml): method.batching = "vmap"
# (tasks batched; the loop on the CPU), train.device_tasks = true (images on the GPU, tasks
# drawn there), train.log_every = 100 (metrics read every 100 iterations). Options:
#   --smoke              tiny run on the CPU (or --device cuda): 20 iterations, 20 eval tasks
#   --iterations N|fit   train N iterations (default: the config's, 60,000 for the paper's);
#                        fit: as many as --train-seconds holds at the step time the checks
#                        measured (less 30 s for the start), at most the config's, so that
#                        the learning-rate schedule ends when the run does
#   --train-seconds S    stop training at S s (default 470); --eval-seconds S (default 110)
#   --precision bf16     bf16 autocast; --tf32: TF32 matmuls/convolutions (both opt-in)
#   --cuda-graph auto|on|off  train with the step recorded as one CUDA graph
#                        (train.cuda_graph); auto (default): where the check's probe recorded
#                        it and its replays matched the eager step
#   --device cpu|cuda    default: cuda when available
#   --config FILE        another config (default configs/omniglot_maml_5w1s_full.toml)
#
# On a lent machine (no network, bare): carry the Omniglot data in an ignored folder, e.g.
#   mkdir -p runs/data && cp -r ../shared/data/omniglot runs/data/     (5.5 MB)
#   then run:  METALOOP_DATA=runs/data bash benchmarks/gpu_paper.sh --iterations 2000
#   (the pilot; carry runs/data), and the full run the same way without --iterations.
# The original one-shot challenge's GPU config, fitted to the budget in one command:
#   METALOOP_DATA=runs/data bash benchmarks/gpu_paper.sh \
#       --config configs/omniglot_challenge_all_gpu.toml --iterations fit --train-seconds 420
#   (420 s of training leave the checks and the evaluation room in a 600 s command)
# The package runs from this checkout (src/ on PYTHONPATH); it needs torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec python - "$@" <<'PY'
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

START = time.perf_counter()
p = argparse.ArgumentParser(prog="gpu_paper.sh", description="The MAML paper's Omniglot "
                            "protocol (or --config's) on one GPU: checks, training fitted to "
                            "the budget, and the evaluation; the options are described in "
                            "the header of benchmarks/gpu_paper.sh")
p.add_argument("--smoke", action="store_true")
def _iterations(v: str):
    if v == "fit":
        return v
    n = int(v)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int or 'fit', got {v!r}")
    return n


p.add_argument("--iterations", type=_iterations)
p.add_argument("--train-seconds", type=float, default=470.0)
p.add_argument("--eval-seconds", type=float, default=110.0)
p.add_argument("--precision", choices=("float32", "bf16"), default="float32")
p.add_argument("--tf32", action="store_true")
p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto")
p.add_argument("--device", choices=("cpu", "cuda"))
p.add_argument("--config", default="configs/omniglot_maml_5w1s_full.toml")
p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_paper")
args = p.parse_args()
device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
if device == "cuda" and not torch.cuda.is_available():
    p.error("--device cuda: torch sees no CUDA device here; --device cpu (with --smoke) "
            "tries the script on the CPU")
if args.tf32 and device != "cuda":        # TF32 exists on CUDA only: it would change nothing
    p.error(f"--tf32 allows TF32 matmuls on CUDA, but the device is {device}; leave it out")
for flag in ("train_seconds", "eval_seconds"):
    if not getattr(args, flag) > 0:
        p.error(f"--{flag.replace('_', '-')} must be a positive number of seconds, got "
                f"{getattr(args, flag)}")
out = Path(args.out)
stale = [str(out / x) for x in ("run", "eval", "summary.json", "record.json")
         if (out / x).exists()]
if stale:                                    # a stale run or result would be read as this one's
    print(f"gpu_paper.sh: error: {', '.join(stale)} already exist(s); give an empty --out",
          file=sys.stderr)
    sys.exit(2)
from metaloop import config as _config  # noqa: E402

try:                                      # the config, its extends chain resolved
    cfg = _config.load(args.config)       # (before --out is made: nothing half-written)
except (ValueError, FileNotFoundError) as e:
    p.error(f"--config {args.config}: {e}")
out.mkdir(parents=True, exist_ok=True)
full_iterations = cfg["train"]["iterations"]    # what the protocol trains
cfg["method"]["batching"] = "vmap" if device == "cuda" else "loop"
cfg["train"].update(device_tasks=True, log_every=100 if device == "cuda" else 5)
if args.smoke:
    cfg["model"]["channels"] = 8
    cfg["train"].update(iterations=20, meta_batch=2, checkpoint_every=10)
    cfg["eval"]["tasks"] = 20
if isinstance(args.iterations, int):
    cfg["train"]["iterations"] = args.iterations
START_SECONDS = 30.0                         # a train process's start: imports, data, model


cfg_path = out / "config.toml"
cfg_path.write_text(_config.to_toml(cfg))
threads = ["--threads", "1"] if device == "cpu" else []
# (TF32 exists on CUDA only: metaloop eval refuses --tf32 without --device cuda)
flags = ["--device", device] + (["--tf32"] if args.tf32 and device == "cuda" else [])
run_dir, eval_dir = out / "run", out / "eval"


def checks() -> dict:
    """Sync-freedom of the sampler, syncs left per training step, bf16 gradient error."""
    import metaloop as ml
    from metaloop import build as _build
    from metaloop.tasks.device import DeviceTasks
    from metaloop.train.distributed import set_tf32
    set_tf32(args.tf32)
    c = _config.load(cfg_path)
    fam = _build.build_family(c["family"])
    dev = torch.device(device)
    res = {}
    learner = _build.build_learner(c, fam, device=dev)
    learner.model.to(dev)
    dfam = DeviceTasks(_build.training_family(c, fam), dev)
    g = torch.Generator(device=dfam.generator_device).manual_seed(0)
    mb = c["train"]["meta_batch"]
    batch = dfam.sample(mb, g)
    if device == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            dfam.sample(mb, g)
            res["sampler_sync_free"] = True
        except RuntimeError as e:
            res["sampler_sync_free"] = f"no: {e}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ml.train(learner, dfam, iterations=2, meta_batch=mb, progress=False, log_every=100)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                ml.train(learner, dfam, iterations=5, meta_batch=mb, progress=False,
                         log_every=100)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(x.message) for x in w if "synchroniz" in str(x.message)]
        res["syncs_in_5_iterations"] = len(syncs)   # incl. the one log read at iteration 5
        res["sync_examples"] = sorted(set(s[:160] for s in syncs))[:5]
        # seconds per iteration: host sampling without / with prefetch, device sampling
        host = _build.training_family(c, fam)
        for name, family, prefetch in (("host", host, False), ("host_prefetch", host, True),
                                       ("device", dfam, False)):
            ml.train(learner, family, iterations=3, meta_batch=mb, progress=False,
                     prefetch=prefetch, log_every=100)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            ml.train(learner, family, iterations=20, meta_batch=mb, progress=False,
                     prefetch=prefetch, log_every=100)
            torch.cuda.synchronize()
            res[f"s_per_it_{name}"] = (time.perf_counter() - t0) / 20
        # the whole step as one CUDA graph: does it capture, how much faster, the same step?
        sys.path.insert(0, "benchmarks")
        from gpu_graph import probe
        try:
            res["cuda_graph"] = probe(str(cfg_path), device, iters=30)
        except Exception as e:
            res["cuda_graph"] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
    if device != "cuda" and args.iterations == "fit":   # the rate to fit (CUDA: timed above)
        ml.train(learner, dfam, iterations=2, meta_batch=mb, progress=False)
        t0 = time.perf_counter()
        ml.train(learner, dfam, iterations=5, meta_batch=mb, progress=False)
        res["s_per_it_device"] = (time.perf_counter() - t0) / 5
    grads = {}
    for prec in ("float32", "bf16"):
        ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if prec == "bf16"
               else torch.autocast(dev.type, enabled=False))
        with ctx:
            grads[prec] = learner.meta_gradient(batch)
    num = sum(float((grads["bf16"][k].double() - v.double()).pow(2).sum())
              for k, v in grads["float32"].items())
    den = sum(float(v.double().pow(2).sum()) for v in grads["float32"].values())
    res["bf16_meta_gradient_relative_error"] = (num / den) ** 0.5
    per = sorted(float((grads["bf16"][k].double() - v.double()).norm() / v.double().norm())
                 for k, v in grads["float32"].items() if float(v.norm()) > 0)
    res["bf16_relative_error_per_tensor_median"] = per[len(per) // 2]   # conv biases before
    # BatchNorm have ~0 float32 gradients (BN cancels them): their relative errors are huge
    return res


t = time.perf_counter()
summary = {"config": args.config, "overrides": {"method.batching": cfg["method"]["batching"],
           "train.device_tasks": True, "train.log_every": cfg["train"]["log_every"]},
           "smoke": args.smoke, "precision": args.precision, "tf32": args.tf32,
           "iterations_target": cfg["train"]["iterations"],
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "torch": torch.__version__}
try:
    summary["checks"] = checks()
except Exception as e:                       # the run below is the point; report and go on
    summary["checks"] = {"error": f"{type(e).__name__}: {e}"}
summary["checks_seconds"] = time.perf_counter() - t
print("checks:", json.dumps(summary["checks"]), flush=True)

# the training step as one CUDA graph (train.cuda_graph): "auto" uses it where the probe above
# recorded it and its replays gave the eager step's parameters (relative 1e-4)
probe_ok = summary["checks"].get("cuda_graph", {})
probe_ok = probe_ok.get("captured") is True and \
    probe_ok.get("max_relative_param_difference", 1.0) < 1e-4
use_graph = device == "cuda" and (args.cuda_graph == "on"
                                  or (args.cuda_graph == "auto" and probe_ok))
cfg["train"]["cuda_graph"] = use_graph
summary["overrides"]["train.cuda_graph"] = use_graph
if args.iterations == "fit":                 # the schedule must end when the budget does
    c = summary["checks"]
    rate = (c["cuda_graph"]["graph_s_per_it"] if use_graph else c.get("s_per_it_device"))
    if not rate:
        print(f"gpu_paper.sh: error: --iterations fit needs the checks' step time, which "
              f"failed: {json.dumps(c)[:400]}", file=sys.stderr)
        sys.exit(1)
    fit = int(max(args.train_seconds - START_SECONDS, 0.0) / rate)
    cfg["train"]["iterations"] = max(1, min(cfg["train"]["iterations"], fit))
    cfg["train"]["checkpoint_every"] = min(cfg["train"]["checkpoint_every"],
                                           cfg["train"]["iterations"])
    summary["iterations_target"] = cfg["train"]["iterations"]
    summary["iterations_fit"] = {"s_per_it": rate, "fit": fit,
                                 "start_seconds": START_SECONDS}
    print(f"fitted: {cfg['train']['iterations']} iterations at {rate:.4f} s each "
          f"(the config's: {full_iterations})", flush=True)
cfg_path.write_text(_config.to_toml(cfg))

cmd = [sys.executable, "-m", "metaloop", *threads, "train", "--config", str(cfg_path),
       "--out", str(run_dir), "--no-progress", "--precision", args.precision, *flags]
t = time.perf_counter()
proc = subprocess.Popen(cmd)
try:
    rc = proc.wait(timeout=args.train_seconds)
except subprocess.TimeoutExpired:            # stop after the current iteration, checkpointed
    proc.send_signal(signal.SIGINT)
    rc = proc.wait()
summary["train_seconds"] = time.perf_counter() - t
summary["train_exit"] = rc
lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] \
    if (run_dir / "metrics.jsonl").exists() else []
latest = (run_dir / "LATEST").read_text().strip() if (run_dir / "LATEST").exists() else None
its = int(latest.split("-")[1]) if latest else 0
summary["iterations"] = its
summary["complete"] = its == cfg["train"]["iterations"]
if len(lines) >= 2:                          # steady rate, between the first and last lines
    dt = lines[-1]["time"] - lines[0]["time"]
    summary["iterations_per_second"] = (lines[-1]["iteration"] - lines[0]["iteration"]) / dt
    summary["projected_full_train_seconds"] = full_iterations / \
        summary["iterations_per_second"]             # the config's own iteration count
    summary["last_logged"] = lines[-1]

# the paper's 3 test-time steps; a closed-form head (another --config) takes none, and
# metaloop eval refuses --steps for it
steps = [] if cfg["method"]["name"] in _config.HEAD_BASED else ["--steps", "3"]
ecmd = [sys.executable, "-m", "metaloop", *threads, "eval", "--checkpoint", str(run_dir),
        *steps, "--out", str(eval_dir), "--record", str(out / "record.json"), "--no-progress",
        *flags]
t = time.perf_counter()
if its:
    try:
        summary["eval_exit"] = subprocess.run(ecmd, timeout=args.eval_seconds).returncode
    except subprocess.TimeoutExpired:
        summary["eval_exit"] = "timeout"
summary["eval_seconds"] = time.perf_counter() - t
res = eval_dir / "results.json"
if res.exists():
    r = json.loads(res.read_text())
    acc = next(iter(r["methods"].values()))["accuracy"]
    summary["accuracy_mean"] = 100 * acc["mean"][-1]
    summary["accuracy_ci95"] = 100 * acc["ci95"][-1]
    summary["eval_tasks"] = r["config"]["eval"]["tasks"]
    summary["eval_steps"] = 3 if steps else 0
else:
    summary["accuracy_mean"] = summary["accuracy_ci95"] = None
summary["commands"] = [" ".join(cmd), " ".join(ecmd)]
summary["wall_seconds"] = time.perf_counter() - START
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary.get(k) for k in ("iterations", "train_seconds", "eval_seconds",
                  "wall_seconds", "accuracy_mean", "accuracy_ci95", "device")}))
print(f"summary: {out / 'summary.json'}")
PY
