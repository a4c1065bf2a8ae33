"""``metaloop eval``: held-out evaluation of a saved run with 95% confidence intervals."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metaloop import runlock, runs_folder
from metaloop._progress import tqdm_defaults
from metaloop.cli import _checks
from metaloop.cli._args import Switch, int_list, path
from metaloop.evaluate import records
from metaloop.recipes import report
from metaloop.recipes.compare import REGRESSION_FAMILIES
from metaloop.recipes.evaluation import (
    check_distinct,
    eval_config,
    evaluate_lake_runs,
    evaluate_run,
    in_progress,
    in_progress_note,
    load_ensemble,
    loaded_checkpoint,
    members,
    run_label,
    unfinished,
)
from metaloop.recipes.report import output_dir

# What ``eval --out`` writes (and replaces, where the folder holds an earlier eval's result)
_EVAL_FILES = ("results.json", "loss_vs_steps.png", "accuracy_vs_steps.png")

DESCRIPTION = """\
Evaluate a trained run on held-out tasks: the classes (or functions) it never saw, the same
tasks for every run with the same eval seed. Prints the query accuracy (or loss) after each
number of adaptation steps, as mean and 95% confidence interval over the tasks.

The original Omniglot one-shot challenge (Lake et al. 2015): --within-alphabet --split
evaluation --ways 20 --shots 1 draws every task's 20 characters from one evaluation alphabet
and reports the error rate over the trials (tasks x ways x queries) with its 95% CI (and for
a run whose config does so, --no-within-alphabet draws tasks of random classes instead).
--lake-runs DIR scores the challenge's official runs instead (Lake's all_runs folder: 20 runs
of 20 trials), with the same test-time settings, and says whether they are Lake's, unaltered;
--record then writes a challenge record whose mean and CI are over the runs.

An ensemble: --checkpoint RUN RUN ... adapts every run to each task, each with its own
method settings, and averages their class probabilities (the mean output for regression);
--record sums the members' training budgets (checkpoints of one run count its training
once; a run given twice is refused). The [eval] settings are the members' common ones: a
flag sets its key for every member (a switch either way, as --within-alphabet and
--no-within-alphabet do), and members whose configs differ in a key no flag sets are
refused, naming the key and the runs (eval.steps is compared between the members that take
steps; ways, shots and queries as the tasks they draw). The table and the record name it
by its members' methods ("ensemble of 3 runs (maml, r2d2, protonet)"; one method: "protonet,
ensemble of 2 runs"), and results.json and the record list its members.

A run whose head is solved (protonet, r2d2, metaoptnet) is scored after step 0 alone. A run
trained on the split it is evaluated on is warned about: its score is on training classes.

Data that moved (a run on your own image folder, tensor file or table, evaluated on another
machine or after a rename): --data-root PATH reads the run's data at PATH instead of its
stored family.root. The classes read there must have the examples the run read (their
sha256s, stored in its checkpoint): other data is refused, naming the classes that differ.
results.json and the record name the path read (data_root) and the stored one it replaced.

