"""``metaloop compare``: the main job, the meta-learners against both baselines."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metaloop import config as _config
from metaloop import runlock
from metaloop._progress import tqdm_defaults
from metaloop.cli import _checks
from metaloop.cli._args import path
from metaloop.recipes import compare as recipe
from metaloop.recipes import report
from metaloop.recipes.report import output_dir

DESCRIPTION = """\
Meta-train every method that applies (MAML, first-order MAML, Reptile and ANIL; on
classification, omniglot or your own data, R2D2, MetaOptNet and ProtoNet too; --methods
chooses among them) and the two baselines they are measured against
(scratch: the random initialisation the methods start from, fine-tuned on each task;
pretrain: one model trained on all training tasks at once, then fine-tuned with the same SGD
steps), all with the same training seed; then evaluate them on the same held-out tasks
(eval.seed) after each number of adaptation steps in the config's eval.steps
(sinusoid: 0 to 10; omniglot: 0, 1 and 3, or 0, 1 and 5 at 20 ways; the solved heads, R2D2,
MetaOptNet and ProtoNet, take no steps and score the same at each). Prints the table (mean
and 95% CI) and writes results.json, timing.json and the plots (results.json last: where it
is, the plots beside it are complete). With no arguments: sinusoid regression, about 2.5
CPU-minutes at one thread on the recorded machine (docs/results.md).

The settings are the family's shipped config: --print-config shows it; copy it, edit it and
pass it back with --config FILE (a file over your own data runs the comparison on it).

One process at a time writes --out: a second one on it (e.g. --resume started twice) stops
with exit status 2, naming the process that writes there, before it reads anything; an --out
that holds another command's run (metaloop train, eval, adapt...) is refused by name before
anything is written. --resume-if-any resumes where --out holds a method's checkpoint, else
starts the comparison: one fixed command for a job scheduler to rerun after a kill."""


def register(sub) -> None:
    p = sub.add_parser("compare", help="meta-train the methods and baselines; compare them",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop --threads 1 compare\n  metaloop compare "
                              "omniglot --ways 5 --shots 1\n  metaloop compare omniglot "
                              "--print-config > mine.toml   # set its [family] to your "
                              "data (docs/data.md)\n  metaloop compare --config mine.toml "
                              "--out runs/compare_mine")
    p.add_argument("family", nargs="?", default=None,
                   help=f"{', '.join(recipe.FAMILIES)} (default: the --config file's "
                        f"family.name, else sinusoid)")
    p.add_argument("--methods", help=f"comma list from {','.join(recipe.ALL)}, each named "
                   f"once (default: the config's compare.methods; "
                   f"{','.join(recipe.CLASSIFICATION_ONLY)} need classification)")
    p.add_argument("--iterations", type=int, help="meta-training iterations per method")
    p.add_argument("--meta-batch", type=int, help="tasks per meta-batch")
    p.add_argument("--ways", type=int, help="classes per task (classification families)")
    p.add_argument("--shots", type=int, help="support examples per class (or per task)")
    p.add_argument("--tasks", type=int, help="held-out evaluation tasks")
    p.add_argument("--seed", type=int, help="training seed (default: the config's, 0)")
    p.add_argument("--config", type=path, help="TOML file: a copy of a shipped config, or only "
                   "the keys it changes")
    p.add_argument("--print-config", action="store_true",
                   help="print the family's shipped config (TOML, commented) and exit (your "
                        "own data's family: the omniglot one, which it runs with)")
    p.add_argument("--out", type=path, help="output directory (default: runs/compare)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted comparison in --out: each method's run from "
                        "its newest checkpoint (the same command and config), exactly; "
                        "--methods that leave out a method whose run is there, and a run "
                        "whose LATEST is gone, are refused by name")
    p.add_argument("--resume-if-any", action="store_true",
                   help="resume the comparison in --out where it holds a method's checkpoint "
                        "(as --resume), else start it (as without): one command for a job "
                        "scheduler to rerun after a kill; what --resume and a new comparison "
                        "refuse is refused alike (without it, a new comparison into a folder "
                        "that holds runs is refused, in case --out is a typo)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


# (flag's dest, config section, key): the config keys the flags set
_FLAG_KEYS = (("iterations", "train", "iterations"), ("meta_batch", "train", "meta_batch"),
              ("seed", "train", "seed"), ("ways", "family", "ways"),
              ("shots", "family", "shots"), ("shots", "eval", "shots"),
              ("tasks", "eval", "tasks"))


def _overrides(args) -> dict:
    """The config keys the flags set."""
    over: dict[str, dict[str, Any]] = {"train": {}, "family": {}, "eval": {}}
    for flag, section, key in _FLAG_KEYS:
        if getattr(args, flag) is not None:
            over[section][key] = getattr(args, flag)
    return over


def _flags(args) -> dict[str, str]:
    """Config key -> the flag given that set it (``"eval.tasks"`` -> ``"--tasks"``): named
    beside the key where a resumed run's config differs."""
    return {f"{section}.{key}": f"--{flag.replace('_', '-')}"
            for flag, section, key in _FLAG_KEYS if getattr(args, flag) is not None}


