"""``metaloop train``: meta-train one method from a TOML config, checkpointed and resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from metaloop import build as _build
from metaloop import config as _config
from metaloop.cli._output import prepare_out
from metaloop.runs import load_run
from metaloop.train import distributed, train
from metaloop.train.checkpoint import latest_checkpoint
from metaloop.train.loop import NonFiniteLossError

DESCRIPTION = """\
Meta-train one method (MAML, first-order MAML, Reptile, ANIL, R2D2, MetaOptNet, ProtoNet, or
the pretrain / scratch baselines) on one task family, as a TOML config describes it (see
configs/ and 'metaloop compare --print-config'). The run directory gets checkpoints written
atomically every train.checkpoint_every iterations and metrics.jsonl; --resume continues
from the newest checkpoint exactly (same numbers as an uninterrupted run).

Under torchrun (torchrun --nproc_per_node N -m metaloop train ...) every process meta-learns
its shard of each meta-batch and the meta-gradients are averaged; rank 0 alone writes.

Exit status: 0 done; 2 bad input (named before any training); 1 the run stopped (non-finite
loss, another rank failed); 130 interrupted (Ctrl-C / SIGTERM) after writing a checkpoint."""


def register(sub) -> None:
    p = sub.add_parser("train", help="meta-train one method from a TOML config",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop train --config configs/folder_example.toml "
                              "--out runs/mine\n  metaloop train --resume runs/mine")
    p.add_argument("--config", help="TOML config (see configs/)")
    p.add_argument("--out", help="run directory (checkpoints, metrics.jsonl)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the run in DIR (or --out) from its newest checkpoint")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls and convolutions on CUDA (faster, ~1e-3 precision)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: the meta-gradient under bfloat16 autocast (opt-in, float32 "
                        "models; second-order MAML's meta-gradient is then ~30%% off float32's "
                        "at initialisation, measured on the CPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="train on the CPU (default) or CUDA; under torchrun, cuda means one "
                        "GPU per process (cuda:LOCAL_RANK) and the nccl backend, cpu gloo")
    p.add_argument("--dist-timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S,
                   metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others in any "
                        "collective (and at start-up) before it stops with an error naming the "
                        f"failure (default {distributed.DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _resolve(args) -> tuple[dict, Path, bool, bool]:
    """The validated config, the run directory (created, writable), whether to resume, and
    whether the directory was created here."""
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
        cfg = load_run(out).config
    else:
        raise ValueError("give --config FILE (or --resume DIR to continue a run)")
    _config.check_combinations(cfg)
    cfg = _build.resolve_split(cfg)          # folder / tensors: the class lists, stored
    if not resume and latest_checkpoint(out) is not None:
        raise ValueError(f"{out} already holds a run; use --resume to continue it, or another "
                         f"--out")
    created = not out.exists()
    prepare_out(out)
    return cfg, out, resume, created


def run(args: argparse.Namespace) -> int:
    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got "
                         f"{args.dist_timeout}")
    try:
        owner = distributed.init(args.device, args.dist_timeout)
        try:
            return _run(args)
        finally:
            if owner:
                distributed.destroy()
    except distributed.DistributedError as e:
        print(f"metaloop train: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    # Rank 0 reads the config and checks the run directory; every rank gets its verdict.
    cfg, out, resume, created = distributed.from_rank0(lambda: _resolve(args), "the checked config")
    rank, world = distributed.rank_world()
    try:
        family = _build.build_family_verbose(cfg["family"], show=rank == 0,
                                             progress=not args.no_progress)
    except ValueError:
        if rank == 0 and created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()                  # bad data: leave no empty run directory behind
        raise
    val = _build.eval_family(cfg, family) if cfg["train"]["val_every"] else None
    if val is not None and cfg["eval"]["split"] == "test" and cfg["family"]["name"] != "sinusoid":
        val = _build.build_family(cfg["family"], split="val")
    device = distributed.device_for(args.device)
    learner = _build.build_learner(cfg, family, device=device)
    tc = cfg["train"]
    distributed.set_tf32(args.tf32)
    learner.model.to(device=device, dtype=getattr(torch, tc["dtype"]))
    train_family = _build.training_family(cfg, family)
    if tc["device_tasks"]:              # the images on the training device, sampled there
        from metaloop.tasks.device import DeviceTasks
        train_family = DeviceTasks(train_family, device or "cpu", getattr(torch, tc["dtype"]))
    try:
        res = train(learner, train_family, iterations=tc["iterations"],
                    meta_batch=tc["meta_batch"],
                    lr=tc["lr"], lr_schedule=tc["lr_schedule"], optimizer=tc["optimizer"],
                    clip_grad_norm=tc["clip_grad_norm"], seed=tc["seed"], out_dir=out,
                    resume=resume, val_family=val,
                    val_every=tc["val_every"], val_tasks=tc["val_tasks"],
                    checkpoint_every=tc["checkpoint_every"], config=cfg,
                    progress=not args.no_progress, desc=cfg["method"]["name"],
                    prefetch={"on": True, "off": False}.get(tc["prefetch"], "auto"),
                    log_every=tc["log_every"] or None, precision=args.precision)
    except NonFiniteLossError as e:
        print(f"metaloop train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"metaloop train: interrupted: {e or 'no checkpoint written'}", file=sys.stderr)
        return 130
    if rank == 0:
        where = f" on {world} ranks" if world > 1 else ""
        print(f"trained {cfg['method']['name']} for {res['iteration']} iterations{where}; "
              f"last meta-batch {res['last']}; checkpoint in {out}")
    return 0
