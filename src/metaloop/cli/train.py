"""``metaloop train``: meta-train one method from a TOML config, checkpointed and resumable."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from metaloop import config as _config
from metaloop import runlock
from metaloop.cli import _checks, _signals
from metaloop.cli._args import path
from metaloop.recipes import training as recipe
from metaloop.train import distributed
from metaloop.train.checkpoint import holds_checkpoint, latest_checkpoint, unlinked_advice
from metaloop.train.loop import CUDA_LOG_EVERY, NonFiniteLossError

DESCRIPTION = """\
Meta-train one method (MAML, first-order MAML, Reptile, ANIL, R2D2, MetaOptNet, ProtoNet, or
the pretrain / scratch baselines) on one task family, as a TOML config describes it. For
your own image folder, start from the one 'metaloop train --example-config' prints; the
repository's configs/ holds the Omniglot and sinusoid ones. The run directory gets
checkpoints written atomically every train.checkpoint_every iterations and metrics.jsonl;
--resume continues from the newest checkpoint exactly (same numbers as an uninterrupted
run, given the same --threads: a convolution model's numbers depend on the thread count,
and a resume with another one warns).

Under torchrun (torchrun --nproc_per_node N -m metaloop train ...) every process meta-learns
its shard of each meta-batch and the meta-gradients are averaged; rank 0 alone writes, and
prints what every rank meets alike (an error only some ranks meet is printed by those ranks,
named 'rank R of N'). A run that stops before its first checkpoint removes the run directory
it created (one that stopped on a non-finite loss keeps its metrics.jsonl). One process at a
time writes a run directory: a second one on it (e.g. --resume started twice) stops at once
with exit status 2, naming the process that writes there.

A run on your own data whose folder, tensor file or table moved: --resume DIR --data-root
PATH reads it at PATH. The classes read there must have the examples the run read (their
sha256s, stored in its checkpoint), else the resume is refused, naming the classes that
differ; the run then goes on exactly as if uninterrupted. Its config keeps the stored
family.root and its later checkpoints record PATH as the path read: a later --resume without
--data-root reads family.root, and where the data is not there names --data-root PATH.