def _config_for(args) -> dict:
    return recipe.load_config(args.family, args.config, _overrides(args))


def _check_flags(args) -> None:
    """ValueError naming a flag with an impossible value, before the config is read (a
    config file's own value is named by its key)."""
    for key in ("iterations", "meta_batch", "ways", "shots", "tasks"):
        value = getattr(args, key)
        if value is not None and value <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {value}")
    if args.ways == 1:
        raise ValueError("--ways must be >= 2: a 1-way task is always answered right, got 1")
    _checks.seed_flag(args.seed)


RUN_FLAGS = ("methods", "iterations", "meta_batch", "ways", "shots", "tasks", "seed", "out",
             "resume", "resume_if_any", "no_progress")
"""The flags that set up or report a comparison, which --print-config does not run."""


def run(args: argparse.Namespace) -> int:
    given = [f"--{k.replace('_', '-')}" for k in RUN_FLAGS if getattr(args, k) not in (None, False)]
    if args.print_config and given:
        raise ValueError(f"--print-config prints the family's shipped config and exits without "
                         f"comparing, so {', '.join(given)} would change nothing: leave them "
                         f"out (or set them in the printed file and pass it to --config)")
    if args.print_config:                      # the family the comparison would run
        family = recipe.load_config(args.family, args.config)["family"]["name"]
        shipped = "omniglot" if family in _config.USER_FAMILIES else family
        print(recipe.config_text(shipped), end="")
        return 0
    # a process still writing --out is named before anything is read
    with runlock.hold(args.out, create=False):
        return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    if args.resume_if_any and args.resume:
        raise ValueError("--resume-if-any starts the comparison in --out, or resumes it where "
                         "--out holds its runs: give it without --resume, which resumes only")
    _check_flags(args)
    cfg = _config_for(args)
    family = cfg["family"]["name"]
    if args.ways is not None and family in recipe.REGRESSION_FAMILIES:
        raise ValueError(f"--ways sets the classes per task of a classification family; "
                         f"{family} is regression (it has no classes): drop --ways")
    methods = recipe.methods_for(cfg, args.methods, given_as="--methods")
    trained = [m for m in methods if m not in recipe.NOT_META_TRAINED]
    if (args.seed is not None and args.seed == cfg["eval"]["seed"] and trained
            and family in recipe.REGRESSION_FAMILIES):
        raise ValueError(f"--seed {args.seed} is the held-out tasks' seed (eval.seed): "
                         f"{family}'s held-out tasks differ from its training tasks only by "
                         f"their seed, so every method would be trained on the tasks it is "
                         f"scored on; give another --seed")
    fixed = [f"--{k.replace('_', '-')}" for k in ("iterations", "meta_batch")
             if getattr(args, k) is not None]
    if fixed and not trained:
        raise ValueError(f"{', '.join(fixed)}: {', '.join(methods)} is not meta-trained (a "
                         f"fresh model adapted on each task), so {' and '.join(fixed)} would "
                         f"change nothing; add a method that meta-trains (--methods) or drop "
                         f"{' and '.join(fixed)}")
    for key in ("iterations", "meta_batch"):        # a flag's value is checked above
        if cfg["train"][key] <= 0:
            raise ValueError(f"{_origin(args.config, 'train', key)}train.{key} must be a "
                             f"positive int, got {cfg['train'][key]}")
    # impossible per-method configs: before any output
    mcfgs = [recipe.method_config(cfg, name) for name in methods]
    if args.config:                            # keys of the user's file no method reads
        recipe.warn_unread(mcfgs, args.config)
    recipe.check_out_outside_data(cfg["family"], args.out or "runs/compare")  # no class
    # bad data (found by recipe.run): no folder left; another command's run: refused
    with output_dir(args.out or "runs/compare", command="compare") as out:
        bar = tqdm(total=len(methods), desc="methods", disable=args.no_progress,
                   **tqdm_defaults())

        def started(name: str) -> None:
            bar.n = methods.index(name)
            bar.set_postfix_str(name)

        # --resume-if-any: resumed where --out holds a run (decided under its lock)
        resume = args.resume or (args.resume_if_any and _holds_runs(out))
        try:
            res = recipe.run(cfg, methods, out_dir=out, progress=not args.no_progress,
                             on_method=started, resume=resume, flags=_flags(args))
        except KeyboardInterrupt:
            bar.close()
            if any((out / "runs").glob("*/LATEST")):
                print(f"metaloop compare: the runs so far are checkpointed in {out / 'runs'}; "
                      f"the same command{'' if args.resume_if_any else ' with --resume'} "
                      f"continues them", file=sys.stderr)
            else:
                print("metaloop compare: stopped before any run was checkpointed; start it "
                      "again with the same command"
                      f"{'' if args.resume_if_any else ' (without --resume)'}",
                      file=sys.stderr)
            raise
        bar.n = len(methods)
        bar.refresh()
        bar.close()
        _report(res, out)
    return 0


