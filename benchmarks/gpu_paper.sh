#!/usr/bin/env bash
# The MAML paper's Omniglot 5-way 1-shot protocol (configs/omniglot_maml_5w1s_full.toml:
# Conv4 stride 64 filters, 60,000 iterations, meta-batch 32, 1 inner step at 0.4, Adam 1e-3)
# and its 600-task evaluation in one command, ending inside a wall-clock budget, on one GPU.
#
#   METALOOP_DATA=<folder holding omniglot/> OUT=<dir> bash benchmarks/gpu_paper.sh [options]
#   OUT=/tmp/gpu_paper_smoke bash benchmarks/gpu_paper.sh --smoke --device cpu  # ~1 minute
#   OUT=<dir> bash benchmarks/gpu_paper.sh --iterations 2000  # the pilot: iterations/s, projection
#
# The Omniglot data is read from $METALOOP_DATA/omniglot (without METALOOP_DATA, from
# metaloop's default data folder). For a GPU available for a short time (a limit per command,
# a limit on the files that come back), benchmarks/gpu_session.sh runs this script beside its
# other parts inside one command's time.
#
# Stages, each ending with $OUT/summary.json rewritten (atomically) with "stage" set to it, so
# that a kill at any point leaves the last finished stage's numbers. A stage is claimed only
# when it finished: a training that wrote no checkpoint or exited other than 0 or by the
# planned stop, or an evaluation that failed or timed out, sets "error" (what happened), keeps
# the stage before, skips what follows and makes the script exit 1 (2: a usage error; 143:
# stopped by SIGTERM, the summary written first):
#   "checks" (~40 s on a GPU): the device sampler under torch.cuda.set_sync_debug_mode (it
#     must not synchronise), the host synchronisations left in a training step, seconds per
#     iteration with host sampling (prefetch off / on) and device sampling, the whole step
#     captured as one CUDA graph (benchmarks/gpu_graph.py: whether it captures, its speed-up,
#     its parameters against the eager step's), and the bf16-autocast meta-gradient's
#     relative error against float32;
#   "plan": the seconds each stage gets (printed too) and, with --iterations fit, the
#     iterations fitted to the training time;
#   "training": `metaloop train` of the config with the GPU settings below, stopped with
#     SIGINT (which checkpoints) at its time; its metrics.jsonl is copied to $OUT every 30 s;
#   "evaluation": `metaloop eval` of the checkpoint on the config's test tasks (600 for the
#     paper's, at its 3 test-time steps), with accuracy_mean and accuracy_ci95 (percent).
#
# What is written in $OUT (or $OUT/NAME with --name NAME), at most 5 files: summary.json,
# config.toml (the config as trained), metrics.jsonl, results.json (the evaluation's) and,
# for a complete run only (all its target iterations trained), record.json (metaloop eval
# --record's, for docs/results/, with its config, budget and a reproducible command of this
# script; otherwise summary.json's "record" says why there is none). The run and eval folders
# (checkpoints) stay in the work folder (--work), named in summary.json.
#
# GPU settings applied to the config: method.batching = "vmap" (tasks batched; the loop on the
# CPU), train.device_tasks = true (images on the GPU, tasks drawn there), train.log_every =
# 100 (metrics read every 100 iterations). Options:
#   --smoke              tiny run (20 iterations, 20 eval tasks), e.g. with --device cpu
#   --iterations N|fit   train N iterations (default: the config's, 60,000 for the paper's);
#                        fit: as many as the training time holds at the step time the checks
#                        measured (less 30 s for the start), at most the config's, so that
#                        the learning-rate schedule ends when the run does (with --cuda-graph
#                        on and no graph step time from the probe: at the eager step time,
#                        with a note in summary.json)
#   --budget S           wall seconds for the whole script (default 560): training gets what
#                        is left after the checks, less --eval-seconds and a 25 s margin; it
#                        must exceed --eval-seconds + 55 s (the margin, a training's start)
#   --train-seconds S    at most S s of training (default 470; at least 1)
#   --eval-seconds S     the time kept for the evaluation (default 110); it may use what
#                        training leaves of the budget
#   --precision bf16     bf16 autocast; --tf32: TF32 matmuls/convolutions (both opt-in)
#   --cuda-graph auto|on|off  train with the step recorded as one CUDA graph
#                        (train.cuda_graph); auto (default): where the check's probe recorded
#                        it and its replays matched the eager step
#   --device cpu|cuda    default: cuda when available
#   --config FILE        another config (default configs/omniglot_maml_5w1s_full.toml), e.g.
#                        configs/omniglot_challenge_all_gpu.toml with --iterations fit
#   --out DIR            default $OUT, else runs/gpu_paper; --name NAME: write in DIR/NAME
#                        (several calls in one command, e.g. --name pilot, --name challenge)
#   --work DIR           the run and eval folders (default ${TMPDIR:-/tmp}/gpu_paper-<pid>)
# An --out (or --out/--name) or --work that holds an earlier run's files is refused.
# The package runs from this checkout (src/ on PYTHONPATH); on a GPU it needs torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec python - "$@" <<'PY'
import time