A run still training (metaloop train into the folder meanwhile) is scored at its newest
complete checkpoint, noted on stderr; results.json records which checkpoint of each run was
scored ("loaded": its folder name, iteration, identity and whether the run was in
progress)."""


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run on held-out tasks",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  metaloop eval --checkpoint runs/mine --out "
                              "runs/mine/eval\n  metaloop eval --checkpoint runs/a runs/b runs/c   "
                              "(an ensemble)\n  metaloop eval --checkpoint runs/challenge "
                              "--within-alphabet --split evaluation --ways 20 --shots 1\n\n"
                              "machine-readable output: OUT/results.json (--out), and the "
                              "--record JSON file")
    p.add_argument("--checkpoint", type=path, required=True, nargs="+", metavar="RUN",
                   help="run directory or ckpt-* directory; several: evaluate their ensemble "
                        "(averaged probabilities; each run once; their configs' [eval] "
                        "settings must agree where no flag sets them)")
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the config's)")
    p.add_argument("--steps", type=int_list, help="comma list of adaptation steps (default: "
                   "the config's; not for the closed-form heads protonet, r2d2 and "
                   "metaoptnet, which take none; with --lake-runs one number)")
    p.add_argument("--shots", type=int, help="support examples (default: the config's)")
    p.add_argument("--ways", type=int, help="classes per held-out task (default: the "
                   "config's; another number only for r2d2, metaoptnet, protonet, and "
                   "pretrain or any method.head_init = 'zero')")
    p.add_argument("--split", help="held-out split (default: the config's eval.split)")
    p.add_argument("--within-alphabet", action=Switch,
                   help="omniglot: draw each task's classes from one alphabet, as the original "
                        "one-shot challenge, and report the error rate; --no-within-alphabet: "
                        "random classes, also for a run whose config draws within one "
                        "(default: the config's eval.within_alphabet)")
    p.add_argument("--drawers", choices=("any", "shared"),
                   help="omniglot: who drew a held-out task's images: any (each drawing's "
                        "drawer at random) or shared (the support set by one drawer and the "
                        "queries by another, as the challenge's official runs are built; "
                        "default: the config's eval.drawers)")
    p.add_argument("--support-shift", type=int, metavar="S",
                   help="test-time augmentation of image tasks: grow each support set by "
                        "every shift of its images up to S pixels ((2S+1)^2 copies; default: "
                        "the config's eval.support_shift, 0 = off: also turns off the "
                        "config's shift)")
    p.add_argument("--query-shift", type=int, metavar="S",
                   help="test-time augmentation of image classification: score each query by "
                        "its class probabilities averaged over every shift of it up to S "
                        "pixels ((2S+1)^2 copies; default: the config's eval.query_shift, "
                        "0 = off: also turns off the config's shift)")
    p.add_argument("--scoring", choices=("as-trained", "transductive", "non-transductive"),
                   help="how queries are scored: as the run was trained (method.transductive), "
                        "transductive (a task's queries normalised together by BatchNorm) or "
                        "non-transductive (each with its support set's BatchNorm statistics, "
                        "as Lake's protocol scores one image at a time); reptile, r2d2, "
                        "metaoptnet and protonet (default: the config's eval.scoring)")
    p.add_argument("--refine", type=int, metavar="K",
                   help="protonet: refine each task's prototypes with its unlabelled queries "
                        "by K soft k-means steps before scoring them (transductive; default: "
                        "the config's eval.refine, 0 = off)")
    p.add_argument("--refine-temperature", type=float, metavar="T",
                   help="with --refine: multiply the logits that assign queries to classes "
                        "by T (default: the config's eval.refine_temperature, 0.5)")
    p.add_argument("--refine-weight", type=float, metavar="W",
                   help="with --refine: the query set weighs W times the support set "
                        "(default: the config's eval.refine_weight, 2)")
    p.add_argument("--refine-jointly", action=Switch,
                   help="with a refinement and several checkpoints: the members share one "
                        "assignment of the queries (their averaged class probabilities) "
                        "instead of each using its own; --no-refine-jointly: each its own, "
                        "also for members whose configs share it (default: the config's "
                        "eval.refine_jointly, off; --refine 0 turns it off with the "
                        "refinement)")
    p.add_argument("--lake-runs", type=path, metavar="DIR",
                   help="score the official runs of the Omniglot one-shot challenge instead "
                        "of generated tasks: Lake's all_runs folder unpacked (run01 ... "
                        "run20, each with training/, test/ and class_labels.txt), one run "
                        "folder, or all_runs.zip itself (unpacked once into the data cache); "
                        "the test-time settings above apply, and the flags that choose "
                        "generated tasks (--tasks, --shots, --ways, --split, "
                        "--within-alphabet either way, --drawers) are refused")
    p.add_argument("--data-root", type=path, metavar="PATH",
                   help="the run's own data, moved: read its image folder, tensor file or "
                        "table at PATH instead of its stored family.root (checked against "
                        "the run's stored fingerprint of its data; not for the built-in "
                        "families)")
    p.add_argument("--out", type=path, help="write results.json and a plot here (an earlier "
                   "eval's are replaced; a folder holding another command's run, e.g. the "
                   "metaloop train run itself, is refused)")
    p.add_argument("--record", type=path, metavar="PATH",
                   help="also write the result (last step; with --lake-runs, the official "
                        "runs' error rate) as a JSON record for the docs tables, e.g. "
                        "docs/results/NAME.json (see metaloop.evaluate.records); its "
                        "budget is that of the checkpoint loaded, whatever a run training into "
                        "the folder writes meanwhile")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="adapt and score on the CPU (default) or the first CUDA device")
    p.add_argument("--tf32", action="store_true",
                   help="with --device cuda: allow TF32 matmuls and convolutions (faster, "
                        "~1e-3 precision)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


GENERATED_ONLY = ("tasks", "shots", "ways", "split", "within_alphabet", "drawers")
"""The flags that choose generated held-out tasks; the official runs (--lake-runs) are fixed."""


EVAL_FLAGS = ("tasks", "shots", "ways", "split", "steps", "within_alphabet", "drawers",
              "support_shift", "query_shift", "scoring", "refine", "refine_temperature",
              "refine_weight", "refine_jointly")
"""The flags that set a key of the ``[eval]`` section of the same name."""


def run(args: argparse.Namespace) -> int:
    # a process still writing --out is named before anything is read
    with runlock.hold(args.out or None, create=False):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    _check_flags(args)
    loaded = load_ensemble(args.checkpoint, device=args.device, data_root=args.data_root)
    check_distinct(loaded)
    loaded_ckpts = _note_unfinished(loaded)        # which checkpoints: results.json says
    _check_flags_family(args, loaded)
    changes = {k: getattr(args, k) for k in EVAL_FLAGS}
    settings = dict(changes)
    if args.refine == 0 and args.refine_jointly is None:
        settings["refine_jointly"] = False        # nothing refined: no assignment to share
    try:
        cfg = eval_config(loaded, **settings)     # bad flags: named before any output
    except ValueError as e:
        raise ValueError(_named_by_flags(str(e), changes)) from e
    _check_flags_apply(args, loaded, cfg)
    if args.record:
        if args.out and Path(args.record).resolve() == (Path(args.out) / "results.json").resolve():
            raise ValueError(f"--record {args.record} is the results.json that --out "
                             f"{args.out} gets: name another .json file for the record")
        records.check_record_path(args.record)
    _check_out_outside_data(args, loaded)
    from metaloop.train.distributed import set_tf32, tf32_kept
    with (tf32_kept() if args.device == "cuda" else contextlib.nullcontext()), \
            output_dir(args.out or None, command="eval") as out:  # not another's run
        if out is not None:                 # nor files of the user's that eval would replace
            runs_folder.check(out, "eval", _EVAL_FILES)
        if args.device == "cuda":           # TF32 as the caller had it, afterwards
            set_tf32(args.tf32)
        if args.lake_runs:
            return _lake_runs(args, loaded, cfg, out, loaded_ckpts)
        return _evaluate(args, loaded, cfg, out, loaded_ckpts)


def _note_unfinished(loaded) -> list[dict]:
    """A note for each run folder whose latest checkpoint is short of its config's iterations
    (a run stopped early, or one still training: its newest complete checkpoint): it is
    scored as it is. A ``ckpt-*`` folder given on purpose is not noted, nor a run with
    nothing to meta-train (``scratch``: its one checkpoint is at iteration 0, and it is
    finished). Returns which checkpoint of each run was loaded (``loaded_checkpoint``, as
    results.json records it), whether it was in progress as said here."""
    loaded_ckpts = []
    for m in getattr(loaded, "members", None) or [loaded]:
        writer = in_progress(m)
        loaded_ckpts.append(loaded_checkpoint(m, writer))
        if writer is not None:          # still training: --resume would find it in use
            print(in_progress_note(m, writer, "scored as it is"), file=sys.stderr)
        elif unfinished(m):
            print(f"note: {m.path} stopped at iteration {m.iteration} of "
                  f"{m.config['train']['iterations']} (metaloop train --resume finishes it); "
                  f"scored as it is", file=sys.stderr)
    return loaded_ckpts


def _switch(key: str, value) -> str:
    """The flag that gave ``value`` to ``key``: ``--key``, or ``--no-key`` for a switch
    turned off (``False``)."""
    return f"--{'no-' if value is False else ''}{key.replace('_', '-')}"


def _flag(key: str, value) -> str:
    """``--key VALUE`` as it was given (a switch: ``--key`` or ``--no-key``)."""
    flag = _switch(key, value)
    if isinstance(value, bool):
        return flag
    if isinstance(value, (list, tuple)):
        return f"{flag} {','.join(str(v) for v in value)}"
    return f"{flag} {value}"


def _named_by_flags(message: str, changes: dict) -> str:
    """``message`` (the config's check, naming ``eval.<key>``) led by the flags that set
    those keys, so that a bad value is named by its flag; unchanged if no flag set one."""
    given = [_flag(k, v) for k, v in changes.items()
             if v is not None and re.search(rf"\beval\.{k}\b", message)]
    return f"{', '.join(given)}: {message}" if given else message


def _check_flags(args: argparse.Namespace) -> None:
    """ValueError naming the flag where a value is impossible, or a flag would change
    nothing whatever the runs are (before any run is loaded)."""
    given = [_switch(k, getattr(args, k)) for k in GENERATED_ONLY if getattr(args, k) is not None]
    if args.lake_runs and args.data_root:
        raise ValueError(f"--data-root {args.data_root} reads the run's own data for "
                         f"generated held-out tasks, but --lake-runs scores the official runs "
                         f"instead, so it would change nothing; leave it out")
    if args.lake_runs and given:
        raise ValueError(f"--lake-runs scores the official runs as they are (their own "
                         f"classes, drawings and trials), so {', '.join(given)} would change "
                         f"nothing: they choose generated held-out tasks; leave them out")
    for flag in ("ways", "shots"):          # 0 in a config means the family's; here: an error
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ValueError(f"--{flag} must be positive, got {value}")
    if args.ways == 1:
        raise ValueError("--ways must be >= 2: a 1-way task is always answered right, got 1")
    if args.steps == []:                    # "--steps ,": named here, not as eval.steps
        raise ValueError("--steps needs at least one number of adaptation steps, got none")
    if args.steps is not None and any(s < 0 for s in args.steps):
        raise ValueError(f"--steps must be non-negative ints, got {','.join(map(str, args.steps))}")
    _checks.check_shifts(args.support_shift, args.query_shift)
    if args.lake_runs and args.steps is not None and len(set(args.steps)) > 1:
        raise ValueError(f"--steps {','.join(map(str, args.steps))}: --lake-runs scores the "
                         f"official runs after one number of steps (the largest, "
                         f"{max(args.steps)}), so the others would change nothing; give one, "
                         f"e.g. --steps {max(args.steps)} (or none for a run of r2d2, "
                         f"metaoptnet or protonet, whose head is solved, not stepped)")
    _checks.refuse_tf32_off_cuda(args.tf32, args.device)
    _checks.refuse_joint_with_one(args.refine_jointly, args.checkpoint)
    if args.refine_jointly is False and len(args.checkpoint) < 2:
        raise ValueError("--no-refine-jointly keeps the members of an ensemble from sharing "
                         "the refinement's assignment, but one --checkpoint is given, which "
                         "refines with its own whatever its eval.refine_jointly, so it would "
                         "change nothing: drop --no-refine-jointly")


def _check_flags_family(args: argparse.Namespace, loaded) -> None:
    """ValueError naming the flag where it cannot apply to the run's task family: Omniglot's
    own flags elsewhere, image shifts on inputs that are not images, ways without classes,
    the official runs for a run that reads no images."""
    family = loaded.config["family"]["name"]
    first = getattr(loaded, "members", [loaded])[0]
    images = first.transform is not None
    omniglot_only = [_flag(k, getattr(args, k)) for k in ("within_alphabet", "drawers")
                     if getattr(args, k) is not None]
    if family != "omniglot" and omniglot_only:
        raise ValueError(f"{', '.join(omniglot_only)}: {loaded.path} is family {family!r}, "
                         f"but these choose Omniglot's alphabets and drawers, so they would "
                         f"change nothing; leave them out")
    if not images:
        _check_shifts_off(args, loaded)
    if args.split is not None and family in REGRESSION_FAMILIES:
        raise ValueError(f"--split {args.split}: {loaded.path} is family {family!r}, which "
                         f"draws its own functions and has no splits, so it would change "
                         f"nothing; drop --split")
    if args.ways is not None and family in REGRESSION_FAMILIES:
        raise ValueError(f"--ways {args.ways} sets the classes per held-out task of a "
                         f"classification family; {family} is regression (it has no "
                         f"classes): drop --ways")
    if args.lake_runs and not images:
        raise ValueError(f"--lake-runs scores Omniglot drawings, but {loaded.path} reads no "
                         f"images (family {family!r}, model "
                         f"{loaded.config['model']['name']!r})")


def _check_shifts_off(args: argparse.Namespace, loaded) -> None:
    """For a run that reads no images: ``--support-shift 0`` / ``--query-shift 0`` turn off
    a shift its config (an ensemble member's) sets (a run trained before ``metaloop
    train`` refused that); any other value, or a 0 that changes nothing, is refused by
    name, and so is a config's shift that no flag turns off."""
    what = (f"{loaded.path} reads no images (family {loaded.config['family']['name']!r}, "
            f"model {loaded.config['model']['name']!r})")
    keys = ("support_shift", "query_shift")
    runs = getattr(loaded, "members", None) or [loaded]
    stored = {k: next(((m.config["eval"][k], m.path) for m in runs if m.config["eval"][k]),
                      (0, loaded.path)) for k in keys}          # the first member's shift
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    bad = [_flag(k, v) + ("" if v else f" (its eval.{k} is 0 already)")
           for k, v in given.items() if v or not stored[k][0]]
    if bad:
        raise ValueError(f"{', '.join(bad)}: shifts images, but {what}; leave them out")
    left = [k for k in keys if stored[k][0] and k not in given]
    if left:
        paths = {str(stored[k][1]) for k in left}
        said = f"{' and '.join(f'eval.{k} = {stored[k][0]}' for k in left)} (the config of " \
            f"{paths.pop()})" if len(paths) == 1 else " and ".join(
                f"eval.{k} = {stored[k][0]} (the config of {stored[k][1]})" for k in left)
        raise ValueError(f"{said} shifts images, but {what}: give "
                         f"{' '.join(_flag(k, 0) for k in left)} to evaluate it without")


def _check_flags_apply(args: argparse.Namespace, loaded, cfg: dict) -> None:
    """ValueError naming the flag and the learner where a flag would change nothing for the
    loaded run or ensemble (the solved heads: every member), or cannot apply to one of its
    members (the first run's config checks only its own learner)."""
    ec = cfg["eval"]
    if args.steps is not None:
        _checks.refuse_steps(",".join(map(str, args.steps)), loaded)
    _checks.check_scoring(args.scoring, loaded)
    refine = _flag("refine", ec["refine"]) if args.refine is not None else \
        f"eval.refine = {ec['refine']} (the config of {loaded.path})"
    _, methods, what = _checks.members(loaded)
    if args.refine == 0 and "protonet" not in methods:
        raise ValueError(f"--refine 0: {what} has no prototypes to refine (only protonet "
                         f"has), so --refine would change nothing; drop --refine")
    if ec["refine"]:
        _checks.check_refinable(refine, loaded, scored_as_trained=ec["scoring"] == "as-trained",
                                each_on_its_own_fix="give --scoring transductive or drop "
                                                    "--refine")
    for key in ("refine_temperature", "refine_weight", "refine_jointly"):
        value = getattr(args, key)
        if value is not None and args.refine is None and not ec["refine"]:
            flag = _flag(key, value)
            raise ValueError(f"{flag} sets how --refine refines the prototypes, but no "
                             f"--refine K is given and the run's eval.refine is 0 (off), so it "
                             f"would change nothing: give --refine K or drop "
                             f"{flag.split()[0]}")


def _evaluate(args: argparse.Namespace, loaded, cfg: dict, out, loaded_ckpts: list[dict]
              ) -> int:
    """Generated held-out tasks: the table, and ``results.json`` and a plot in ``out``
    (``loaded_ckpts``: which checkpoint of each run was scored, ``_note_unfinished``)."""
    ec = cfg["eval"]
    bar = None

    def tick(n: int) -> None:
        """The bar is drawn at the first call (0: the held-out data is read and checked),
        so a data error is all that is printed."""
        nonlocal bar
        if bar is None:
            bar = tqdm(total=ec["tasks"], desc="held-out tasks", disable=args.no_progress,
                       leave=False, **tqdm_defaults())
        bar.update(n)

    try:
        res = evaluate_run(loaded, config=cfg, device=args.device, progress=tick)
    finally:
        if bar is not None:
            bar.close()
    metric, r, error, name = res["metric"], res["result"], res["error_rate"], \
        run_label(loaded)
    print(f"{cfg['family']['name']} ({ec['split']}): held-out query {metric}, mean ± 95% CI "
          f"over {ec['tasks']} task{'s' if ec['tasks'] != 1 else ''}")
    print(report.table({name: r}, metric, trials=records.queries_per_task(cfg)))
    if ec["tasks"] == 1:
        print("note: one task has no confidence interval (± n/a); give --tasks 2 "
              "or more", file=sys.stderr)
    moved = data_root(loaded)
    if moved is not None:
        print(f"data read at {moved['read']} (--data-root), in place of the stored "
              f"family.root {moved['replaced']}; its classes match the run's stored "
              f"fingerprint", file=sys.stderr)
    if len(args.checkpoint) > 1:
        what = "class probabilities" if loaded.learner.combine == "probabilities" \
            else "predictions"
        print(f"ensemble of {len(args.checkpoint)} runs: {what} averaged")
    if res["evaluation"] != "transductive":
        print(f"queries scored {res['evaluation']}")
    if res["dropped"]:
        print(f"note: family.drop_small left out {len(res['dropped'])} held-out class(es) with "
              f"fewer than {ec['shots'] or cfg['family']['shots']} + "
              f"{ec['queries'] or cfg['family']['queries']} examples: "
              f"{', '.join(res['dropped'])}", file=sys.stderr)
    if ec["support_shift"]:
        k = (2 * ec["support_shift"] + 1) ** 2
        print(f"support sets grown {k}x by every shift of their images up to "
              f"{ec['support_shift']} px (test-time augmentation)")
    if ec["query_shift"]:
        k = (2 * ec["query_shift"] + 1) ** 2
        print(f"queries scored by their class probabilities averaged over {k} shifts up to "
              f"{ec['query_shift']} px (test-time augmentation)")
    if error is not None:
        errors = [100 * (1 - a) for a in res["result"]["per_task"]["accuracy"][-1]]
        ci = _interval(error["ci95"], errors, error["trials"], f"{ec['tasks']} tasks") \
            if ec["tasks"] > 1 else "(one task: no 95% CI; "
        print(f"within-alphabet {error['ways']}-way {error['shots']}-shot error rate: "
              f"{100 * error['mean']:.2f}% {ci}{error['trials']} trials)")
    rec = None
    if args.record:            # checked before results.json: a record it refuses leaves none
        rec = records.eval_record(
            cfg, r, metric, checkpoint=args.checkpoint, command=records.command_line(args),
            device=args.device, methods=[m["method"] for m in members(loaded)],
            evaluation=None if res["evaluation"] == "transductive" else res["evaluation"],
            error_rate=error, checkpoint_dirs=_loaded_dirs(loaded),
            checkpoint_states=_loaded_states(loaded))
        if moved is not None:
            rec["data_root"] = moved
        records.validate_record(rec, where=args.record)
    if out is not None:
        extra = {"error_rate": error} if error is not None else {}
        extra["loaded"] = loaded_ckpts                # which checkpoint of each run scored
        if moved is not None:
            extra["data_root"] = moved
        if len(args.checkpoint) > 1:
            extra["ensemble"] = {"members": members(loaded), "combine": loaded.learner.combine}
        # keyed by the method (an ensemble of one method too, as before); several: the label
        key = name if len({m["method"] for m in members(loaded)}) > 1 else cfg["method"]["name"]
        # an earlier eval's files go first (one of the other metric, or a run stopped
        # midway, leaves no old plot beside new results), then results.json and the record,
        # and the plot last: a run killed while drawing keeps the numbers it computed
        # (an earlier eval's: files of no metaloop run were refused before the evaluation)
        removed = [old for old in _EVAL_FILES if os.path.lexists(out / old)]
        for old in removed:
            (out / old).unlink(missing_ok=True)
        plot = out / f"{metric}_vs_steps.png"
        results = out / "results.json"
        gone = [old for old in removed if old != "results.json"]   # once results.json is new
        try:
            report.write_json(results, {"config": cfg, "metric": metric, **extra,
                                        "methods": {key: report.strip_per_task(r)}})
        except ValueError as e:             # (a WriteError) a full disk...: what is there now
            raise _said(e, [], [f"the plot {plot}"] + ([f"the record {args.record}"]
                                                       if rec is not None else []),
                        removed, out) from e
    if rec is not None:
        try:
            _write_record(args.record, rec)
        except ValueError as e:
            if out is None:
                raise
            raise _said(e, [f"{results} (new)"], [f"the plot {plot}"], gone, out) from e
    if out is not None:
        try:
            report.plot_curves({name: r}, metric, plot, name)
        except ValueError as e:
            raise _said(e, [f"{results} (new)"] + ([f"the record {args.record}"]
                                                   if rec is not None else []),
                        [f"the plot {plot}"], gone, out) from e
    return 0


def _said(e: Exception, done: list, missing: list, gone: list, out) -> ValueError:
    """``e`` (a write into ``out`` that failed) as a ValueError that also says what the eval
    left: the files of this evaluation it wrote (``done``) and those it did not
    (``missing``), and the earlier files it had removed from ``out`` (``gone``, their
    names) and not replaced, so that no one takes the folder for unchanged."""
    said = [str(e)]
    if done:
        said.append(f"written by this eval: {' and '.join(done)}")
    if missing:
        said.append(f"not written: {' and '.join(missing)}")
    if gone:
        said.append(f"removed from {out} before writing: the earlier {', '.join(gone)}")
    return ValueError("; ".join(said))


def _check_out_outside_data(args: argparse.Namespace, loaded) -> None:
    """Before anything is written: an ``--out`` inside the image folder that a ``folder``
    run's held-out data is read from (its ``family.root``, or ``--data-root``) is refused
    (``metaloop.runs_folder.check_outside_data``)."""
    if not args.out:
        return
    runs = getattr(loaded, "members", None) or [loaded]
    for m in [loaded, *runs]:
        family = m.config["family"]
        if family["name"] == "folder" and family["root"]:
            runs_folder.check_outside_data(
                args.out, family["root"],
                "--data-root" if args.data_root is not None else "family.root")


def data_root(loaded) -> dict | None:
    """``{"read": the path the data was read at, "replaced": the stored family.root (an
    ensemble whose members store it differently: each one's)}`` for a run loaded with
    ``--data-root``, as results.json and the record give it; None otherwise."""
    runs = getattr(loaded, "members", None) or [loaded]
    stored = list(dict.fromkeys(m.stored_root for m in runs if m.stored_root is not None))
    if not stored:
        return None
    return {"read": loaded.config["family"]["root"],
            "replaced": stored[0] if len(stored) == 1 else stored}


def _loaded_dirs(loaded) -> list:
    """The ``ckpt-*`` folder each member (or the one run) was loaded from, in the order of
    ``--checkpoint`` (``load_ensemble``'s ``checkpoint_dir``): the record's budget is that
    checkpoint's, not that of one a run training into the folder wrote during the
    evaluation."""
    return [m.checkpoint_dir for m in getattr(loaded, "members", None) or [loaded]]


def _loaded_states(loaded) -> list:
    """Each ``_loaded_dirs`` folder's ``state.json`` as read when it was loaded
    (``Run.state``): the record's budget, also where a run training into the folder has
    pruned that checkpoint during the evaluation."""
    return [getattr(m, "state", None) for m in getattr(loaded, "members", None) or [loaded]]


def _write_record(path, fields: dict) -> None:
    """Write the record and say where (and that it replaced one, as rerunning a record's
    command does: git diff shows what moved)."""
    existed = Path(path).exists()
    records.write_record(path, **fields)
    print(f"{'replaced' if existed else 'wrote'} record {path}")


def _lake_runs(args: argparse.Namespace, loaded, cfg: dict, out, loaded_ckpts: list[dict]
               ) -> int:
    """``--lake-runs``: the error rate on the challenge's official runs (``loaded_ckpts``
    as ``_evaluate``'s)."""
    res = evaluate_lake_runs(loaded, args.lake_runs, cfg)
    for r in res["runs"]:
        print(f"{r['name']}: {r['errors']} of {r['trials']} wrong "
              f"({100 * r['error_rate']:.1f}% error)")
    if len(args.checkpoint) > 1:
        print(f"ensemble of {len(args.checkpoint)} runs: class probabilities averaged")
    if res["evaluation"] != "transductive":
        print(f"queries scored {res['evaluation']}")
    ec = cfg["eval"]
    for key, what in (("support_shift", "support images also"), ("query_shift", "queries")):
        if ec[key]:
            print(f"{what} at every shift up to {ec[key]} px (test-time augmentation)")
    ci = _interval(res["ci95"], [100 * r["error_rate"] for r in res["runs"]], res["trials"],
                   f"{len(res['runs'])} runs") if len(res["runs"]) > 1 \
        else "(one run: no 95% CI; "
    print(f"official one-shot runs ({args.lake_runs}): error rate {100 * res['error_rate']:.2f}% "
          f"{ci}{res['trials']} trials)")
    print("the runs are Lake's official 20, unaltered (sha256 of their files matches)"
          if res["official"] else f"the runs are not Lake's official 20 (sha256 of their "
          f"files {res['runs_sha256'][:12]}...)")
    rec = None
    if args.record:            # checked before results.json: a record it refuses leaves none
        rec = records.lake_runs_record(
            cfg, res, checkpoint=args.checkpoint, command=records.command_line(args),
            device=args.device, methods=[m["method"] for m in members(loaded)],
            evaluation=None if res["evaluation"] == "transductive" else res["evaluation"],
            checkpoint_dirs=_loaded_dirs(loaded), checkpoint_states=_loaded_states(loaded))
        records.validate_record(rec, where=args.record)
    if out is not None:
        extra: dict[str, Any] = {"ensemble": {"members": members(loaded),
                                              "combine": loaded.learner.combine}} \
            if len(args.checkpoint) > 1 else {}
        extra["loaded"] = loaded_ckpts                # which checkpoint of each run scored
        try:
            report.write_json(out / "results.json", {"config": cfg, **extra, "lake_runs": res})
        except ValueError as e:             # (a WriteError) results.json there is as it was
            if rec is None:
                raise
            raise _said(e, [], [f"the record {args.record}"], [], out) from e
    if rec is not None:
        try:
            _write_record(args.record, rec)
        except ValueError as e:
            if out is None:
                raise
            raise _said(e, [f"{out / 'results.json'} (new)"], [], [], out) from e
    return 0


def _interval(ci95: float, errors: list, trials: int, over: str) -> str:
    """The printed 95% CI of an error rate (``ci95`` a fraction; ``errors`` the per-task or
    per-run error rates in %): ``± h%`` where the t interval stays inside [0, 100]%, else the
    bounded interval the record carries (``records.ci95_fields``), ending in ``"over, "``."""
    ends = records.ci95_fields(errors, trials=trials)
    if not ends:
        return f"± {100 * ci95:.2f}% (95% CI over {over}, "
    return (f"(95% CI {ends['ci95_low']:.2f} to {ends['ci95_high']:.2f}%, bounded, over "
            f"{over}, ")
