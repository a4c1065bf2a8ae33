"""``metaloop train --config FILE``: one method, checkpointed and resumable (``--resume``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metaloop.cli import _build, _config, _output
from metaloop.train import train
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint


def register(sub) -> None:
    p = sub.add_parser("train", help="meta-train one method from a TOML config",
                       description=__doc__)
    p.add_argument("--config", help="TOML config (see configs/)")
    p.add_argument("--out", help="run directory (checkpoints, metrics.jsonl)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the run in DIR (or --out) from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _resolve(args) -> tuple[dict, Path, bool]:
    out = args.resume if isinstance(args.resume, str) else args.out
    if not out:
        raise ValueError("give the run directory with --out DIR (or --resume DIR)")
    out = Path(out)
    resume = bool(args.resume)
    if resume and latest_checkpoint(out) is None:
        raise ValueError(f"--resume: no checkpoint in {out} (no LATEST file)")
    if args.config:
        cfg = _config.load(args.config)
    elif resume:
        cfg = _config.validate(load_checkpoint(out)[1]["config"])
    else:
        raise ValueError("give --config FILE (or --resume DIR to continue a run)")
    if not resume and latest_checkpoint(out) is not None:
        raise ValueError(f"{out} already holds a run; use --resume to continue it, or another "
                         f"--out")
    return cfg, out, resume


def run(args: argparse.Namespace) -> int:
    cfg, out, resume = _resolve(args)
    family = _build.build_family(cfg["family"])
    val = _build.eval_family(cfg, family) if cfg["train"]["val_every"] else None
    if val is not None and cfg["eval"]["split"] == "test" and cfg["family"]["name"] != "sinusoid":
        val = _build.build_family(cfg["family"], split="val")
    learner = _build.build_learner(cfg, family)
    _output.prepare_out(out)
    tc = cfg["train"]
    res = train(learner, family, iterations=tc["iterations"], meta_batch=tc["meta_batch"],
                lr=tc["lr"], seed=tc["seed"], out_dir=out, resume=resume, val_family=val,
                val_every=tc["val_every"], val_tasks=tc["val_tasks"],
                checkpoint_every=tc["checkpoint_every"], config=cfg,
                progress=not args.no_progress, desc=cfg["method"]["name"])
    print(f"trained {cfg['method']['name']} for {res['iteration']} iterations; "
          f"last meta-batch {res['last']}; checkpoint in {out}")
    return 0