START = time.perf_counter()                  # the budget counts torch's import too
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path.cwd()
START_SECONDS = 30.0      # a train process's start: imports, data, model
MARGIN = 20.0             # stopping the training (its last step and checkpoint), the copies
FINISH = 5.0              # what the budget keeps after the evaluation: the record, the summary
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
p.add_argument("--budget", type=float, default=560.0)
p.add_argument("--train-seconds", type=float, default=470.0)
p.add_argument("--eval-seconds", type=float, default=110.0)
p.add_argument("--precision", choices=("float32", "bf16"), default="float32")
p.add_argument("--tf32", action="store_true")
p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto")
p.add_argument("--device", choices=("cpu", "cuda"))
p.add_argument("--config", default="configs/omniglot_maml_5w1s_full.toml")
p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_paper")
p.add_argument("--name", default=None)
p.add_argument("--work", default=None)
args = p.parse_args()
device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
if device == "cuda" and not torch.cuda.is_available():
    p.error("--device cuda: torch sees no CUDA device here; --device cpu (with --smoke) "
            "tries the script on the CPU")
if args.tf32 and device != "cuda":        # TF32 exists on CUDA only: it would change nothing
    p.error(f"--tf32 allows TF32 matmuls on CUDA, but the device is {device}; leave it out")
for flag in ("budget", "train_seconds", "eval_seconds"):
    if not getattr(args, flag) > 0:
        p.error(f"--{flag.replace('_', '-')} must be a positive number of seconds, got "
                f"{getattr(args, flag)}")
if args.train_seconds < 1.0:
    p.error(f"--train-seconds {args.train_seconds:g} leaves no time to train (at least 1 s)")
if args.budget <= args.eval_seconds + MARGIN + FINISH + START_SECONDS:
    p.error(f"--budget {args.budget:g} leaves no time to train: it must exceed --eval-seconds "
            f"({args.eval_seconds:g}) + {MARGIN + FINISH:g} s margin + {START_SECONDS:g} s "
            f"for a training's start, and the checks' time (~40 s on a GPU) on top")
if args.name is not None and (not args.name or args.name in (".", "..")
                              or "/" in args.name or "\\" in args.name):
    p.error(f"--name must be a plain folder name (no '/'), got {args.name!r}")
dest = Path(args.out) / args.name if args.name else Path(args.out)
work = Path(args.work) if args.work else \
    Path(os.environ.get("TMPDIR") or "/tmp") / f"gpu_paper-{os.getpid()}"
OUTPUTS = ("summary.json", "record.json", "config.toml", "metrics.jsonl", "results.json")
stale = [str(dest / x) for x in (*OUTPUTS, "run", "eval") if (dest / x).exists()] + \
    [str(work / x) for x in ("run", "eval", "record.json") if (work / x).exists()]