def _holds_runs(out: Path) -> bool:
    """Whether the comparison's folder ``out`` holds a method's run to resume: a folder in
    ``out/runs`` with a ``LATEST`` or a ``ckpt-*`` folder (one that lost its ``LATEST`` is
    named by the resume). A folder left by a kill before the first checkpoint (an empty
    ``runs``, a run folder holding only its lock file) holds none: it starts afresh."""
    try:
        return any(d.is_dir() and (os.path.lexists(d / "LATEST") or any(d.glob("ckpt-*")))
                   for d in (out / "runs").iterdir())
    except OSError:                            # no runs yet (or unreadable: the run names it)
        return False


def _origin(path, section: str, key: str) -> str:
    """The start of a message about ``section.key``: ``config file base.toml (which
    mine.toml extends): `` for the file of ``path``'s extends chain that sets it, as
    ``metaloop.config.load`` names it; ``config `` when no file sets it."""
    src = _config.written_keys(path).get((section, key)) if path else None
    if src is None:
        return "config "
    return f"config file {src}: " if src == Path(path) else \
        f"config file {src} (which {path} extends): "


def _report(res: dict, out) -> None:
    metric, fam, cfg = res["metric"], res["family"], res["config"]
    tasks = cfg["eval"]["tasks"]
    print(f"\n{fam}: held-out query {metric} (mean ± 95% CI over {tasks} "
          f"task{'s' if tasks != 1 else ''})")
    # each task's queries bound an accuracy's interval, as metaloop eval's (same tasks, same CI)
    print(report.table(res["methods"], metric, trials=recipe.queries_per_task(cfg)
                       if metric == "accuracy" else None))
    other = sorted({e for e in res["evaluation"].values() if e != "transductive"})
    if other:
        print("queries scored " + "; ".join(
            f"{e}: {', '.join(k for k, v in res['evaluation'].items() if v == e)}"
            for e in other) + "; the others transductively (batch statistics of the queries)")
    # an earlier results.json goes first and the new one comes last: a plot that cannot be
    # written (or a kill) leaves no results.json beside missing or older plots
    (out / "results.json").unlink(missing_ok=True)
    report.write_json(out / "timing.json", {"methods": res["timing"], "wall_s": res["wall_s"]})
    title = f"{fam}: {'MSE' if metric == 'loss' else metric} after adaptation"
    report.plot_curves(res["methods"], metric, out / f"{metric}_vs_steps.png", title)
    if fam == "sinusoid":
        report.plot_fits(res["learners"], res["heldout"], cfg["eval"]["seed"], out / "fits.png")
    report.write_json(out / "results.json", recipe.record(res))
    # what was written, and the time taken: status, not results (stderr, as the progress)
    print(f"wrote {out / 'results.json'} and plots in {out}; {res['wall_s']:.0f} s",
          file=sys.stderr)