Exit status: 0 done (also when Ctrl-C / SIGTERM comes in the last iteration or during the
final checkpoint, which is then finished); 2 bad input (named before any training); 1 the run
stopped (non-finite loss, another rank failed); 130 interrupted (Ctrl-C / SIGTERM): after
writing a checkpoint of the iteration in flight, or, before training began, with the run's
checkpoints as they were."""


def register(sub) -> None:
    p = sub.add_parser("train", help="meta-train one method from a TOML config",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop train --example-config > my_folder.toml"
                              "   # then set its family.root to your images\n"
                              "  metaloop train --config my_folder.toml --out runs/mine\n"
                              "  metaloop train --resume runs/mine\n\n"
                              "machine-readable output: OUT/metrics.jsonl (one JSON object "
                              "per logged iteration),\nand each checkpoint's state.json; the "
                              "result line prints the metrics as JSON")
    p.add_argument("--config", type=path,
                   help="TOML config (--example-config prints one to start from); where no "
                        "such file is, configs/NAME.toml, NAME.toml or NAME reads the shipped "
                        "copy of the repository's configs/NAME.toml")
    p.add_argument("--out", type=path, help="run directory (checkpoints, metrics.jsonl)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="replace the config's train.seed (model init and task stream), e.g. "
                        "for an ensemble's members (metaloop eval --checkpoint RUN RUN ...); "
                        "with --resume, only the run's own seed")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR", type=path,
                   help="continue the run in DIR (or --out) from its newest checkpoint")
    p.add_argument("--resume-if-any", action="store_true",
                   help="with --config and --out: resume the run in --out where it holds a "
                        "checkpoint, else start it; for torchrun --max-restarts, whose restart "
                        "reruns the same command (without it, a new run into a folder that "
                        "holds one is refused, in case --out is a typo)")
    p.add_argument("--data-root", type=path, metavar="PATH",
                   help="with --resume: the run's own data, moved: read its image folder, "
                        "tensor file or table at PATH instead of its stored family.root "
                        "(checked against the run's stored fingerprint of its data; not for "
                        "the built-in families)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls and convolutions on CUDA (faster, ~1e-3 precision)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: the meta-gradient under bfloat16 autocast (opt-in, float32 "
                        "models; second-order MAML's meta-gradient is then ~30%% off float32's "
                        "at initialisation, measured on the CPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="train on the CPU (default) or CUDA; under torchrun, cuda means one "
                        "GPU per process (cuda:LOCAL_RANK) and the nccl backend, cpu gloo")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others in any "
                        "collective (and at start-up) before it stops with an error naming the "
                        f"failure (default {distributed.DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--print-config", action="store_true",
                   help="print the --config file as it will run (its extends chain applied, "
                        "--seed applied, every default filled) as TOML, and exit; a config "
                        "train would refuse before reading the data is refused here too, and "
                        "so are the flags only a run reads (--out, --resume, ...)")
    p.add_argument("--example-config", action="store_true",
                   help="print the shipped example config for your own image folder (TOML, "
                        "commented: R2D2 on Conv4, a held-out test split of classes) and exit; "
                        "set its family.root and pass it back with --config")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.example_config:
            _refuse_run_flags(args, "--example-config", "prints the shipped example config",
                              also=(("--config", "config", None), ("--seed", "seed", None),
                                    ("--print-config", "print_config", False)))
            if distributed.local_leader():         # once per node under torchrun
                print(example_config_text(), end="")
            return 0
        if args.print_config:
            if not args.config:
                raise ValueError("--print-config prints the --config file: give --config FILE")
            _refuse_run_flags(args, "--print-config", "prints the config")
            _checks.seed_flag(args.seed)
            cfg = _config.load(args.config)
            if args.seed is not None:              # as the run would take it
                cfg["train"]["seed"] = args.seed
            _config.check_combinations(cfg)        # what train refuses before reading data
            _config.check_training(cfg, _config.written_keys(args.config))
            text = _config.to_toml(cfg)
            if distributed.local_leader():         # once per node under torchrun
                print(text, end="")
            return 0
        _checks.seed_flag(args.seed)
        _check_flags(args)
        owner = distributed.init(args.device, args.dist_timeout)
    except (ValueError, FileNotFoundError) as e:
        # decided by the command line, the same in every process of a node: said once there
        distributed.show_as(e, "plain" if distributed.local_leader() else "quiet")
        raise
    except distributed.DistributedError as e:
        print(f"metaloop train: error: {e}", file=sys.stderr)
        return 1
    held: list[str | None] = []  # the run directory's lock, rank 0's: released when the run ends
    try:
        return _run(args, held)
    except distributed.StartupError as e:         # the group still works: leave as usual
        _error(e)
        return 1
    except distributed.DistributedError as e:
        # torchrun stops the other workers (SIGTERM) as one exits: the one signal that
        # arrives while this rank says why it stopped leaves its status 1, not 130
        _signals.cleaning_up()
        _error(e)
        if not owner:
            return 1
        # The group is broken (a peer died or timed out): tearing it down, even in the
        # interpreter's own shutdown, can abort the process from gloo's or nccl's threads.
        # Checkpoints and metrics are already on disk, so leave now with the documented status.
        # (its lock file first: os._exit skips the finally below)
        runlock.release(held[0] if held else None, discard=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    finally:
        # (the folders the lock made, left empty by a failed start: removed)
        runlock.release(held[0] if held else None, discard=True)
        if owner:
            distributed.destroy()


# (flag, the value it has when not given): what only a run reads, not --print-config
_RUN_FLAGS = (("--out", "out", None), ("--resume", "resume", False),
              ("--resume-if-any", "resume_if_any", False),
              ("--data-root", "data_root", None), ("--tf32", "tf32", False),
              ("--precision", "precision", "float32"), ("--device", "device", "cpu"),
              ("--dist-timeout", "dist_timeout", None), ("--no-progress", "no_progress", False))


EXAMPLE_CONFIG = "folder_example.toml"
"""The example config for a user's own image folder, shipped in ``metaloop/configs/``."""


def example_config_text() -> str:
    """The shipped example config for a user's own image folder, as TOML text with its
    comments (``metaloop train --example-config > my_folder.toml``); its ``family.root`` is a
    placeholder to set."""
    return (resources.files("metaloop") / "configs" / EXAMPLE_CONFIG).read_text(
        encoding="utf-8")