if stale:                                    # a stale run or result would be read as this one's
    print(f"gpu_paper.sh: error: {', '.join(stale)} already exist(s); give an empty --out "
          f"(or another --name) and --work", file=sys.stderr)
    sys.exit(2)
from metaloop import config as _config  # noqa: E402
from metaloop.evaluate import records as _records  # noqa: E402
from metaloop.train.checkpoint import atomic_write_text  # noqa: E402

try:                                      # the config, its extends chain resolved
    cfg = _config.load(args.config)       # (before --out is made: nothing half-written)
except (ValueError, FileNotFoundError) as e:
    p.error(f"--config {args.config}: {e}")
dest.mkdir(parents=True, exist_ok=True)
work.mkdir(parents=True, exist_ok=True)
full_iterations = cfg["train"]["iterations"]    # what the protocol trains
cfg["method"]["batching"] = "vmap" if device == "cuda" else "loop"
cfg["train"].update(device_tasks=True, log_every=100 if device == "cuda" else 5)
if args.smoke:
    cfg["model"]["channels"] = 8
    cfg["train"].update(iterations=20, meta_batch=2, checkpoint_every=10)
    cfg["eval"]["tasks"] = 20
if isinstance(args.iterations, int):
    cfg["train"]["iterations"] = args.iterations

cfg_path = work / "config.toml"
threads = ["--threads", "1"] if device == "cpu" else []
# (TF32 exists on CUDA only: metaloop eval refuses --tf32 without --device cuda)
flags = ["--device", device] + (["--tf32"] if args.tf32 and device == "cuda" else [])
run_dir, eval_dir = work / "run", work / "eval"


class Stopped(BaseException):
    """SIGTERM (e.g. from `timeout`): the stage under way ends, the summary is written."""


def _stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


signal.signal(signal.SIGTERM, _stopped)


def copy_back(src: Path, name: str) -> None:
    """``src`` (a text file) to ``dest/name``, atomically: never half a file there."""
    if src.exists():
        write_back(name, src.read_text(encoding="utf-8"))


def write_back(name: str, text: str) -> None:
    atomic_write_text(dest / name, text)


def write_config() -> None:
    cfg_path.write_text(_config.to_toml(cfg))
    copy_back(cfg_path, "config.toml")


def save(stage: str) -> None:
    """``summary.json`` as far as ``stage`` got (atomically: a kill leaves the last one)."""
    summary["stage"] = stage
    summary["wall_seconds"] = time.perf_counter() - START
    write_back("summary.json", json.dumps(summary, indent=1) + "\n")


def _seconds(x: float) -> str:
    return f"{x:g}"


def reproducible_command() -> str:
    """This script's invocation with the options given and no machine-local paths."""
    config = Path(args.config)
    try:
        config = config.resolve().relative_to(ROOT)
    except ValueError:
        pass
    parts = ["METALOOP_DATA=runs/data", "bash", "benchmarks/gpu_paper.sh"]
    parts += ["--smoke"] if args.smoke else []
    parts += ["--config", config.as_posix()]
    parts += ["--iterations", str(args.iterations)] if args.iterations is not None else []
    parts += ["--budget", _seconds(args.budget), "--train-seconds",
              _seconds(args.train_seconds), "--eval-seconds", _seconds(args.eval_seconds)]
    parts += ["--precision", args.precision] if args.precision != "float32" else []
    parts += ["--tf32"] if args.tf32 else []
    parts += ["--cuda-graph", args.cuda_graph] if args.cuda_graph != "auto" else []
    parts += ["--device", args.device] if args.device else []
    return " ".join(parts)


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


def fit_rate(c: dict, use_graph: bool):
    """The seconds per iteration to fit ``--iterations fit`` to, and a note where it is not the
    step that will be trained: with the graph on (``--cuda-graph on``) but no graph step time
    from the probe (it failed), the eager device step's, which is slower, so the fitted
    iterations still end inside the training time."""
    if not use_graph:
        return c.get("s_per_it_device"), None
    graph = c.get("cuda_graph") or {}
    if graph.get("graph_s_per_it"):
        return graph["graph_s_per_it"], None
    why = graph.get("error") or graph.get("captured") or "no result"
    return c.get("s_per_it_device"), (
        f"--iterations fit: the CUDA graph probe gave no graph step time ({str(why)[:200]}); "
        f"fitted at the eager step time instead, so the run may end before its training time")


