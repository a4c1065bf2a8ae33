"""``metaloop eval --checkpoint DIR``: held-out evaluation with 95% confidence intervals.

The original Omniglot one-shot challenge (Lake et al. 2015): ``--within-alphabet --split
evaluation --ways 20 --shots 1`` draws every task's 20 characters from one evaluation
alphabet and reports the error rate over the trials (tasks x ways x queries) with its 95% CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metaloop.cli import _build, _config, _output
from metaloop.evaluate import evaluate, records
from metaloop.train.checkpoint import load_checkpoint


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out tasks",
                       description=__doc__)
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-* directory")
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the config's)")
    p.add_argument("--steps", help="comma list of adaptation steps (default: the config's)")
    p.add_argument("--shots", type=int, help="support examples (default: the config's)")
    p.add_argument("--ways", type=int, help="classes per held-out task (default: the "
                   "config's; another number only for r2d2, metaoptnet and protonet)")
    p.add_argument("--split", help="held-out split (default: the config's eval.split)")
    p.add_argument("--within-alphabet", action="store_true",
                   help="omniglot: draw each task's classes from one alphabet, as the original "
                        "one-shot challenge, and report the error rate (default: the config's "
                        "eval.within_alphabet)")
    p.add_argument("--out", help="write results.json and a plot here")
    p.add_argument("--record", metavar="PATH",
                   help="also write the result (last step) as a JSON record for the docs "
                        "tables, e.g. docs/results/NAME.json (see metaloop.evaluate.records)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="adapt and score on the CPU (default) or the first CUDA device")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls and convolutions on CUDA (faster, ~1e-3 precision)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def load_learner(path, device=None) -> tuple[object, dict]:
    """Rebuild the learner stored in a checkpoint (model weights loaded; ``device`` only
    chooses the batching, see ``_build.batching_on``)."""
    tensors, state = load_checkpoint(Path(path))
    cfg = _config.validate(state["config"])
    family = _build.build_family(cfg["family"])
    learner = _build.build_learner(cfg, family, device=device)
    with torch.no_grad():
        for n, p in learner.model.named_parameters():
            p.copy_(tensors[f"model.{n}"])
    return learner, cfg


def run(args: argparse.Namespace) -> int:
    learner, cfg = load_learner(args.checkpoint, device=args.device)
    ec = dict(cfg["eval"])
    if args.tasks is not None:
        ec["tasks"] = args.tasks
    if args.shots is not None:
        ec["shots"] = args.shots
    if args.ways is not None:
        ec["ways"] = args.ways
    if args.split:
        ec["split"] = args.split
    if getattr(args, "within_alphabet", False):
        ec["within_alphabet"] = True
    if args.steps:
        try:
            ec["steps"] = [int(s) for s in args.steps.split(",")]
        except ValueError as e:
            raise ValueError(f"--steps must be a comma list of ints, got {args.steps!r}") from e
    if ec["tasks"] <= 0:               # named by its flag, before the config's own check
        raise ValueError(f"--tasks must be positive, got {ec['tasks']}")
    cfg = _config.validate({**cfg, "eval": ec})
    _config.check_combinations(cfg)
    if getattr(args, "record", None):
        records.check_record_path(args.record)
    out = _output.prepare_out(args.out) if args.out else None
    heldout = _build.eval_family(cfg, None)
    device = None
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but torch sees no CUDA device")
        device = torch.device("cuda", 0)
        from metaloop.train.distributed import set_tf32
        set_tf32(args.tf32)
        learner.model.to(device)
    with tqdm(total=ec["tasks"], desc="held-out tasks", disable=args.no_progress,
              leave=False) as bar:
        r = evaluate(learner, heldout, tasks=ec["tasks"], steps=ec["steps"], seed=ec["seed"],
                     device=device, progress=bar.update)
    metric = "accuracy" if "accuracy" in r else "loss"
    name = cfg["method"]["name"]
    print(f"{cfg['family']['name']} ({ec['split']}): held-out query {metric}, mean ± 95% CI "
          f"over {ec['tasks']} tasks")
    print(_output.table({name: r}, metric))
    error = _error_rate(cfg, r) if ec["within_alphabet"] and metric == "accuracy" else None
    if error is not None:
        print(f"within-alphabet {error['ways']}-way {error['shots']}-shot error rate: "
              f"{100 * error['mean']:.2f}% ± {100 * error['ci95']:.2f}% (95% CI over "
              f"{ec['tasks']} tasks, {error['trials']} trials)")
        if cfg["family"]["split"] in ("train", "val", "test", "trainval") \
                and ec["split"] == "evaluation":
            print(f"note: family.split = {cfg['family']['split']!r} (Vinyals) holds characters "
                  f"of the evaluation alphabets; the original challenge trains on the "
                  f"background alphabets only", file=sys.stderr)
    if out is not None:
        extra = {"error_rate": error} if error is not None else {}
        _output.write_json(out / "results.json", {"config": cfg, "metric": metric, **extra,
                                                  "methods": {name: _output.strip_per_task(r)}})
        _output.plot_curves({name: r}, metric, out / f"{metric}_vs_steps.png", name)
    if getattr(args, "record", None):
        records.write_record(args.record, **records.eval_record(
            cfg, r, metric, checkpoint=args.checkpoint, command=records.command_line(args),
            device=args.device))
    return 0


def _error_rate(cfg: dict, r: dict) -> dict:
    """The error rate at the last evaluated step: ``1 - accuracy`` (the same 95% CI, over
    tasks), with the trial count ``tasks x ways x queries``."""
    f, ec = cfg["family"], cfg["eval"]
    ways, shots = ec["ways"] or f["ways"], ec["shots"] or f["shots"]
    queries = ec["queries"] or f["queries"]
    return {"mean": 1.0 - r["accuracy"]["mean"][-1], "ci95": r["accuracy"]["ci95"][-1],
            "trials": ec["tasks"] * ways * queries, "tasks": ec["tasks"], "ways": ways,
            "shots": shots, "queries": queries, "split": ec["split"]}