def _refuse_run_flags(args: argparse.Namespace, option: str, does: str,
                      also: tuple = ()) -> None:
    """ValueError naming the flags that set up or report a run (and the flags ``also``
    names), given with ``option`` (``--print-config``, ``--example-config``), which ``does``
    its printing and exits, so they would change nothing."""
    given = [flag for flag, key, unset in (*also, *_RUN_FLAGS) if getattr(args, key) != unset]
    if given:
        raise ValueError(f"{option} {does} and exits without training, so "
                         f"{', '.join(given)} would change nothing: leave "
                         f"{'it' if len(given) == 1 else 'them'} out")


def _check_flags(args: argparse.Namespace) -> None:
    """ValueError naming a flag that would change nothing (``--tf32`` off CUDA,
    ``--dist-timeout`` without torchrun, ``--data-root`` without ``--resume``) or has an
    impossible value; fills in the default ``--dist-timeout``."""
    _checks.refuse_tf32_off_cuda(args.tf32, args.device)
    if getattr(args, "resume_if_any", False) and (args.resume or not args.config
                                                  or not args.out):
        raise ValueError("--resume-if-any starts the run of --config in --out, or resumes it "
                         "where --out holds its checkpoint: give --config FILE and --out DIR "
                         "(and no --resume, which resumes only)")
    if args.data_root is not None and not args.resume:
        raise ValueError(f"--data-root {args.data_root} reads a resumed run's own data at "
                         f"another path, but no --resume is given: a new run reads its "
                         f"config's family.root (set that instead)")
    if args.dist_timeout is None:
        args.dist_timeout = distributed.DEFAULT_TIMEOUT_S
    elif os.environ.get("WORLD_SIZE", "").strip() in ("", "0", "1"):
        raise ValueError(f"--dist-timeout {args.dist_timeout:g} sets how long a rank of a "
                         f"torchrun waits for the others, but this is one process (no "
                         f"WORLD_SIZE above 1), so it would change nothing: drop it, or start "
                         f"the run with torchrun")
    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got "
                         f"{args.dist_timeout}")


def _error(e: BaseException) -> None:
    text = distributed.message(e)
    if text is not None:
        print(f"metaloop train: error: {text}", file=sys.stderr)


def _check_unlinked(out, resume: bool) -> None:
    """Refuse a run folder whose ``ckpt-*`` folders are there but not its ``LATEST``
    (``checkpoint.unlinked_advice``): a new run would replace them and empty the metrics
    log, a resume would find no checkpoint; both name the newest intact one and the line
    that names it again."""
    if out is None:
        return
    advice = unlinked_advice(out, f"metaloop train --resume {out}")
    if advice is None:
        return
    if resume:
        raise ValueError(f"--resume: no checkpoint in {out} through LATEST: {advice}")
    raise ValueError(f"refusing a new run in {out}: {advice}; or give another --out "
                     f"(nothing was written)")