def plan() -> None:
    """The training time the budget leaves after the checks, the graph setting, and with
    --iterations fit the iterations that time holds."""
    left = args.budget - (time.perf_counter() - START)
    train_for = min(args.train_seconds, left - args.eval_seconds - MARGIN - FINISH)
    summary["plan"] = {"budget": args.budget, "checks_seconds": summary["checks_seconds"],
                       "train_seconds": train_for, "eval_seconds": args.eval_seconds,
                       "margin_seconds": MARGIN + FINISH}
    print(f"plan: budget {args.budget:.0f} s; checks took {summary['checks_seconds']:.0f} s; "
          f"training {train_for:.0f} s (at most --train-seconds {args.train_seconds:g}); "
          f"evaluation {args.eval_seconds:.0f} s; margin {MARGIN + FINISH:.0f} s", flush=True)
    # the option that sets the training time (--train-seconds >= 1 s is checked up front)
    limit = "--train-seconds" if train_for == args.train_seconds else "--budget"
    summary["plan"]["limited_by"] = limit
    if train_for < START_SECONDS:        # a train process takes about that to start
        print(f"gpu_paper.sh: warning: {train_for:.0f} s of training is less than a start "
              f"({START_SECONDS:.0f} s): it may stop before its first checkpoint; give a "
              f"larger {limit}", file=sys.stderr, flush=True)
    if train_for < 1.0:
        summary["error"] = (f"--budget {args.budget:g} leaves {train_for:.0f} s to train after "
                            f"the checks ({summary['checks_seconds']:.0f} s), --eval-seconds "
                            f"({args.eval_seconds:g}) and the {MARGIN + FINISH:g} s margin; "
                            f"give a larger --budget")
        return
    # the training step as one CUDA graph (train.cuda_graph): "auto" uses it where the probe
    # above recorded it and its replays gave the eager step's parameters (relative 1e-4)
    probe_ok = summary["checks"].get("cuda_graph", {})
    probe_ok = probe_ok.get("captured") is True and \
        probe_ok.get("max_relative_param_difference", 1.0) < 1e-4
    use_graph = device == "cuda" and (args.cuda_graph == "on"
                                      or (args.cuda_graph == "auto" and probe_ok))
    cfg["train"]["cuda_graph"] = use_graph
    summary["overrides"]["train.cuda_graph"] = use_graph
    if args.iterations == "fit":             # the schedule must end when the budget does
        c = summary["checks"]
        rate, note = fit_rate(c, use_graph)
        if note:
            summary["iterations_fit_note"] = note
            print(f"gpu_paper.sh: warning: {note}", file=sys.stderr, flush=True)
        if not rate:
            summary["error"] = (f"--iterations fit needs the checks' step time, which failed: "
                                f"{json.dumps(c)[:400]}")
            return
        fit = int(max(train_for - START_SECONDS, 0.0) / rate)
        cfg["train"]["iterations"] = max(1, min(cfg["train"]["iterations"], fit))
        cfg["train"]["checkpoint_every"] = min(cfg["train"]["checkpoint_every"],
                                               cfg["train"]["iterations"])
        summary["iterations_target"] = cfg["train"]["iterations"]
        summary["iterations_fit"] = {"s_per_it": rate, "fit": fit, "train_seconds": train_for,
                                     "start_seconds": START_SECONDS}
        print(f"fitted: {cfg['train']['iterations']} iterations at {rate:.4f} s each "
              f"(the config's: {full_iterations})", flush=True)
    write_config()


