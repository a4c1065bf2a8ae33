"""``metaloop eval --checkpoint DIR``: held-out evaluation with 95% confidence intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metaloop.cli import _build, _config, _output
from metaloop.evaluate import evaluate
from metaloop.train.checkpoint import load_checkpoint


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out tasks",
                       description=__doc__)
    p.add_argument("--checkpoint", required=True, help="run directory or ckpt-* directory")
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the config's)")
    p.add_argument("--steps", help="comma list of adaptation steps (default: the config's)")
    p.add_argument("--shots", type=int, help="support examples (default: the config's)")
    p.add_argument("--ways", type=int, help="classes per held-out task (default: the "
                   "config's; another number only for r2d2 and metaoptnet)")
    p.add_argument("--split", help="held-out split (default: the config's eval.split)")
    p.add_argument("--out", help="write results.json and a plot here")
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
    if args.steps:
        try:
            ec["steps"] = [int(s) for s in args.steps.split(",")]
        except ValueError as e:
            raise ValueError(f"--steps must be a comma list of ints, got {args.steps!r}") from e
    if ec["tasks"] <= 0:               # named by its flag, before the config's own check
        raise ValueError(f"--tasks must be positive, got {ec['tasks']}")
    cfg = _config.validate({**cfg, "eval": ec})
    _config.check_combinations(cfg)
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
    if out is not None:
        _output.write_json(out / "results.json", {"config": cfg, "metric": metric,
                                                  "methods": {name: _output.strip_per_task(r)}})
        _output.plot_curves({name: r}, metric, out / f"{metric}_vs_steps.png", name)
    return 0