def _run(args: argparse.Namespace, held: list) -> int:
    # Rank 0 reads the config and checks the run directory; every rank gets its verdict.
    out = args.resume if isinstance(args.resume, str) else args.out
    if args.out and os.path.realpath(args.out) != os.path.realpath(out):   # (a link: same)
        raise distributed.show_as(   # the command line's own error: once per node
            ValueError(f"--resume {args.resume} and --out {args.out} name two run "
                       f"directories; a run resumes in its own: give --resume DIR alone"),
            "plain" if distributed.local_leader() else "quiet")
    rank, world = distributed.rank_world()
    # (rank 0 alone creates the run directory; a failure before its first checkpoint, here
    # or at any rank, removes it again: a folder that existed before is never removed)
    existed = rank == 0 and out is not None and os.path.lexists(out)

    def prepare():          # rank 0: the run directory's lock first (metaloop.runlock), so
        held.append(runlock.acquire(out))        # a second process on it reads nothing
        # --resume-if-any: resumed where rank 0's --out holds a checkpoint (a damaged
        # LATEST counts, and is named), decided here for every rank
        again = bool(args.resume) or (getattr(args, "resume_if_any", False)
                                      and holds_checkpoint(out))
        _check_unlinked(out, again)
        return (*recipe.prepare(out, config_path=args.config, resume=again, seed=args.seed,
                                data_root=args.data_root, device=args.device), again)

    resume = bool(args.resume)
    try:        # SIGTERM raises KeyboardInterrupt here too (main's catch_signals)
        cfg, out, created, resume = distributed.from_rank0(prepare, "the checked config")
        created = created or (rank == 0 and not existed)     # (made by the lock)
        distributed.begin_startup(resume=resume)
        res: Any = recipe.train_config(cfg, out, resume=resume, device=args.device,
                                       precision=args.precision, tf32=args.tf32,
                                       progress=not args.no_progress, created=created,
                                       data_root=args.data_root)
        distributed.agree_startup()         # (a run with no collective: every rank)
    except BaseException as e:
        if distributed.startup_open():
            distributed.agree_startup(e)
        elif rank and isinstance(e, (NonFiniteLossError, KeyboardInterrupt)):
            distributed.show_as(e, "quiet")       # every rank stopped alike: rank 0 says so
        mine = rank == 0 and out is not None and not existed and held   # (not another's)
        if isinstance(e, NonFiniteLossError):    # kept: its metrics.jsonl shows the way there
            if mine and not _logged(out):
                _discard(out)                # (at the first iteration: nothing to show)
            if holds_checkpoint(out):       # what a --resume would do, and the way on
                e.args = (f"{e}; --resume would repeat the same steps to the same stop: "
                          f"change the config (a lower train.lr, a train.clip_grad_norm) in a "
                          f"new run with another --out, afresh or from this checkpoint's "
                          f"weights (train.init = {str(out)!r})",)
            _error(e)
            return 1
        if mine:
            _discard(out)
        if isinstance(e, distributed.DistributedError) and rank == 0 \
                and not holds_checkpoint(out):  # (rank 0's disk: the run's own)
            distributed.no_checkpoint_yet(e)     # no "--resume": there is nothing to resume
        if isinstance(e, KeyboardInterrupt):
            _signals.cleaning_up()                 # (the lock's release after this too)
            res = getattr(e, "result", None)       # in the last iteration: its final
            if res is None:                        # checkpoint is written, the run is complete
                text = str(e)
                if "checkpoint" not in text:           # stopped outside the training loop
                    text = f"{text or 'stopped'}; " + (
                        f"the checkpoint in {out} is kept" if holds_checkpoint(out)
                        else "no checkpoint written")
                line = distributed.message(e)      # "rank r of W: ...": this rank alone
                if line is not None:
                    name = line[:len(line) - len(str(e))]
                    print(f"metaloop train: interrupted: {name}{text}", file=sys.stderr)
                return 130
        else:
            raise
    if rank == 0:
        where = f" on {world} ranks" if world > 1 else ""
        k = cfg["train"]["log_every"] or (            # metrics read every k iterations
            CUDA_LOG_EVERY if str(args.device or "cpu").startswith("cuda") else 1)
        what = "last meta-batch" if k == 1 else f"mean over the last log window (log_every = {k})"
        last = f"{what} {json.dumps(res['last'], sort_keys=True)}; " \
            if res["last"] else ""                                  # none: resumed done
        print(f"trained {cfg['method']['name']} for {res['iteration']} iterations{where}; "
              f"{last}checkpoint in {out}")
    return 0


def _logged(out) -> bool:
    """Whether the run directory ``out`` holds a metrics line."""
    try:
        return (Path(out) / "metrics.jsonl").stat().st_size > 0
    except OSError:
        return False


def _discard(out) -> bool:
    """Remove the run directory ``out`` (made by this run) if it holds no checkpoint: a run
    that failed before its first one leaves nothing behind. Returns whether it did."""
    out = Path(out)
    try:
        if not out.is_dir() or out.is_symlink() or latest_checkpoint(out) is not None \
                or any(p.name.startswith("ckpt-") for p in out.iterdir()) \
                or Path.cwd().resolve().is_relative_to(out.resolve()):   # where we stand
            return False
    except (ValueError, OSError):                 # a damaged LATEST: keep what is there
        return False
    shutil.rmtree(out, ignore_errors=True)
    return not out.exists()