def train() -> None:
    cmd = [sys.executable, "-m", "metaloop", *threads, "train", "--config", str(cfg_path),
           "--out", str(run_dir), "--no-progress", "--precision", args.precision, *flags]
    summary["commands"] = [" ".join(cmd)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    deadline, copied = t + summary["plan"]["train_seconds"], t
    planned = False                          # stopped by this script at its time
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if now >= deadline:              # stop after the current iteration, checkpointed
                proc.send_signal(signal.SIGINT)
                planned = True
                break
            if now - copied >= 30:           # progress that survives a kill
                copy_back(run_dir / "metrics.jsonl", "metrics.jsonl")
                copied = now
            time.sleep(min(1.0, max(deadline - now, 0.01)))
        try:
            rc = proc.wait(timeout=MARGIN - 5)
        except subprocess.TimeoutExpired:    # its last checkpoint stands
            proc.kill()
            rc = proc.wait()
            summary["train_note"] = (f"killed: it did not stop within {MARGIN - 5:g} s of "
                                     f"SIGINT; its last checkpoint stands")
    except Stopped:                          # SIGTERM: let it checkpoint, then go on to report
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                summary["train_note"] = ("killed: it did not stop within 10 s of SIGINT; its "
                                         "last checkpoint stands")
        summary["train_seconds"] = time.perf_counter() - t
        collect_training(proc.wait(), True)
        raise
    summary["train_seconds"] = time.perf_counter() - t
    collect_training(rc, planned)


def collect_training(rc, planned: bool) -> None:
    """The training's numbers; ``summary["error"]`` where it did not finish as planned: no
    checkpoint, or an exit other than 0 or the planned stop's (SIGINT: 130, or the kill after
    it)."""
    summary["train_exit"] = rc
    copy_back(run_dir / "metrics.jsonl", "metrics.jsonl")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
             if x.strip()] if (run_dir / "metrics.jsonl").exists() else []
    latest = (run_dir / "LATEST").read_text().strip() if (run_dir / "LATEST").exists() else None
    its = int(latest.split("-")[1]) if latest else 0
    summary["iterations"] = its
    summary["complete"] = its == cfg["train"]["iterations"]
    if len(lines) >= 2:                      # steady rate, between the first and last lines
        dt = lines[-1]["time"] - lines[0]["time"]
        summary["iterations_per_second"] = (lines[-1]["iteration"] - lines[0]["iteration"]) / dt
        summary["projected_full_train_seconds"] = full_iterations / \
            summary["iterations_per_second"]             # the config's own iteration count
        summary["last_logged"] = lines[-1]
    stop_ok = planned and (rc == 130 or "train_note" in summary)
    if not its:
        summary["error"] = (f"the training wrote no checkpoint in "
                            f"{summary['train_seconds']:.1f} s (metaloop train exit {rc}); "
                            f"a training needs up to {START_SECONDS:g} s to start: give a "
                            f"larger {summary['plan']['limited_by']}")
    elif rc != 0 and not stop_ok:
        summary["error"] = (f"metaloop train exited with {rc}, not the planned stop, at "
                            f"iteration {its}")


def evaluate() -> None:
    # the paper's 3 test-time steps; a closed-form head (another --config) takes none, and
    # metaloop eval refuses --steps for it
    steps = [] if cfg["method"]["name"] in _config.HEAD_BASED else ["--steps", "3"]
    ecmd = [sys.executable, "-m", "metaloop", *threads, "eval", "--checkpoint", str(run_dir),
            *steps, "--out", str(eval_dir), "--record", str(work / "record.json"),
            "--no-progress", *flags]
    summary["commands"].append(" ".join(ecmd))
    t = time.perf_counter()
    limit = max(1.0, args.budget - (t - START) - FINISH)      # what training left of the budget
    summary["eval_limit_seconds"] = limit
    try:
        summary["eval_exit"] = subprocess.run(ecmd, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        summary["eval_exit"] = "timeout"
    finally:
        summary["eval_seconds"] = time.perf_counter() - t
        collect_eval(steps)


def collect_eval(steps) -> None:
    res = eval_dir / "results.json"
    summary["accuracy_mean"] = summary["accuracy_ci95"] = None
    rc = summary.get("eval_exit")
    if rc != 0 or not res.exists():
        summary["error"] = (
            f"the evaluation timed out after {summary['eval_limit_seconds']:.0f} s (what "
            f"training left of --budget)" if rc == "timeout" else
            "the evaluation was stopped" if rc is None else
            f"metaloop eval exited with {rc}" if rc != 0 else
            "metaloop eval wrote no results.json")
        summary["record"] = f"not written: {summary['error']}"
        return
    copy_back(res, "results.json")
    r = json.loads(res.read_text())
    acc = next(iter(r["methods"].values()))["accuracy"]
    summary["accuracy_mean"] = 100 * acc["mean"][-1]
    summary["accuracy_ci95"] = 100 * acc["ci95"][-1]
    summary["eval_tasks"] = r["config"]["eval"]["tasks"]
    summary["eval_steps"] = 3 if steps else 0
    rec_path = work / "record.json"
    if not summary.get("complete"):          # its command would not reproduce a cut-short run
        summary["record"] = (f"not written: the training reached {summary.get('iterations')} "
                             f"of its {cfg['train']['iterations']} iterations")
    elif not rec_path.exists():
        summary["record"] = "not written: metaloop eval --record wrote none"
    else:                                    # the record as this script's, not the eval's
        try:
            rec = json.loads(rec_path.read_text())
            config = Path(args.config)
            try:
                config = config.resolve().relative_to(ROOT)
            except ValueError:
                pass
            rec["config"] = config.as_posix()
            rec["command"] = reproducible_command()
            if device == "cuda" and "train_seconds" in summary:
                rec["budget"]["gpu_seconds"] = round(summary["train_seconds"], 1)
            _records.write_record(dest / "record.json", **_records.validate_record(rec))
            summary["record"] = "record.json"
        except (ValueError, KeyError, TypeError) as e:
            summary["record_error"] = f"{type(e).__name__}: {e}"
            summary["record"] = f"not written: {summary['record_error']}"


summary = {"config": args.config, "overrides": {"method.batching": cfg["method"]["batching"],
           "train.device_tasks": True, "train.log_every": cfg["train"]["log_every"]},
           "smoke": args.smoke, "precision": args.precision, "tf32": args.tf32,
           "iterations_target": cfg["train"]["iterations"],
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "torch": torch.__version__, "work": str(work), "budget": args.budget}
stage = "start"
try:
    write_config()
    t = time.perf_counter()
    try:
        summary["checks"] = checks()
    except Exception as e:                   # the run below is the point; report and go on
        summary["checks"] = {"error": f"{type(e).__name__}: {e}"}
    summary["checks_seconds"] = time.perf_counter() - t
    print("checks:", json.dumps(summary["checks"]), flush=True)
    stage = "checks"
    save(stage)
    plan()
    if "error" not in summary:
        stage = "plan"
        save(stage)
    for part in (train, evaluate):           # a stage is claimed only when it finished
        if "error" not in summary:
            part()
        if "error" in summary:               # the stage before stands; the rest is skipped
            save(stage)
            print(f"gpu_paper.sh: error: {summary['error']} (the last finished stage: {stage}; "
                  f"summary: {dest / 'summary.json'})", file=sys.stderr)
            sys.exit(1)
        stage = "training" if part is train else "evaluation"
        save(stage)
except Stopped as e:                         # a kill's warning: keep what is finished
    summary["stopped_by"] = str(e)
    if stage == "plan" and "train_exit" in summary and "error" not in summary:
        stage = "training"                   # stopped in training, checkpointed
    save(stage)
    print(f"gpu_paper.sh: stopped by {e} after the {stage} stage; summary: "
          f"{dest / 'summary.json'}", file=sys.stderr)
    sys.exit(143)
print(json.dumps({k: summary.get(k) for k in ("stage", "iterations", "train_seconds",
                  "eval_seconds", "wall_seconds", "accuracy_mean", "accuracy_ci95",
                  "device", "record")}))
print(f"summary: {dest / 'summary.json'}; the run and its checkpoints: {run_dir}")
PY
